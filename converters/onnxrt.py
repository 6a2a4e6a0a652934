"""The ONNX Runtime target: the ONNX model in fp32, fp16, or int8 QDQ from ``onnxruntime.quantization``.

Sources are ONNX models (PyTorch and Ultralytics exports), read as they are after the importer
fixed their size. int8 is static QDQ quantization calibrated on the same fitted images, through
the same ``edge_sdk.preprocess`` code, as every other target. A detector's decode (every node after
the last convolution) stays float, as the TFLite and OpenVINO targets keep it, so box coordinates
and scores do not share int8 scales. Accuracy is measured on ONNX Runtime's CPU provider, whatever
providers the profile lists for the device.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edge_sdk.backends.onnxrt import CPU, ONNXRuntimeEngine
from edge_sdk.converters.data import ImageSet
from edge_sdk.converters.targets import Attempt, Job, Packaged, score, tensor_specs
from edge_sdk.errors import ConversionError
from edge_sdk.preprocess import normalize
from edge_sdk.profiles import Precision
from edge_sdk.report import Quantization

_WEIGHTED = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})


@dataclass(frozen=True)
class ORTSettings:
    """Knobs of one int8 attempt."""

    per_channel: bool = True
    float_decode: bool = False  # a detector's decode (the nodes after the last weighted node) stays float
    first_last: bool = False  # the first and last weighted nodes stay float
    excluded: tuple[str, ...] = ()  # the nodes those switches named in this graph


def _quantization():
    try:
        from onnxruntime import quantization
    except ImportError as exc:
        raise ConversionError('ONNX Runtime is not installed: pip install "edge-sdk[convert]"') from exc
    return quantization


def _onnx():
    import onnx

    return onnx


def named(model) -> object:
    """The model with every node named (exclusion lists name nodes; exporters may leave names empty)."""
    seen = set()
    for index, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{index}"
        seen.add(node.name)
    return model


def _is_expectation(node, initializers: dict) -> bool:
    """A 1x1 convolution whose weights are 0, 1, ..., n-1: YOLOv8's distribution-focal-loss decode, not a layer."""
    if len(node.input) < 2 or node.input[1] not in initializers:
        return False
    weights = initializers[node.input[1]].reshape(-1)
    return weights.size > 1 and bool(np.array_equal(weights, np.arange(weights.size)))


def decode_tail(model) -> tuple[list[str], list[str]]:
    """A detector's decode: the nodes no weighted node consumes (directly or further down), and the last weighted nodes."""
    from onnx import numpy_helper

    initializers = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}
    feeds_weights: set[str] = set()  # tensor names
    tail, last = [], []
    for node in reversed(list(model.graph.node)):  # ONNX graphs are topologically sorted
        weighted = node.op_type in _WEIGHTED and not _is_expectation(node, initializers)
        reaches = any(out in feeds_weights for out in node.output)
        if weighted and not reaches:
            last.append(node.name)
        if weighted or reaches:
            feeds_weights.update(i for i in node.input if i in producer)
        else:
            tail.append(node.name)
    return list(reversed(tail)), list(reversed(last))


def first_and_last(model) -> list[str]:
    weighted = [n.name for n in model.graph.node if n.op_type in _WEIGHTED]
    return list(dict.fromkeys(weighted[:1] + weighted[-1:]))


class _Reader:
    """onnxruntime.quantization's CalibrationDataReader over our fitted, normalised images."""

    def __init__(self, images: ImageSet, job: Job, input_name: str) -> None:
        self._items = iter(range(len(images)))
        self._images, self._job, self._name = images, job, input_name

    def get_next(self) -> dict | None:
        index = next(self._items, None)
        if index is None:
            return None
        if self._job.progress is not None:
            self._job.progress("calibrate", index + 1, len(self._images))
        return {self._name: normalize(self._images.images[index], self._job.spec)}

    def rewind(self) -> None:
        self._items = iter(range(len(self._images)))


