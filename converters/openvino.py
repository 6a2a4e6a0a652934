"""The OpenVINO target: IR with FP16 weights, or int8 through NNCF post-training quantization.

Keras and SavedModel inputs reach OpenVINO through their float TFLite form, which OpenVINO reads
directly; ``.tflite`` and ``.onnx`` inputs are read as they are. Calibration uses the same fitted
images and the same ``edge_sdk.preprocess`` code as every other target.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edge_sdk.backends.openvino import OpenVINOEngine
from edge_sdk.converters.data import ImageSet
from edge_sdk.converters.targets import Attempt, Job, Packaged, score, tensor_specs
from edge_sdk.errors import ConversionError
from edge_sdk.preprocess import normalize
from edge_sdk.profiles import Precision
from edge_sdk.report import OpenVINOReport, Quantization

_QUANTIZABLE = frozenset({"Convolution", "GroupConvolution", "MatMul", "ConvolutionBackpropData"})


@dataclass(frozen=True)
class IR:
    """An OpenVINO model serialised as IR: the .xml topology and .bin weights."""

    xml: bytes
    weights: bytes


@dataclass(frozen=True)
class OVSettings:
    ignored_scope: tuple[str, ...] = ()
    accuracy_control: bool = False
    float_decode: bool = False  # a detector's decode (the ops after the last weighted op) stays float
    float_head: bool = False  # and the last weighted ops before it (a YOLO head's 1x1 convolutions)
    first_last: bool = False  # the first and last weighted ops stay float
    minmax_ranges: bool = False  # activation ranges from the calibration set's extremes, not NNCF's averages
    found_scope: tuple[str, ...] = ()  # the ops those switches named in the graph that was quantized
    float_ops: tuple[str, ...] = ()  # weighted ops the int8 IR computes in float, as measured


def _ov():
    try:
        import nncf
        import openvino as ov
    except ImportError as exc:
        raise ConversionError('OpenVINO and NNCF are not installed: pip install "edge-sdk[convert]"') from exc
    nncf.set_log_level(logging.ERROR)
    return ov, nncf


def _read(job: Job):
    """The float model as an ov.Model with a static batch of one (NPUs need static shapes)."""
    ov, _ = _ov()
    try:
        if job.float_tflite is not None:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "float.tflite"
                path.write_bytes(job.float_tflite)
                model = ov.convert_model(str(path))
        else:
            model = ov.convert_model(str(job.source.path))
        shape = list(model.inputs[0].get_partial_shape())
        shape[0] = 1
        model.reshape({model.inputs[0]: ov.PartialShape(shape)})
    except Exception as exc:  # OpenVINO raises plain RuntimeErrors/OpConversionFailure
        from edge_sdk.backends.openvino import error_reason  # the reason is OpenVINO's last line, not its first

        raise ConversionError(f"OpenVINO cannot read the model: {error_reason(exc)}") from exc
    return model


def serialize(model: Any, *, fp16: bool) -> IR:
    ov, _ = _ov()
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "model.xml"
        ov.save_model(model, str(xml), compress_to_fp16=fp16)
        return IR(xml.read_bytes(), xml.with_suffix(".bin").read_bytes())


def _inputs(images: ImageSet, job: Job) -> list:
    return [normalize(images.images[i], job.spec) for i in range(len(images))]


def _validation_fn(job: Job):
    import numpy as np

    def accuracy(compiled, items) -> float:
        hits = [int(np.argmax(compiled(x)[0])) == int(y) for x, y in items]
        return float(np.mean(hits))

    return accuracy


def first_and_last_layers(model: Any) -> list[str]:
    """Names of the first and last weighted ops: the layers most often too sensitive for int8."""
    weighted = [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() in _QUANTIZABLE]
    return list(dict.fromkeys(weighted[:1] + weighted[-1:]))


_NOT_OPS = frozenset({"Parameter", "Constant", "Result"})
_PASS_THROUGH = frozenset({"Convert", "Transpose", "Reshape", "Squeeze", "Unsqueeze"})


def _constant_weights(op: Any):
    """The constant weights of a convolution/matmul (through layout ops), or None."""
    node = op.input_value(1).get_node()
    while node.get_type_name() in _PASS_THROUGH:
        node = node.input_value(0).get_node()
    return node.get_data() if node.get_type_name() == "Constant" else None


def _is_expectation(op: Any) -> bool:
    """A weighted op that is really decode: weights 0, 1, ..., n-1 into one output, the expected value
    over n bins (YOLOv8's distribution focal loss layer, which Ultralytics keeps out of int8 too)."""
    try:
        weights = _constant_weights(op)
    except (RuntimeError, IndexError):
        return False
    if weights is None or weights.size < 2:
        return False
    import numpy as np

    flat = np.asarray(weights, dtype=np.float64).reshape(-1)
    return weights.size == max(weights.shape) and bool(np.array_equal(flat, np.arange(flat.size)))


def decode_tail(model: Any) -> tuple[list[str], list[str]]:
    """A detector's decode: the ops after the last weighted op, and those last weighted ops.

    An op is in the tail (sigmoid, concat, grid affine, reshape) when no weighted op consumes its
    result, directly or further down; quantized, it would put box coordinates, grid offsets and
    scores on shared int8 scales. The last weighted ops are those whose results reach only the tail
    (a YOLO head's 1x1 convolutions).
    """
    feeds_weights: set[str] = set()
    tail, last = [], []
    for op in reversed(model.get_ordered_ops()):  # consumers before producers
        name, kind = op.get_friendly_name(), op.get_type_name()
        if kind in _NOT_OPS:
            continue
        weighted = kind in _QUANTIZABLE and not _is_expectation(op)
        if weighted and name not in feeds_weights:
            last.append(name)
        if weighted or name in feeds_weights:
            feeds_weights.update(v.get_node().get_friendly_name() for v in op.input_values())
        else:
            tail.append(name)
    return list(reversed(tail)), list(reversed(last))


_WEIGHT_PATH = frozenset({"Multiply", "Subtract", "Convert", "Reshape", "Transpose", "Squeeze", "Unsqueeze"})


def _int8_weights(op: Any) -> bool:
    """True when the op's weights reach it from an 8-bit constant or through a FakeQuantize.

    NNCF stores quantized weights as an int8 Constant followed by Convert/Subtract/Multiply; an
    op it left in float (ignored scope, accuracy control) keeps a plain float Constant.
    """
    node = op.input_value(1).get_node()
    for _ in range(8):
        kind = node.get_type_name()
        if kind in ("FakeQuantize", "FakeConvert"):
            return True
        if kind == "Constant":
            return node.get_output_element_type(0).get_type_name() in ("i8", "u8", "i4", "u4")
        if kind not in _WEIGHT_PATH:
            return False
        node = node.input_value(0).get_node()
    return False


def float_ops_of(model: Any) -> list[str]:
    """Weighted ops of an int8 IR that NNCF left in float."""
    return [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() in _QUANTIZABLE and not _int8_weights(op)]


class OpenVINOTarget:
    """Intel CPU, GPU and NPU through OpenVINO IR."""

    def preflight(self, job: Job) -> None:
        _ov()
        if not job.per_channel:
            raise ConversionError("--per-tensor applies to TFLite targets; NNCF chooses OpenVINO's weight granularity")

    def float_model(self, job: Job) -> bytes:
        ir = serialize(_read(job), fp16=False)
        return ir.xml + ir.weights

    def engine(self, job: Job, ir: IR) -> OpenVINOEngine:
        # Accuracy is measured on this machine's CPU; the device in the manifest is for the runtime.
        # f32 on every host: the float reference is f32, so the comparison must not be bf16 on some CPUs.
        return OpenVINOEngine((ir.xml, ir.weights), device="CPU", threads=job.device.threads, precision_hint="f32")

    def _quantize(self, job: Job, calib: ImageSet, settings: OVSettings) -> tuple[IR, list[str], list[str]]:
        _, nncf = _ov()
        model = _read(job)
        # Friendly names differ between reads of a TFLite file, so the scope is found in this very model.
        tail, last = decode_tail(model)
        found = (tail if settings.float_decode else []) + (last if settings.float_head else [])
        found += first_and_last_layers(model) if settings.first_last else []
        try:
            if settings.accuracy_control:
                if job.val_set is None:
                    raise ConversionError("accuracy-controlled quantization needs --val")
                val_items = list(zip(_inputs(job.val_set, job), job.val_set.labels))
                quantized = nncf.quantize_with_accuracy_control(
                    model,
                    calibration_dataset=nncf.Dataset(_inputs(calib, job)),
                    validation_dataset=nncf.Dataset(val_items, lambda item: item[0]),
                    validation_fn=_validation_fn(job),
                    max_drop=job.max_drop / 100.0,
                    drop_type=nncf.DropType.ABSOLUTE,
                    subset_size=len(calib),
                )
            else:
                names = list(dict.fromkeys([*settings.ignored_scope, *found]))
                # validate=False: NNCF folds some tail ops (layout transposes) out of its own graph.
                scope = nncf.IgnoredScope(names=names, validate=not settings.float_decode) if names else None
                kwargs = {"ignored_scope": scope} if scope else {}
                if settings.minmax_ranges:
                    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
                    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

                    kwargs["advanced_parameters"] = AdvancedQuantizationParameters(
                        activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX
                    )
                quantized = nncf.quantize(model, nncf.Dataset(_inputs(calib, job)), subset_size=len(calib), **kwargs)
        except ConversionError:
            raise
        except Exception as exc:
            raise ConversionError(f"NNCF quantization failed: {str(exc).strip().splitlines()[0][:300]}") from exc
        return serialize(quantized, fp16=False), float_ops_of(quantized), list(dict.fromkeys(found))

    def _run(self, job: Job, name: str, calib: ImageSet, settings: OVSettings, note: str = "") -> Attempt:
        try:
            ir, float_ops, found = self._quantize(job, calib, settings)
        except ConversionError as exc:
            if name == "baseline":
                raise
            return Attempt(name, None, settings, f"failed: {exc}", len(calib))
        settings = replace(settings, float_ops=tuple(float_ops), found_scope=tuple(found))
        if settings.accuracy_control:
            settings = replace(settings, ignored_scope=tuple(float_ops))
        attempt = Attempt(name, ir, settings, note, len(calib))
        return score(job, attempt, self.engine(job, ir))

    def attempts(self, job: Job) -> Iterator[Attempt]:
        if job.precision is not Precision.INT8:
            model = _read(job)
            if job.precision is Precision.DYNAMIC:
                # OpenVINO's analogue of TFLite dynamic-range quantization: int8 weights, float activations.
                _, nncf = _ov()
                model = nncf.compress_weights(model)
            ir = serialize(model, fp16=job.precision is Precision.FP16)
            yield score(job, Attempt("baseline", ir, OVSettings(), ""), self.engine(job, ir))
            return
        calib = job.calib_set
        # A detector's decode stays float from the start (as Ultralytics' NNCF export keeps its Detect
        # head's), and its activation ranges cover the calibration set's extremes: NNCF's default
        # (the mean over images of each image's extremes) clips the rare large activations that
        # place box edges, costing mAP@0.5:0.95 (measured on the shipped detector: -2.7 points vs 0).
        detector = job.source.boxes_head
        base = OVSettings(float_decode=detector, minmax_ranges=detector)
        note = "detector decode kept in float (ops after the last convolution), min/max activation ranges" if detector else ""
        first = self._run(job, "baseline", calib, base, note)
        yield first
        attempt, calib = job.try_larger_calibration(
            first, first.settings, lambda larger, note: self._run(job, "larger-calibration", larger, base, note))
        yield attempt
        attempt = self._run(job, "ignored-scope", calib, replace(base, first_last=True),
                            "NNCF ignored scope, first and last weighted layers kept float")
        if attempt.settings and attempt.settings.found_scope:
            attempt.note += f": {', '.join(attempt.settings.found_scope)}"
        yield attempt
        if job.val_set is not None and job.val_set.labels is None:
            # NNCF's accuracy control needs a per-item validation function; ours is top-1 only.
            yield Attempt("accuracy-control", None, first.settings, "skipped: scores only classifiers", len(calib))
        elif job.val_set is not None:
            yield self._run(job, "accuracy-control", calib, OVSettings(accuracy_control=True),
                            "nncf.quantize_with_accuracy_control reverted the most damaging ops to float")
        if job.train_set is not None:
            yield self._quantization_aware(job, calib, base)

    def _quantization_aware(self, job: Job, calib: ImageSet, settings: OVSettings) -> Attempt:
        """The Keras model fine-tuned under int8 rounding (converters/qat.py), then NNCF as the baseline."""
        from edge_sdk.converters import models, qat

        name = "quantization-aware"
        reason = qat.unsupported_reason(job.source)
        if reason is not None:
            return Attempt(name, None, settings, f"skipped: {reason}", len(calib))
        try:
            tuned = qat.quantization_aware(job.source, job.train_set, job.spec, progress=job.progress)
            tuned_job = replace(job, source=tuned, float_tflite=models.float_tflite(tuned, job.spec))
        except ConversionError as exc:
            return Attempt(name, None, settings, f"failed: {exc}", len(calib))
        return self._run(tuned_job, name, calib, settings,
                         f"fine-tuned {qat.QATSettings().epochs} epochs under int8 rounding on "
                         f"{len(job.train_set)} --train images, then nncf.quantize")

    def package(self, job: Job, attempt: Attempt) -> Packaged:
        ir: IR = attempt.model
        engine = self.engine(job, ir)
        int8 = job.precision is Precision.INT8
        settings: OVSettings = attempt.settings
        if int8:
            method = "nncf.quantize_with_accuracy_control" if settings.accuracy_control else "nncf.quantize"
        elif job.precision is Precision.DYNAMIC:
            method = "nncf.compress_weights"
        else:
            method = "ov.convert_model"
        weights = {Precision.INT8: "int8", Precision.DYNAMIC: "int8", Precision.FP16: "fp16"}.get(job.precision, "fp32")
        return Packaged(
            files={"model.xml": ir.xml, "model.bin": ir.weights},
            roles={"model.xml": "model", "model.bin": "model"},
            model_file="model.xml",
            inputs=tensor_specs(engine.input_specs()),
            outputs=tensor_specs(engine.output_specs()),
            quantization=Quantization(
                per_channel=True, calibration_images=attempt.calibration_images, float_ops=list(settings.float_ops),
                float_layers=list(dict.fromkeys([*settings.ignored_scope, *settings.found_scope])),
                decode="float" if settings.float_decode else None,
            ) if int8 else None,
            openvino=OpenVINOReport(
                device=job.device.device or "CPU", weights=weights, method=method,
                ignored_scope=list(dict.fromkeys([*settings.ignored_scope, *settings.found_scope])),
                activation_ranges="minmax" if int8 and settings.minmax_ranges else None,
            ),
        )
