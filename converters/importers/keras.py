"""Keras models: ``.keras`` (Keras 3) and ``.h5`` files (Keras 3 or tf-keras), or one in memory."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from edge_sdk.converters import _tf
from edge_sdk.converters.models import Format, SourceModel, image_size, static
from edge_sdk.errors import ModelError


def _file_version(path: Path) -> str:
    if path.suffix == ".keras":
        try:
            with zipfile.ZipFile(path) as archive:
                return str(json.loads(archive.read("metadata.json"))["keras_version"])
        except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, OSError) as exc:
            raise ModelError(f"model {path} is not a valid .keras file ({exc.__class__.__name__})") from exc
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            version = handle.attrs.get("keras_version")
    except OSError as exc:
        raise ModelError(f"model {path} is not a valid HDF5 (.h5) Keras file") from exc
    if version is None:
        raise ModelError(f"model {path} is an HDF5 file without a Keras model in it")
    return version.decode() if isinstance(version, bytes) else str(version)


def wrap(model: Any, *, name: str, path: Path | None, imgsz: tuple[int, int] | None, kind: str | None = None) -> SourceModel:
    """A Keras model object as a source; its outputs in the model's own order."""
    if kind is None:
        kind = Format.TF_KERAS.value if type(model).__module__.startswith("tf_keras") else Format.KERAS3.value
    if len(model.inputs) != 1:
        raise ModelError(f"model {name} has {len(model.inputs)} inputs; image models take one")
    input_shape, layout = image_size(name, static(model.inputs[0].shape), imgsz)
    if layout != "NHWC":
        raise ModelError(f"model {name} takes channels-first input; Keras image models take (N, H, W, C)")
    outputs = list(model.outputs)
    return SourceModel(
        name=name, kind=kind, model=model, input_shape=input_shape,
        output_shapes=tuple(static(o.shape) for o in outputs),
        output_names=tuple(getattr(o, "name", f"output_{i}") for i, o in enumerate(outputs)), path=path,
    )


def load(path: Path, *, name: str, imgsz: tuple[int, int] | None, for_tflite: bool) -> SourceModel:
    version = _file_version(path)
    try:
        if version.startswith("2."):
            model = _tf.tf_keras().models.load_model(path, compile=False)
            kind = Format.TF_KERAS.value
        else:
            model = _tf.keras3().saving.load_model(path, compile=False)
            kind = Format.KERAS3.value
    except ModelError:
        raise
    except Exception as exc:  # Keras raises a zoo of types for broken files
        raise ModelError(f"model {path} cannot be loaded: {str(exc).splitlines()[0][:200]}") from exc
    return wrap(model, name=name, path=path, imgsz=imgsz, kind=kind)
