"""Import TensorFlow the one way that lets Keras 3 models and tfmot (tf-keras) work side by side."""

from __future__ import annotations

import os
import sys
from types import ModuleType

from edge_sdk.errors import ConversionError


def tensorflow() -> ModuleType:
    """``import tensorflow`` with tf-keras selected for ``tf.keras`` (tfmot only works on tf-keras)."""
    if "tensorflow" not in sys.modules:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # also hides the CUDA probe error on CPU-only hosts
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise ConversionError('TensorFlow is not installed: pip install "edge-sdk[convert]"') from exc
    tf.get_logger().setLevel("ERROR")
    return tf


def tf_keras() -> ModuleType:
    tensorflow()
    try:
        import tf_keras
    except ImportError as exc:
        raise ConversionError('tf-keras is not installed: pip install "edge-sdk[convert]"') from exc
    return tf_keras


def keras3() -> ModuleType:
    tensorflow()
    import keras

    return keras


def tfmot() -> ModuleType:
    tensorflow()
    if os.environ.get("TF_USE_LEGACY_KERAS") not in ("1", "true", "True"):
        raise ConversionError(
            "pruning tf-keras models needs TF_USE_LEGACY_KERAS=1 set before TensorFlow is imported"
        )
    try:
        import tensorflow_model_optimization as tfmot
    except ImportError as exc:
        raise ConversionError(
            'tensorflow-model-optimization is not installed: pip install "edge-sdk[convert]"'
        ) from exc
    return tfmot
