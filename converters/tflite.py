"""The TFLite target: float, fp16, dynamic-range and full-integer int8 models through TFLiteConverter."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from edge_sdk.backends.litert import LiteRTEngine
from edge_sdk.converters import _tf
from edge_sdk.converters.data import ImageSet
from edge_sdk.converters.models import SourceModel
from edge_sdk.errors import ConversionError
from edge_sdk.preprocess import Preprocessing, normalize
from edge_sdk.profiles import DeviceProfile, IODtype, Precision

_BOUNDARY_OPS = frozenset({"QUANTIZE", "DEQUANTIZE"})
ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class QuantSettings:
    """Knobs of one int8 conversion attempt."""

    per_channel: bool = True
    float_tensors: tuple[str, ...] = ()  # tensors the selective-quantization remedy keeps in float
    strict: bool = False  # every op must be integer
    io_dtype: IODtype = IODtype.FLOAT32


@dataclass
class TFLiteModel:
    content: bytes
    float_ops: list[str] = field(default_factory=list)


def representative(calib: ImageSet, spec: Preprocessing, progress: ProgressFn | None = None) -> Callable[[], Iterator]:
    """The representative-dataset factory TFLiteConverter wants: one float image per step."""

    def generate() -> Iterator[list[np.ndarray]]:
        for i in range(len(calib)):
            if progress is not None:
                progress("calibrate", i + 1, len(calib))
            yield [normalize(calib.images[i], spec)]

    return generate


def _run_converter(converter, what: str) -> bytes:
    try:
        return converter.convert()
    except Exception as exc:  # TF raises ConverterError, ValueError, RuntimeError...
        text = str(exc)
        ops = sorted(set(re.findall(r"op(?:eration)?[: ]+'?([A-Za-z_][\w.]*)'?", text)))
        hint = f" (ops: {', '.join(ops[:8])})" if ops else ""
        first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(exc).__name__)
        raise ConversionError(f"TFLite {what} conversion failed{hint}: {first[:300]}") from exc


def _tf_dtype(tf, dtype: IODtype):
    return {IODtype.FLOAT32: tf.float32, IODtype.INT8: tf.int8, IODtype.UINT8: tf.uint8}[dtype]


def float_ops(content: bytes, *, integer_io: bool) -> list[str]:
    """Ops that compute in float: ``NAME#index`` for each op touching a float32 tensor.

    With float I/O, the QUANTIZE at the input and DEQUANTIZE at the output are expected and skipped.
    """
    engine = LiteRTEngine(content)
    found = []
    for op in engine.ops():
        name = op["op_name"]
        if name == "DELEGATE":
            continue
        types = list(op.get("operand_types", [])) + list(op.get("result_types", []))
        touches_float = any(np.dtype(t) in (np.float32, np.float16) for t in types)
        if touches_float and (integer_io or name not in _BOUNDARY_OPS):
            found.append(f"{name}#{op['index']}")
    return found


def convert(
    source: SourceModel,
    *,
    precision: Precision,
    spec: Preprocessing,
    calib: ImageSet | None = None,
    quant: QuantSettings = QuantSettings(),
    progress: ProgressFn | None = None,
) -> TFLiteModel:
    """One conversion of ``source`` to a .tflite flatbuffer at ``precision``."""
    tf = _tf.tensorflow()
    converter = source.tflite_converter()
    if precision is Precision.FP32:
        return TFLiteModel(_run_converter(converter, "float32"))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if precision is Precision.FP16:
        converter.target_spec.supported_types = [tf.float16]
        return TFLiteModel(_run_converter(converter, "float16"))
    if precision is Precision.DYNAMIC:
        return TFLiteModel(_run_converter(converter, "dynamic-range"))
    if calib is None:
        raise ConversionError("int8 conversion needs calibration images (--calib)")
    converter.representative_dataset = representative(calib, spec, progress)
    if quant.strict:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if quant.io_dtype is not IODtype.FLOAT32:
        converter.inference_input_type = _tf_dtype(tf, quant.io_dtype)
        converter.inference_output_type = _tf_dtype(tf, quant.io_dtype)
    if not quant.per_channel:
        # Private but long-standing switch; per-tensor is what older accelerators want.
        converter._experimental_disable_per_channel = True
    if quant.float_tensors:
        content = _selective(converter, calib, spec, quant.float_tensors)
    else:
        content = _run_converter(converter, "int8")
    ops = float_ops(content, integer_io=quant.io_dtype is not IODtype.FLOAT32)
    if quant.strict and ops:
        raise ConversionError(
            f"the profile needs every op in integer, but {len(ops)} stay float: {', '.join(ops[:10])}"
        )
    return TFLiteModel(content, ops)


def _selective(converter, calib: ImageSet, spec: Preprocessing, float_tensors: tuple[str, ...]) -> bytes:
    tf = _tf.tensorflow()
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=list(float_tensors))
    try:
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=representative(calib, spec), debug_options=options
        )
        return debugger.get_nondebug_quantized_model()
    except Exception as exc:
        raise ConversionError(f"selective int8 conversion failed: {str(exc).splitlines()[0][:300]}") from exc


def sensitive_tensors(
    source: SourceModel, calib: ImageSet, spec: Preprocessing, *, quant: QuantSettings, limit: int = 5
) -> list[tuple[str, float]]:
    """Rank quantized tensors by how much of their signal int8 loses, worst first.

    The measure is the per-channel noise-to-signal ratio ``mean_c(MSE_c / Var_c)`` of the dequantized
    tensor against the float one, from TFLite's quantization debugger. Normalising per channel is
    what exposes an activation whose range one outlier channel has blown up: its other channels
    all round to zero, which a plain RMSE/scale measure does not see.
    """
    tf = _tf.tensorflow()
    converter = source.tflite_converter()
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative(calib, spec)
    if not quant.per_channel:
        converter._experimental_disable_per_channel = True

    def noise_to_signal(float_values, quant_values, scale, zero_point) -> float:
        real = np.asarray(float_values, dtype=np.float64)
        approx = (np.asarray(quant_values, dtype=np.float64) - zero_point) * scale
        channels = real.shape[-1] if real.ndim else 1
        real = real.reshape(-1, channels)
        error = approx.reshape(-1, channels) - real
        variance = real.var(axis=0)
        live = variance > 1e-12
        if not np.any(live):
            return 0.0
        return float(np.mean((error**2).mean(axis=0)[live] / variance[live]))

    options = tf.lite.experimental.QuantizationDebugOptions(
        layer_direct_compare_metrics={"nsr": noise_to_signal}
    )
    sample = ImageSet(calib.images[: min(len(calib), 64)])
    try:
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=representative(sample, spec), debug_options=options
        )
        debugger.run()
    except Exception as exc:
        raise ConversionError(f"quantization debugger failed: {str(exc).splitlines()[0][:300]}") from exc
    ranked = sorted(
        ((name, float(stats["nsr"])) for name, stats in debugger.layer_statistics.items() if "nsr" in stats),
        key=lambda item: item[1],
        reverse=True,
    )
    return ranked[:limit]
