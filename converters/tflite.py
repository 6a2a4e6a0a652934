"""The TFLite target: float, fp16, dynamic-range and full-integer int8 models through TFLiteConverter."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from edge_sdk.backends.litert import LiteRTEngine, load_interpreter_class
from edge_sdk.converters import _tf
from edge_sdk.converters.data import ImageSet
from edge_sdk.converters.models import SourceModel
from edge_sdk.errors import ConversionError, EngineError
from edge_sdk.preprocess import Preprocessing, dequantize, normalize, quantize
from edge_sdk.profiles import IODtype, Precision

_BOUNDARY_OPS = frozenset({"QUANTIZE", "DEQUANTIZE"})
ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class QuantSettings:
    """Knobs of one int8 conversion attempt."""

    per_channel: bool = True
    float_tensors: tuple[str, ...] = ()  # tensors the selective-quantization remedy keeps in float
    strict: bool = False  # every op must be integer
    io_dtype: IODtype = IODtype.FLOAT32
    decode: str | None = None  # a detector's decode: "float" or "cpu" (its tail tensors in float_tensors), "host"


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
    import contextlib
    import io

    try:
        # Keras 3 models are exported to a temporary SavedModel first, and Keras prints a page
        # ("Saved artifact at ...") on stdout for each; stdout belongs to our report.
        with contextlib.redirect_stdout(io.StringIO()), _tf.quiet_native():
            return converter.convert()
    except Exception as exc:  # TF raises ConverterError, ValueError, RuntimeError...
        text = str(exc)
        ops = sorted(set(re.findall(r"'tf\.(\w+)' op", text)) | set(re.findall(r"\bop: '?(\w+)", text)))
        hint = f" (ops: {', '.join(ops[:8])})" if ops else ""
        first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(exc).__name__)
        raise ConversionError(f"TFLite {what} conversion failed{hint}: {first[:300]}") from exc


def _tf_dtype(tf, dtype: IODtype):
    return {IODtype.FLOAT32: tf.float32, IODtype.INT8: tf.int8, IODtype.UINT8: tf.uint8}[dtype]


def float_ops(content: bytes, *, integer_io: bool) -> list[str]:
    """Ops that compute in float: ``NAME#index`` for each op touching a float32 tensor.

    With float I/O, the QUANTIZE at the input and DEQUANTIZE at the output are expected and skipped.
    """
    try:
        engine = LiteRTEngine(content)
    except EngineError as exc:
        raise ConversionError(f"the converted model does not load in LiteRT: {exc}") from exc
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
    if quant.strict and quant.decode != "cpu":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if quant.io_dtype is not IODtype.FLOAT32:
        converter.inference_input_type = _tf_dtype(tf, quant.io_dtype)
        converter.inference_output_type = _tf_dtype(tf, quant.io_dtype)
    if not quant.per_channel:
        # Private but long-standing switch; per-tensor is what older accelerators want.
        converter._experimental_disable_per_channel = True
    if quant.float_tensors:
        # A detector's float decode takes the profile's integer input; the classifier remedy keeps float I/O.
        content = _selective(converter, calib, spec, quant.float_tensors, integer_io=quant.decode is not None)
    else:
        content = _run_converter(converter, "int8")
    ops = float_ops(content, integer_io=quant.io_dtype is not IODtype.FLOAT32)
    body = [op for op in ops if op not in cpu_tail(content)] if quant.decode == "cpu" else ops
    if quant.strict and body:
        raise ConversionError(
            f"the profile needs every op in integer, but {len(body)} stay float: {', '.join(body[:10])}"
        )
    return TFLiteModel(content, ops)


def cpu_tail(content: bytes) -> list[str]:
    """``NAME#index`` of the ops from the first DEQUANTIZE on, in execution order: the part an Edge TPU
    leaves to the CPU (its compiler maps ops up to the first one it cannot run, the rest run on the
    CPU), which is where a full-integer detector keeps its decode in float. Empty when no op dequantizes."""
    engine = LiteRTEngine(content)
    ops = [op for op in engine.ops() if op["op_name"] != "DELEGATE"]
    first = next((i for i, op in enumerate(ops) if op["op_name"] == "DEQUANTIZE"), None)
    return [] if first is None else [f"{op['op_name']}#{op['index']}" for op in ops[first:]]


def _selective(converter, calib: ImageSet, spec: Preprocessing, float_tensors: tuple[str, ...], *,
               integer_io: bool = False) -> bytes:
    tf = _tf.tensorflow()
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=list(float_tensors))
    import contextlib
    import io

    try:  # the debugger exports the Keras model again, and Keras prints its signature on stdout
        with contextlib.redirect_stdout(io.StringIO()), _tf.quiet_native():
            debugger = tf.lite.experimental.QuantizationDebugger(
                converter=converter, debug_dataset=representative(calib, spec), debug_options=options
            )
            content = debugger.get_nondebug_quantized_model()
    except Exception as exc:
        raise ConversionError(f"selective int8 conversion failed: {str(exc).splitlines()[0][:300]}") from exc
    if not integer_io:
        return content
    return _integer_io(content, converter.inference_input_type, converter.inference_output_type)


def _integer_io(content: bytes, input_type, output_type) -> bytes:
    """The profile's integer input (and output, where the last op is quantized) on a selectively
    quantized model, which the debugger always returns with float I/O. A float output stays float
    (e.g. a detector's decode kept in float)."""
    from tensorflow.lite.python import util  # the converter's own post-processing step

    tf = _tf.tensorflow()
    if input_type == tf.float32 and output_type == tf.float32:
        return content
    for output in dict.fromkeys([output_type, tf.float32]):
        try:
            return bytes(util.modify_model_io_type(content, input_type, output))
        except (ValueError, RuntimeError):
            continue
    return content


def _activations(content: bytes) -> Any:
    import warnings

    interpreter_class = load_interpreter_class()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # keeping every tensor is the point here, not a debugging slip
        interpreter = interpreter_class(model_content=content, experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    return interpreter


def sensitive_tensors(
    float_content: bytes, quant_content: bytes, calib: ImageSet, spec: Preprocessing, *, samples: int = 32
) -> list[tuple[str, float]]:
    """Activations that int8 damages, ranked by the damage each op adds, worst first.

    Both models run on the same calibration images with every tensor kept; for each quantized
    activation we measure the per-channel noise-to-signal ratio ``mean_c(MSE_c / Var_c)`` of its
    dequantized values against the float model's same-named tensor. Per-channel normalisation is
    what exposes an activation whose range one outlier channel has blown up: its other channels
    round to zero, which TFLite's own RMSE/scale measure does not see. The score of a tensor is
    its ratio minus the worst ratio among its op's inputs, so error that merely flows downstream
    is not blamed on every later layer.
    """
    float_it, quant_it = _activations(float_content), _activations(quant_content)
    float_by_name = {d["name"]: d for d in float_it.get_tensor_details()}
    pairs = []
    for detail in quant_it.get_tensor_details():
        scale, zero_point = detail["quantization"]
        twin = float_by_name.get(detail["name"])
        if scale and twin is not None and np.dtype(twin["dtype"]) == np.float32 and list(twin["shape"]) == list(detail["shape"]):
            pairs.append((detail, twin, float(scale), int(zero_point)))
    q_in, f_in = quant_it.get_input_details()[0], float_it.get_input_details()[0]
    sums: dict[str, np.ndarray] = {}
    for i in range(min(samples, len(calib))):
        x = normalize(calib.images[i], spec)
        f_x = x
        if q_in["dtype"] != np.float32:
            q_scale, q_zero = q_in["quantization"]
            x = quantize(x, scale=q_scale, zero_point=q_zero, dtype=q_in["dtype"])
        quant_it.set_tensor(q_in["index"], x)
        float_it.set_tensor(f_in["index"], f_x)
        quant_it.invoke()
        float_it.invoke()
        for detail, twin, scale, zero_point in pairs:
            real = float_it.get_tensor(twin["index"]).astype(np.float64)
            approx = dequantize(quant_it.get_tensor(detail["index"]), scale=scale, zero_point=zero_point)
            channels = real.shape[-1] if real.ndim else 1
            real = real.reshape(-1, channels)
            error = approx.reshape(-1, channels) - real
            stack = np.stack([real.sum(0), (real**2).sum(0), (error**2).sum(0), np.full(channels, real.shape[0])])
            sums[detail["name"]] = sums.get(detail["name"], 0) + stack
    ratio: dict[str, float] = {}
    for name, (s1, s2, se, n) in sums.items():
        variance = s2 / n - (s1 / n) ** 2
        live = variance > 1e-9 * max(1.0, float(np.max(np.abs(s1 / n))))
        ratio[name] = float(np.mean((se / n)[live] / variance[live])) if np.any(live) else 0.0
    names = {d["index"]: d["name"] for d in quant_it.get_tensor_details()}
    scored: dict[str, float] = {}
    for op in quant_it._get_ops_details():
        for out in op["outputs"]:
            name = names.get(int(out))
            if name in ratio:
                upstream = [ratio.get(names.get(int(i)), 0.0) for i in op["inputs"] if int(i) >= 0]
                scored[name] = max(scored.get(name, -np.inf), ratio[name] - max(upstream, default=0.0))
    return sorted(scored.items(), key=lambda item: item[1], reverse=True)


def consumers(content: bytes, tensors: list[str]) -> list[str]:
    """Output tensor names of the ops that read any of ``tensors``.

    Keeping a damaged activation in float is not enough when its consumer is still quantized:
    the consumer would re-quantize it with the same ruined range. So the consumers stay float too.
    """
    interpreter = _activations(content)
    names = {d["index"]: d["name"] for d in interpreter.get_tensor_details()}
    wanted = set(tensors)
    found = []
    for op in interpreter._get_ops_details():
        if op["op_name"] in _BOUNDARY_OPS:
            continue
        if any(names.get(int(i)) in wanted for i in op["inputs"] if int(i) >= 0):
            found.extend(names[int(o)] for o in op["outputs"])
    return [name for name in found if name not in wanted]


# Ops with learned weights: a detector's decode is what follows the last of them.
_WEIGHTED_OPS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL"})


def _is_expectation(interpreter, op: dict) -> bool:
    """A weighted op that is really decode: weights 0, 1, ..., n-1 into one output, the expected
    value over n bins (YOLOv8's distribution focal loss layer)."""
    try:
        weights = np.asarray(interpreter.get_tensor(int(op["inputs"][1])), dtype=np.float64)
    except (ValueError, IndexError):
        return False
    return 1 < weights.size == max(weights.shape) and bool(np.array_equal(weights.reshape(-1), np.arange(weights.size)))


def decode_tail(content: bytes) -> list[str]:
    """Output tensors of the ops after the last weighted op: a detector's decode, read off the graph.

    An op belongs to the tail when no weighted op (convolution, dense) consumes its result,
    directly or further down: for a YOLO head that is the sigmoid/multiply/concat/affine/reshape
    turning the last convolutions into boxes and scores. In int8 those ops squeeze box
    coordinates, grid offsets and scores into one shared scale; kept in float they cost little.
    """
    interpreter = _activations(content)
    names = {d["index"]: d["name"] for d in interpreter.get_tensor_details()}
    ops = [op for op in interpreter._get_ops_details() if op["op_name"] not in _BOUNDARY_OPS | {"DELEGATE"}]
    feeds_weights: set[int] = set()  # tensors a weighted op reads, directly or through later ops
    tail = []
    for op in reversed(ops):  # execution order reversed: consumers before producers
        outputs = [int(o) for o in op["outputs"]]
        weighted = op["op_name"] in _WEIGHTED_OPS and not _is_expectation(interpreter, op)
        if weighted or feeds_weights.intersection(outputs):
            feeds_weights.update(int(i) for i in op["inputs"] if int(i) >= 0)
        else:
            tail.extend(names[o] for o in outputs)
    return list(reversed(tail))


# Tensors whose added per-channel noise-to-signal ratio under int8 exceeds this are kept in float.
SENSITIVE_NSR = 0.1
MAX_FLOAT_TENSORS = 3


class TFLiteTarget:
    """LiteRT models for CPUs (Raspberry Pi, Jetson, x86), with the int8 remedy ladder."""

    def preflight(self, job) -> None:
        return None

    def float_model(self, job) -> bytes:
        return job.float_tflite

    def engine(self, job, content: bytes):
        return LiteRTEngine(content, threads=job.device.threads)

    def quant_settings(self, job) -> QuantSettings:
        """The baseline. A detector's decode (the ops after its last convolution) is kept out of int8:
        in float inside the model where the profile allows float ops, else (full-integer) moved to
        the host decoder when the head is a YOLOv5 grid decode that can be split off exactly."""
        quant = QuantSettings(
            per_channel=job.per_channel,
            strict=job.device.require_full_integer,
            io_dtype=job.device.io_dtype if job.precision is Precision.INT8 else IODtype.FLOAT32,
        )
        self._host = None
        if job.precision is not Precision.INT8 or not job.source.boxes_head:
            return quant
        tail = tuple(decode_tail(job.float_tflite)) if job.float_tflite is not None else ()
        if not quant.strict:
            return replace(quant, decode="float", float_tensors=tail) if tail else quant
        from edge_sdk.converters import headsplit

        images = np.concatenate([normalize(job.calib_set.images[i], job.spec) for i in range(min(8, len(job.calib_set)))])
        self._host = headsplit.find(job.source, images)
        if self._host is not None:
            return replace(quant, decode="host")
        # No decode the host can do exactly: keep it in float at the end of the model, where the Edge
        # TPU hands over to the CPU anyway.
        return replace(quant, decode="cpu", float_tensors=tail) if tail else quant

    def _decoder(self, job, quant: QuantSettings):
        """The bundle decoder an attempt's model needs: the job's, plus the grid decode for a split head."""
        from edge_sdk.bundle import Decoder

        if quant.decode != "host" or job.decoder is None:
            return None
        return Decoder(kind=job.decoder.kind, options={**job.decoder.options, **self._host.options})

    def _run(self, job, name: str, quant: QuantSettings, calib: ImageSet | None, note: str = ""):
        from edge_sdk.converters.targets import Attempt, score

        if job.precision is Precision.FP32:  # convert() already made it
            return score(job, Attempt(name, TFLiteModel(job.float_tflite), quant, note), self.engine(job, job.float_tflite))
        source = self._host.source if quant.decode == "host" else job.source
        try:
            model = convert(source, precision=job.precision, spec=job.spec, calib=calib, quant=quant, progress=job.progress)
        except ConversionError as exc:
            if name == "baseline":
                raise
            return Attempt(name, None, quant, f"failed: {exc}", len(calib) if calib is not None else 0)
        attempt = Attempt(name, model, quant, note, len(calib) if calib is not None else 0, decoder=self._decoder(job, quant))
        return score(job, attempt, self.engine(job, model.content))

    def attempts(self, job) -> Iterator:
        from edge_sdk.converters.targets import Attempt, score

        if job.source.kind == "tflite":  # a flatbuffer from elsewhere is packaged as it is
            content = job.float_tflite
            integer_io = np.dtype(LiteRTEngine(content).input_specs()[0]["dtype"]) != np.float32
            model = TFLiteModel(content, float_ops(content, integer_io=integer_io) if job.source.quantized else [])
            yield score(job, Attempt("as-given", model, QuantSettings(per_channel=job.per_channel), "the .tflite as it was given"),
                        self.engine(job, content))
            return
        quant = self.quant_settings(job)
        note = {"float": "detector decode kept in float (ops after the last convolution)",
                "host": "int8 model ends at the head's sigmoids; the decoder does the grid decode",
                "cpu": "int8 up to the last convolution; the decode after it runs in float on the CPU"}.get(quant.decode, "")
        first = self._run(job, "baseline", quant, job.calib_set, note)
        yield first
        if job.precision is not Precision.INT8:
            return
        tried = [first]
        quant, calib = first.settings, job.calib_set
        if not quant.per_channel:
            attempt = self._run(job, "per-channel", replace(quant, per_channel=True), calib, "per-channel weight scales")
            tried.append(attempt)
            yield attempt
            if attempt.metrics and job.rank(attempt) >= job.rank(first):
                quant = attempt.settings
        larger = job.larger_calibration()
        if larger is None:
            yield Attempt("larger-calibration", None, quant, f"skipped: --calib has only {len(calib)} images", len(calib))
        else:
            attempt = self._run(job, "larger-calibration", quant, larger, f"{len(larger)} calibration images instead of {len(calib)}")
            tried.append(attempt)
            yield attempt
            if attempt.metrics and job.rank(attempt) >= max(job.rank(a) for a in tried[:-1] if a.metrics):
                calib = larger
        yield self._float_fallback(job, tried, quant, calib)
        yield self._quantization_aware(job, quant, calib)

    def _quantization_aware(self, job, quant: QuantSettings, calib: ImageSet):
        """The last remedy, given --train: fake-quantized fine-tuning (tfmot), then int8 as usual."""
        from edge_sdk.converters import qat
        from edge_sdk.converters.targets import Attempt, score

        name = "quantization-aware"
        if job.train_set is None:
            return Attempt(name, None, quant, "skipped: needs --train images to fine-tune on", len(calib))
        reason = qat.unsupported_reason(job.source)
        if reason is not None:
            return Attempt(name, None, quant, f"skipped: {reason}", len(calib))
        settings = qat.QATSettings()
        try:
            aware = qat.quantization_aware(job.source, job.train_set, job.spec, settings, progress=job.progress)
            model = convert(aware, precision=job.precision, spec=job.spec, calib=calib, quant=quant, progress=job.progress)
        except ConversionError as exc:
            return Attempt(name, None, quant, f"failed: {exc}", len(calib))
        note = f"tfmot fake quantization, fine-tuned {settings.epochs} epochs on {len(job.train_set)} --train images"
        return score(job, Attempt(name, model, quant, note, len(calib)), self.engine(job, model.content))

    def _float_fallback(self, job, tried: list, quant: QuantSettings, calib: ImageSet):
        from edge_sdk.converters.targets import Attempt

        if job.device.require_full_integer:
            return Attempt("float-fallback", None, quant, f"not allowed: profile {job.device.name} needs every op in integer", len(calib))
        base = next((a for a in tried if not a.failed and a.settings == quant), tried[0])
        ranked = sensitive_tensors(job.float_tflite, base.model.content, calib, job.spec)
        if not ranked:
            return Attempt("float-fallback", None, quant, "skipped: no quantized activation to keep in float", len(calib))
        chosen = [name for name, score in ranked[:MAX_FLOAT_TENSORS] if score > SENSITIVE_NSR] or [ranked[0][0]]
        described = ", ".join(f"{name} (+{score:.2f} noise/signal)" for name, score in ranked if name in chosen)
        keep = list(dict.fromkeys([*quant.float_tensors, *chosen, *consumers(base.model.content, chosen)]))
        return self._run(job, "float-fallback", replace(quant, float_tensors=tuple(keep)), calib, f"kept in float: {described}")

    def package(self, job, attempt):
        from edge_sdk.converters.targets import Packaged, tensor_specs
        from edge_sdk.report import Quantization

        content = attempt.model.content
        engine = LiteRTEngine(content)
        quantization = None
        if job.precision is Precision.INT8:
            quantization = Quantization(
                per_channel=attempt.settings.per_channel,
                calibration_images=attempt.calibration_images,
                float_ops=attempt.model.float_ops,
                float_layers=list(attempt.settings.float_tensors),
                decode=attempt.settings.decode,
            )
        return Packaged(
            files={"model.tflite": content},
            roles={"model.tflite": "model"},
            model_file="model.tflite",
            inputs=tensor_specs(engine.input_specs()),
            outputs=tensor_specs(engine.output_specs()),
            quantization=quantization,
            decoder=attempt.decoder,
        )
