"""Importers: one module per format a model can be brought in, each returning a ``SourceModel``.

The format is read off the path (a folder is a SavedModel); the module is imported only then.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from edge_sdk.converters.models import SourceModel
from edge_sdk.errors import ModelError

# suffix -> importer module; a folder is a SavedModel
REGISTRY: dict[str, str] = {
    ".keras": "keras",
    ".h5": "keras",
    ".hdf5": "keras",
    ".onnx": "onnx",
    ".tflite": "tflite",
}


def load(path: Path, *, imgsz: tuple[int, int] | None, for_tflite: bool) -> SourceModel:
    name = path.stem if path.is_file() else path.name
    if path.is_dir():
        module = "savedmodel"
    elif path.suffix in REGISTRY:
        module = REGISTRY[path.suffix]
    else:
        raise ModelError(f"model {path}: expected a .keras, .h5, .onnx or .tflite file or a SavedModel folder")
    importer = importlib.import_module(f"edge_sdk.converters.importers.{module}")
    return importer.load(path, name=name, imgsz=imgsz, for_tflite=for_tflite)
