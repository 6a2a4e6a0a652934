"""Load an input model (Keras 3, tf-keras, or a TensorFlow SavedModel) behind one small interface."""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_sdk.errors import ModelError
from edge_sdk.converters import _tf


@dataclass
class SourceModel:
    """A float model the converter can evaluate, prune and hand to the TFLite converter."""

    name: str
    kind: str  # "keras3", "tf-keras", "savedmodel", "tflite" or "onnx"
    model: Any
    input_shape: tuple[int, ...]  # (height, width, channels), whatever the layout
    num_classes: int
    path: Path | None = None
    layout: str = "NHWC"
    parameter_count: int = 0  # for engine-backed sources (tflite, onnx), counted from their constants
    task: str = "classification"  # or "detection": a YOLO head, [1, N, 5+C] (v5) or [1, 4+C, N] (v8)
    head_layout: str | None = None  # "v5" or "v8" for detectors
    _signature: Any = field(default=None, repr=False)
    _batch_of_one: Any = field(default=None, repr=False)

    @property
    def is_keras(self) -> bool:
        return self.kind in ("keras3", "tf-keras")

    def parameters(self) -> int:
        if self.is_keras:
            return int(self.model.count_params())
        if self.kind == "savedmodel":
            return int(sum(np.prod(v.shape) for v in self.model.variables))
        return self.parameter_count

    def predict(self, batch: np.ndarray) -> np.ndarray:
        if self.is_keras:
            return np.asarray(self.model(batch, training=False))
        if self.kind in ("tflite", "onnx"):
            return np.concatenate([self.model.run([batch[i : i + 1]])[0] for i in range(len(batch))])
        function, input_name = self._signature
        outputs = function(**{input_name: _tf.tensorflow().constant(batch)})
        return np.asarray(next(iter(outputs.values())))

    def tflite_converter(self) -> Any:
        """A TFLiteConverter whose input has a batch of one, for Keras sources.

        A fixed batch makes every shape static: the Edge TPU compiler requires it, and without
        it Keras exports add SHAPE/STRIDED_SLICE/PACK ops that split XNNPACK's delegated graph.
        """
        tf = _tf.tensorflow()
        if not self.is_keras:
            return tf.lite.TFLiteConverter.from_saved_model(str(self.path))
        if self._batch_of_one is None:
            # Built once: Keras numbers new layers, and every conversion of this model must give
            # its tensors the same names (the float-fallback remedy matches them across models).
            keras = _tf.tf_keras() if self.kind == "tf-keras" else _tf.keras3()
            image = keras.Input(batch_shape=(1, *self.input_shape), name="image")
            self._batch_of_one = keras.Model(image, self.model(image))
        return tf.lite.TFLiteConverter.from_keras_model(self._batch_of_one)


def _keras_file_version(path: Path) -> str:
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


def _layout(shape: tuple) -> str:
    """NCHW when the channel axis can only be axis 1 (ONNX models usually are), else NHWC."""
    if len(shape) == 4 and shape[1] in (1, 3) and shape[3] not in (1, 3):
        return "NCHW"
    return "NHWC"


@dataclass(frozen=True)
class _Shape:
    input_shape: tuple[int, int, int]
    num_classes: int
    task: str = "classification"
    head_layout: str | None = None


def _head(name: str, out: tuple) -> _Shape | None:
    """A YOLO head's task, layout and class count; None when ``out`` is not one."""
    if len(out) != 3 or out[0] not in (1, None) or None in out[1:]:
        return None
    rows, cols = out[1], out[2]
    layout = "v5" if cols < rows else "v8"
    classes = cols - 5 if layout == "v5" else rows - 4
    if classes < 1:
        raise ModelError(f"model {name} outputs shape {out}: a YOLO head needs [1, N, 5+C] or [1, 4+C, N] with C >= 1")
    return _Shape((0, 0, 0), classes, "detection", layout)


def _check_image_model(name: str, input_shape: Any, output_shape: Any) -> _Shape:
    shape = tuple(None if d is None or d == -1 else int(d) for d in input_shape)
    if len(shape) != 4:
        raise ModelError(f"model {name} takes input of shape {shape}, not an image batch (N, H, W, C)")
    if _layout(shape) == "NCHW":
        _, channels, height, width = shape
    else:
        _, height, width, channels = shape
    if height is None or width is None:
        raise ModelError(f"model {name} has a dynamic input size {shape}; give it a fixed height and width")
    if channels not in (1, 3):
        raise ModelError(f"model {name} input has {channels} channels; image models take 1 or 3")
    image = (int(height), int(width), int(channels))
    out = tuple(None if d is None or d == -1 else int(d) for d in output_shape)
    head = _head(name, out)
    if head is not None:
        return _Shape(image, head.num_classes, head.task, head.head_layout)
    if len(out) != 2 or out[-1] is None or out[-1] < 2:
        raise ModelError(
            f"model {name} outputs shape {out}; conversion needs a classifier (N, classes) with 2+ classes "
            "or a YOLO detection head [1, N, 5+C] / [1, 4+C, N]"
        )
    return _Shape(image, int(out[-1]))


def _from_keras(name: str, kind: str, model: Any, path: Path | None) -> SourceModel:
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelError(f"model {name} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; expected 1 and 1")
    found = _check_image_model(name, model.inputs[0].shape, model.outputs[0].shape)
    return SourceModel(name=name, kind=kind, model=model, input_shape=found.input_shape, num_classes=found.num_classes,
                       path=path, task=found.task, head_layout=found.head_layout)


def from_keras_object(model: Any, *, name: str = "model") -> SourceModel:
    """Wrap an in-memory Keras 3 or tf-keras model."""
    module = type(model).__module__
    kind = "tf-keras" if module.startswith("tf_keras") else "keras3"
    return _from_keras(name, kind, model, None)


