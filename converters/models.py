"""The float model a conversion starts from, behind one small interface, whatever format it came in.

Each format has its importer in ``converters/importers/`` (Keras, SavedModel, ONNX, TFLite); they
all return a :class:`SourceModel`. Its outputs are kept in the source's own order: that order is
the bundle's, whatever order a compiled model happens to list them in.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_sdk.converters import _tf
from edge_sdk.converters.heads import Head, describe
from edge_sdk.errors import ConfigError, ModelError

Shape = tuple[int | None, ...]


class Format(str, enum.Enum):
    """The formats a model can be brought in."""

    KERAS3 = "keras3"
    TF_KERAS = "tf-keras"
    SAVEDMODEL = "savedmodel"
    ONNX = "onnx"
    TFLITE = "tflite"


@dataclass
class SourceModel:
    """A model the converter can evaluate, and (but for ``.tflite``) quantize and compile."""

    name: str
    kind: str  # a Format value
    model: Any  # a Keras model, a loaded SavedModel, or an engine (LiteRT for .tflite, OpenVINO for .onnx)
    input_shape: tuple[int, int, int]  # (height, width, channels), whatever the layout
    output_shapes: tuple[Shape, ...]
    output_names: tuple[str, ...]
    path: Path | None = None
    layout: str = "NHWC"  # the layout the *converted* model takes (NCHW only for ONNX into OpenVINO)
    parameter_count: int = 0  # for engine-backed sources, counted from their constants
    head: Head | None = None  # the recognised head; None for a custom model (plugin decoder)
    num_classes: int = 0
    feed_nchw: bool = False  # predict() gets NHWC batches but the model takes NCHW (ONNX into TFLite)
    quantized: bool = False  # a .tflite that is already integer
    metadata: dict[str, str] = field(default_factory=dict)  # the file's own key/values (Ultralytics: task, kpt_shape)
    tensorflow_source: Callable[[], Any] | None = field(default=None, repr=False)  # ONNX: its SavedModel, made on demand
    _signature: Any = field(default=None, repr=False)
    _batch_of_one: Any = field(default=None, repr=False)
    _keep: Any = field(default=None, repr=False)  # temporary files the model lives in

    @property
    def is_keras(self) -> bool:
        return self.kind in (Format.KERAS3.value, Format.TF_KERAS.value)

    @property
    def task(self) -> str:
        return self.head.task.value if self.head is not None else "custom"

    @property
    def boxes_head(self) -> bool:
        """A YOLO or SSD head that decodes boxes (a detector, instance-segmentation or pose model): at int8
        its decode stays in float, or box precision is lost. A landmark regressor is pose without one."""
        return self.task in ("detection", "instance-segmentation", "pose") and self.head.decoder != "landmarks"

    @property
    def head_layout(self) -> str | None:
        return self.head.options.get("layout") if self.head is not None and self.head.decoder == "yolo" else None

    def parameters(self) -> int:
        if self.is_keras:
            return int(self.model.count_params())
        if self.kind == Format.SAVEDMODEL.value:
            return int(sum(np.prod(v.shape) for v in self.model.variables))
        return self.parameter_count

    def predict(self, batch: np.ndarray) -> list[np.ndarray]:
        """Every output, in the source's order, for a float batch in the converted model's layout."""
        if self.is_keras:
            out = self.model(batch, training=False)
            return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]
        if self.kind in (Format.TFLITE.value, Format.ONNX.value):
            if self.feed_nchw:
                batch = np.ascontiguousarray(np.transpose(batch, (0, 3, 1, 2)))
            per_image = [self.model.run([batch[i : i + 1]]) for i in range(len(batch))]
            return [np.concatenate([outs[k] for outs in per_image]) for k in range(len(self.output_names))]
        function, input_name = self._signature
        outputs = function(**{input_name: _tf.tensorflow().constant(batch)})
        return [np.asarray(outputs[name]) for name in self.output_names]

    def tflite_converter(self) -> Any:
        """A TFLiteConverter whose input has a batch of one.

        A fixed batch makes every shape static: the Edge TPU compiler requires it, and without
        it Keras exports add SHAPE/STRIDED_SLICE/PACK ops that split XNNPACK's delegated graph.
        """
        tf = _tf.tensorflow()
        if self.kind == Format.TFLITE.value:
            raise ConfigError(
                f"model {self.name} is a .tflite, which cannot be re-quantized or recompiled here; bring its "
                "Keras, SavedModel or ONNX source for another precision"
            )
        if self.tensorflow_source is not None:
            return tf.lite.TFLiteConverter.from_saved_model(str(self.tensorflow_source()))
        if not self.is_keras:
            return tf.lite.TFLiteConverter.from_saved_model(str(self.path))
        if self._batch_of_one is None:
            # Built once: Keras numbers new layers, and every conversion of this model must give
            # its tensors the same names (the float-fallback remedy matches them across models).
            keras = _tf.tf_keras() if self.kind == Format.TF_KERAS.value else _tf.keras3()
            image = keras.Input(batch_shape=(1, *self.input_shape), name="image")
            self._batch_of_one = keras.Model(image, self.model(image))
        return tf.lite.TFLiteConverter.from_keras_model(self._batch_of_one)


def image_size(name: str, shape: Shape, imgsz: tuple[int, int] | None) -> tuple[tuple[int, int, int], str]:
    """``(height, width, channels)`` and the layout of an image input, with ``imgsz`` filling dynamic sizes."""
    if len(shape) != 4:
        raise ModelError(f"model {name} takes input of shape {list(shape)}, not an image batch (N, H, W, C) or (N, C, H, W)")
    layout = layout_of(shape)
    _, channels, height, width = shape if layout == "NCHW" else (shape[0], shape[3], shape[1], shape[2])
    if height is None or width is None:
        if imgsz is None:
            raise ModelError(f"model {name} has a dynamic input size {describe(shape)}; give its size with --imgsz (e.g. --imgsz 640)")
        height, width = imgsz
    elif imgsz is not None and (height, width) != tuple(imgsz):
        raise ModelError(f"model {name} has a fixed input size {height}x{width}; --imgsz {imgsz[0]}x{imgsz[1]} does not match it")
    if channels not in (1, 3):
        raise ModelError(f"model {name} input has {channels} channels; image models take 1 or 3")
    return (int(height), int(width), int(channels)), layout


def layout_of(shape: Shape) -> str:
    """NCHW when the channel axis can only be axis 1 (ONNX models usually are), else NHWC."""
    if len(shape) == 4 and shape[1] in (1, 3) and shape[3] not in (1, 3):
        return "NCHW"
    return "NHWC"


def static(shape: Any) -> Shape:
    return tuple(None if d is None or int(d) < 0 else int(d) for d in shape)


def load_model(path: str | Path, *, imgsz: tuple[int, int] | None = None, for_tflite: bool = False) -> SourceModel:
    """Load a .keras / .h5 file, a SavedModel folder, an .onnx or a .tflite file.

    ``for_tflite``: the model will be compiled by TFLite (an ONNX model then goes through
    TensorFlow and takes NHWC input on the device).
    """
    from edge_sdk.converters import importers

    path = Path(path)
    if not path.exists():
        raise ModelError(f"model {path} does not exist")
    return _with_head(importers.load(path, imgsz=imgsz, for_tflite=for_tflite))


def _with_head(source: SourceModel) -> SourceModel:
    """The head its output shapes form, as a first guess (``convert`` settles it on real images)."""
    from edge_sdk.converters.heads import recognise

    height, width = source.input_shape[:2]
    source.head = recognise(source.output_shapes, input_size=(width, height))
    source.num_classes = (source.head.num_classes or 0) if source.head is not None else 0
    return source


def from_keras_object(model: Any, *, name: str = "model", imgsz: tuple[int, int] | None = None) -> SourceModel:
    """Wrap an in-memory Keras 3 or tf-keras model."""
    from edge_sdk.converters.importers import keras

    return _with_head(keras.wrap(model, name=name, path=None, imgsz=imgsz))


def float_tflite(source: SourceModel, spec: Any) -> bytes | None:
    """The float32 TFLite flatbuffer of ``source``; None for ONNX bound for OpenVINO, which reads it as it is."""
    if source.kind == Format.ONNX.value and source.tensorflow_source is None:
        return None
    if source.kind == Format.TFLITE.value:
        return source.path.read_bytes()
    from edge_sdk.converters import tflite
    from edge_sdk.profiles import Precision

    return tflite.convert(source, precision=Precision.FP32, spec=spec).content
