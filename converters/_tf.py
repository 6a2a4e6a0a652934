"""Import TensorFlow the one way that lets Keras 3 models and tfmot (tf-keras) work side by side."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from types import ModuleType

from edge_sdk.errors import ConversionError


@contextlib.contextmanager
def quiet_native() -> Iterator[None]:
    """Silence what TensorFlow's C++ code writes straight to file descriptors 1 and 2.

    The converter prints its flags, absl logs before it is initialised, and the CUDA probe
    reports on CPU-only hosts: none of it is for our users, and Python-level redirection cannot
    catch it. Failures still surface as Python exceptions carrying their message.
    """
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def tensorflow() -> ModuleType:
    """``import tensorflow`` with tf-keras selected for ``tf.keras`` (tfmot only works on tf-keras)."""
    if "tensorflow" not in sys.modules:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    try:
        with quiet_native():
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