def quantize_int8(job: Job, calib: ImageSet, settings: ORTSettings) -> tuple[bytes, ORTSettings]:
    """Static QDQ int8 of the source (per-channel int8 weights, uint8 activations, min/max ranges)."""
    q = _quantization()
    onnx = _onnx()
    model = named(onnx.load(str(job.source.path)))
    tail, _ = decode_tail(model)
    excluded = (tail if settings.float_decode else []) + (first_and_last(model) if settings.first_last else [])
    excluded = list(dict.fromkeys(excluded))
    reader = _Reader(calib, job, model.graph.input[0].name)
    with tempfile.TemporaryDirectory(prefix="edge-sdk-ort-") as tmp:
        src, out = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, str(src))
        # The quantizer logs advice ("consider pre-processing") on the root logger; our report is the output.
        root = logging.getLogger()
        level, root.level = root.level, logging.ERROR
        try:
            q.quantize_static(
                str(src), str(out), reader, quant_format=q.QuantFormat.QDQ, per_channel=settings.per_channel,
                activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                calibrate_method=q.CalibrationMethod.MinMax, nodes_to_exclude=excluded,
                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
            )
        except Exception as exc:  # ORT's quantizer raises plain ValueError/RuntimeError/KeyError
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ConversionError(f"ONNX Runtime quantization failed: {first[:300]}") from exc
        finally:
            root.level = level
        return out.read_bytes(), replace(settings, excluded=tuple(excluded))


def to_fp16(job: Job) -> bytes:
    """Weights and activations in float16, float32 input and output (so preprocessing stays the same)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx = _onnx()
    try:
        model = convert_float_to_float16(onnx.load(str(job.source.path)), keep_io_types=True)
    except Exception as exc:
        raise ConversionError(f"float16 conversion failed: {str(exc).strip()[:300]}") from exc
    return model.SerializeToString()


class ONNXTarget:
    """ONNX Runtime on any CPU, or a GPU through the CUDA and TensorRT execution providers."""

    def preflight(self, job: Job) -> None:
        _quantization()
        if job.source.kind != "onnx":
            raise ConversionError(
                f"the onnx target takes .onnx models; {job.source.name} is a {job.source.kind} model (export it to "
                "ONNX, e.g. with tf2onnx or torch.onnx.export, or convert it for a tflite or openvino profile)"
            )
        if job.precision is Precision.DYNAMIC:
            raise ConversionError("the onnx target converts to fp32, fp16 or int8, not dynamic")

    def float_model(self, job: Job) -> bytes:
        return Path(job.source.path).read_bytes()

    def engine(self, job: Job, model: bytes) -> ONNXRuntimeEngine:
        return ONNXRuntimeEngine(model, providers=[CPU], threads=job.device.threads)

    def _run(self, job: Job, name: str, calib: ImageSet, settings: ORTSettings, note: str) -> Attempt:
        try:
            model, settings = quantize_int8(job, calib, settings)
        except ConversionError as exc:
            if name == "baseline":
                raise
            return Attempt(name, None, settings, f"failed: {exc}", len(calib))
        return score(job, Attempt(name, model, settings, note, len(calib)), self.engine(job, model))

    def attempts(self, job: Job) -> Iterator[Attempt]:
        if job.precision is not Precision.INT8:
            model = self.float_model(job) if job.precision is Precision.FP32 else to_fp16(job)
            yield score(job, Attempt("baseline", model, ORTSettings(), ""), self.engine(job, model))
            return
        detector = job.source.boxes_head
        base = ORTSettings(per_channel=job.per_channel, float_decode=detector)
        note = "detector decode kept in float (nodes after the last convolution)" if detector else ""
        calib = job.calib_set
        first = self._run(job, "baseline", calib, base, note)
        yield first
        if not base.per_channel:
            yield self._run(job, "per-channel", calib, replace(base, per_channel=True), "per-channel weight scales")
            base = replace(base, per_channel=True)
        attempt, calib = job.try_larger_calibration(
            first, first.settings, lambda larger, note: self._run(job, "larger-calibration", larger, base, note))
        yield attempt
        attempt = self._run(job, "float-fallback", calib, replace(base, first_last=True),
                            "first and last weighted nodes kept float")
        yield attempt

    def package(self, job: Job, attempt: Attempt) -> Packaged:
        engine = self.engine(job, attempt.model)
        settings: ORTSettings = attempt.settings
        int8 = job.precision is Precision.INT8
        return Packaged(
            files={"model.onnx": attempt.model},
            roles={"model.onnx": "model"},
            model_file="model.onnx",
            inputs=tensor_specs(engine.input_specs()),
            outputs=tensor_specs(engine.output_specs()),
            quantization=Quantization(
                per_channel=settings.per_channel, calibration_images=attempt.calibration_images,
                float_ops=list(settings.excluded), float_layers=list(settings.excluded),
                decode="float" if settings.float_decode else None,
            ) if int8 else None,
        )