def load_model(path: str | Path) -> SourceModel:
    """Load a .keras / .h5 file (Keras 3 or tf-keras) or a SavedModel folder."""
    path = Path(path)
    name = path.stem if path.is_file() else path.name
    if not path.exists():
        raise ModelError(f"model {path} does not exist")
    if path.is_dir():
        return _load_saved_model(path, name)
    if path.suffix == ".tflite":
        return _load_tflite(path, name)
    if path.suffix == ".onnx":
        return _load_onnx(path, name)
    if path.suffix not in (".keras", ".h5", ".hdf5"):
        raise ModelError(f"model {path}: expected a .keras, .h5, .tflite or .onnx file or a SavedModel folder")
    version = _keras_file_version(path)
    try:
        if version.startswith("2."):
            model = _tf.tf_keras().models.load_model(path, compile=False)
            kind = "tf-keras"
        else:
            model = _tf.keras3().saving.load_model(path, compile=False)
            kind = "keras3"
    except ModelError:
        raise
    except Exception as exc:  # Keras raises a zoo of types for broken files
        raise ModelError(f"model {path} cannot be loaded: {str(exc).splitlines()[0][:200]}") from exc
    return _from_keras(name, kind, model, path)


def _load_saved_model(path: Path, name: str) -> SourceModel:
    if not (path / "saved_model.pb").is_file():
        raise ModelError(f"model {path} is a folder without saved_model.pb, not a SavedModel")
    if (path / "keras_metadata.pb").is_file():
        try:
            model = _tf.tf_keras().models.load_model(path, compile=False)
        except Exception as exc:
            raise ModelError(f"model {path} cannot be loaded: {str(exc).splitlines()[0][:200]}") from exc
        return _from_keras(name, "tf-keras", model, path)
    tf = _tf.tensorflow()
    try:
        loaded = tf.saved_model.load(str(path))
        signature = loaded.signatures["serving_default"]
    except KeyError as exc:
        raise ModelError(f"model {path} has no 'serving_default' signature") from exc
    except Exception as exc:
        raise ModelError(f"model {path} cannot be loaded: {str(exc).splitlines()[0][:200]}") from exc
    input_names = list(signature.structured_input_signature[1])
    inputs = list(signature.structured_input_signature[1].values())
    outputs = list(signature.structured_outputs.values())
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(f"model {path} signature has {len(inputs)} inputs and {len(outputs)} outputs; expected 1 and 1")
    found = _check_image_model(name, inputs[0].shape.as_list(), outputs[0].shape.as_list())
    return SourceModel(
        name=name, kind="savedmodel", model=loaded, input_shape=found.input_shape, num_classes=found.num_classes,
        path=path, task=found.task, head_layout=found.head_layout, _signature=(signature, input_names[0]),
    )


def _engine_model(name: str, kind: str, engine: Any, path: Path, parameters: int) -> SourceModel:
    inputs, outputs = engine.input_specs(), engine.output_specs()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(f"model {path} has {len(inputs)} inputs and {len(outputs)} outputs; expected 1 and 1")
    found = _check_image_model(name, inputs[0]["shape"], outputs[0]["shape"])
    if inputs[0]["dtype"] != np.float32:
        raise ModelError(f"model {path} is already quantized ({inputs[0]['dtype']} input); give the float model")
    return SourceModel(
        name=name, kind=kind, model=engine, input_shape=found.input_shape, num_classes=found.num_classes, path=path,
        layout=_layout(tuple(inputs[0]["shape"])), parameter_count=parameters, task=found.task,
        head_layout=found.head_layout,
    )


def _load_tflite(path: Path, name: str) -> SourceModel:
    from edge_sdk.backends.litert import LiteRTEngine
    from edge_sdk.errors import EngineError

    try:
        engine = LiteRTEngine(path)
        # Constants are the tensors no op produces and the caller does not feed.
        produced = {int(i) for op in engine.ops() for i in op["outputs"]}
        fed = {int(d["index"]) for d in engine._inputs}
        parameters = sum(
            int(np.prod(d["shape"])) for d in engine.tensor_details()
            if d["index"] not in produced and d["index"] not in fed and np.dtype(d["dtype"]).kind == "f"
        )
    except EngineError as exc:
        raise ModelError(f"model {path} is not a valid .tflite file: {exc}") from exc
    return _engine_model(name, "tflite", engine, path, parameters)


def _load_onnx(path: Path, name: str) -> SourceModel:
    from edge_sdk.backends.openvino import OpenVINOEngine, error_reason
    from edge_sdk.errors import EngineError

    try:
        import openvino as ov

        network = ov.Core().read_model(str(path))
        parameters = sum(
            int(np.prod(node.get_output_shape(0))) for node in network.get_ops()
            if node.get_type_name() == "Constant" and node.get_output_element_type(0).is_real()
        )
        engine = OpenVINOEngine(path, device="CPU", precision_hint="f32")  # the float reference: never bf16
    except EngineError as exc:
        raise ModelError(f"model {path} is not a readable ONNX model: {exc}") from exc
    except RuntimeError as exc:
        raise ModelError(f"model {path} is not a readable ONNX model: {error_reason(exc)}") from exc
    return _engine_model(name, "onnx", engine, path, parameters)


def float_tflite(source: SourceModel, spec: Any) -> bytes | None:
    """The float32 TFLite flatbuffer of ``source`` (None for ONNX, which has no TFLite form here)."""
    if source.kind == "onnx":
        return None
    if source.kind == "tflite":
        return source.path.read_bytes()
    from edge_sdk.converters import tflite
    from edge_sdk.profiles import Precision

    return tflite.convert(source, precision=Precision.FP32, spec=spec).content
