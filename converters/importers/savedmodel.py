"""TensorFlow SavedModel folders: tf-keras ones (with Keras metadata) and plain ``serving_default`` ones."""

from __future__ import annotations

from pathlib import Path

from edge_sdk.converters import _tf
from edge_sdk.converters.importers import keras
from edge_sdk.converters.models import Format, SourceModel, image_size, static
from edge_sdk.errors import ModelError


def load(path: Path, *, name: str, imgsz: tuple[int, int] | None, for_tflite: bool) -> SourceModel:
    if not (path / "saved_model.pb").is_file():
        raise ModelError(f"model {path} is a folder without saved_model.pb, not a SavedModel")
    if (path / "keras_metadata.pb").is_file():
        try:
            model = _tf.tf_keras().models.load_model(path, compile=False)
        except Exception as exc:
            raise ModelError(f"model {path} cannot be loaded: {str(exc).splitlines()[0][:200]}") from exc
        return keras.wrap(model, name=name, path=path, imgsz=imgsz, kind=Format.TF_KERAS.value)
    tf = _tf.tensorflow()
    try:
        loaded = tf.saved_model.load(str(path))
        signature = loaded.signatures["serving_default"]
    except KeyError as exc:
        raise ModelError(f"model {path} has no 'serving_default' signature") from exc
    except Exception as exc:
        raise ModelError(f"model {path} cannot be loaded: {str(exc).splitlines()[0][:200]}") from exc
    inputs = signature.structured_input_signature[1]
    if len(inputs) != 1:
        raise ModelError(f"model {path} signature has {len(inputs)} inputs; image models take one")
    (input_name, spec), = inputs.items()
    input_shape, layout = image_size(name, static(spec.shape.as_list()), imgsz)
    if layout != "NHWC":
        raise ModelError(f"model {path} takes channels-first input; a SavedModel for TFLite must take (N, H, W, C)")
    # A signature's outputs are a dict; TensorFlow lists its keys sorted, which is the order we keep.
    outputs = signature.structured_outputs
    return SourceModel(
        name=name, kind=Format.SAVEDMODEL.value, model=loaded, input_shape=input_shape,
        output_shapes=tuple(static(v.shape.as_list()) for v in outputs.values()),
        output_names=tuple(outputs), path=path, _signature=(signature, input_name),
    )
