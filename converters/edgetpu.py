"""The Edge TPU target: check a full-integer .tflite against Coral's rules, then run edgetpu_compiler.

Sources: "TensorFlow models on the Edge TPU" (model requirements and the supported-operations
table, https://coral.ai/docs/edgetpu/models-intro/) and "Edge TPU Compiler" (usage, flags and log,
https://coral.ai/docs/edgetpu/compiler/). The model is inspected with LiteRT, not TensorFlow.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np

from edge_sdk.backends.litert import LiteRTEngine
from edge_sdk.errors import ConfigError, ConversionError, EngineError
from edge_sdk.report import EdgeTPUReport, OpPlacement, PrecheckIssue
from edge_sdk.converters.tflite import TFLiteTarget, cpu_tail

COMPILER = "edgetpu_compiler"
PARAMETER_CACHE_BYTES = 8 * 1024 * 1024  # the Edge TPU's on-chip SRAM for parameters
MISSING_COMPILER = (
    "edgetpu_compiler is not installed: it runs only on x86-64 Linux, from Coral's apt repository "
    "(deb https://packages.cloud.google.com/apt coral-edgetpu-stable main; sudo apt-get install edgetpu-compiler); "
    "or convert with --no-compile for an Edge-TPU-ready bundle you compile elsewhere"
)
OPS_DOC = "https://coral.ai/docs/edgetpu/models-intro/#supported-operations"

# Coral's supported-operations table, as TFLite builtin op names.
SUPPORTED_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS",
    "FULLY_CONNECTED", "L2_NORMALIZATION", "LOGISTIC", "LSTM", "MAXIMUM", "MAX_POOL_2D", "MEAN",
    "MINIMUM", "MUL", "PACK", "PAD", "PRELU", "QUANTIZE", "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6",
    "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SLICE", "SOFTMAX",
    "SPACE_TO_DEPTH", "SPLIT", "SQUARED_DIFFERENCE", "SQUEEZE", "STRIDED_SLICE", "SUB", "SUM", "TANH",
    "TRANSPOSE", "TRANSPOSE_CONV",
    # The table's "LSTM (unidirectional only)": Keras LSTM layers convert to this op.
    "UNIDIRECTIONAL_SEQUENCE_LSTM",
})
# Rows the table gives a minimum Edge TPU runtime for (every other row works with all runtimes).
MIN_RUNTIME = MappingProxyType({
    "EXPAND_DIMS": 13, "PACK": 13, "PRELU": 13, "QUANTIZE": 13, "SUM": 13, "TRANSPOSE_CONV": 13,
    "LSTM": 14, "UNIDIRECTIONAL_SEQUENCE_LSTM": 14, "REDUCE_MAX": 14, "REDUCE_MIN": 14, "RSQRT": 14,
    "SQUARED_DIFFERENCE": 14, "TRANSPOSE": 14,
})
# Only runtime-14 ops get a warning: every model with uint8 I/O starts with a QUANTIZE (a runtime-13
# op), so a runtime-13 warning would fire on every model.
_WARN_RUNTIME = 14
SOFTMAX_MAX_ELEMENTS = 16_000  # table: "Supports only 1-D input tensor with a max of 16,000 elements"

_PARTITION = (
    "the compiler cuts the graph at the first unsupported op, so it and every op after it run on the CPU"
)
_OP_FIXES = MappingProxyType({
    "LEAKY_RELU": "use ReLU (or PReLU, runtime 13+)",
    "HARD_SWISH": "use ReLU6 or ReLU",
    "GELU": "use ReLU",
    "ELU": "use ReLU",
    "DEQUANTIZE": "it computes in float: convert full-integer (int8 ops, uint8/int8 I/O)",
    "SHAPE": "the graph computes shapes at run time: give the model a fixed batch size "
             "(keras.Input(shape, batch_size=1)) or use GlobalAveragePooling2D instead of Flatten",
    "BATCH_MATMUL": "use Dense or a 1x1 Conv2D",
    "ARG_MAX": "take the argmax on the host from the output scores",
})
_STATUS_FIXES = (
    ("not supported", "replace unsupported op kinds with ones from Coral's list (e.g. LeakyReLU -> ReLU)"),
    ("more than one subgraph", "these ops follow an unsupported op; " + _PARTITION + ": fix or move that op"),
    ("unsupported data type", "quantize every op to int8 (full-integer conversion with uint8/int8 I/O)"),
    ("version not supported", "keep the op within Coral's known limitations (e.g. Flatten before Dense) "
                              "or use the newest edgetpu_compiler"),
    ("unspecified limitation", "usually a tensor too large for the Edge TPU: try a smaller input size"),
)
_COMPILER_HINTS = (
    ("dynamic-sized tensors", "give the model a fixed input shape with batch size 1"),
    ("not quantized", "convert the model full-integer int8 first"),
)


# ---------------------------------------------------------------------------------------------
# Pre-check


@dataclass(frozen=True)
class _Graph:
    ops: list[dict]
    tensors: dict[int, dict]
    constants: frozenset[int]
    io: dict[str, list[int]]  # "input"/"output" -> tensor indices

    def touching(self, indices: Iterable[int]) -> list[str]:
        wanted = set(indices)
        return [_label(op) for op in self.ops if wanted & {int(i) for i in (*op["inputs"], *op["outputs"])}]


def _label(op: dict) -> str:
    return f"{op['op_name']}#{op['index']}"


def _graph(content: bytes) -> _Graph:
    try:
        engine = LiteRTEngine(content)
    except EngineError as exc:
        raise ConversionError(f"the Edge TPU pre-check cannot read the model: {exc}") from exc
    ops = [op for op in engine.ops() if op["op_name"] != "DELEGATE"]  # XNNPACK's wrapper nodes
    tensors = {int(t["index"]): t for t in engine.tensor_details()}
    by_name = {t["name"]: i for i, t in tensors.items()}
    io = {
        "input": [by_name[s["name"]] for s in engine.input_specs()],
        "output": [by_name[s["name"]] for s in engine.output_specs()],
    }
    produced = {int(o) for op in ops for o in op["outputs"]}
    constants = frozenset(set(tensors) - produced - set(io["input"]))
    return _Graph(ops, tensors, constants, io)


def _dims(shape) -> list[int]:
    return [int(d) for d in shape]


def _issue(rule: str, severity: str, message: str, ops: Iterable[str] = ()) -> PrecheckIssue:
    return PrecheckIssue(rule=rule, severity=severity, message=message, ops=list(dict.fromkeys(ops)))


def _io_dtypes(g: _Graph) -> list[PrecheckIssue]:
    issues = []
    for kind, indices in g.io.items():
        for i in indices:
            dtype = np.dtype(g.tensors[i]["dtype"])
            if dtype not in (np.uint8, np.int8):
                issues.append(_issue(
                    "io-dtype", "error",
                    f"{kind} '{g.tensors[i]['name']}' is {dtype.name}; the Edge TPU takes uint8 or int8 "
                    "input and output: convert with uint8 (or int8) I/O, as the edgetpu profiles do",
                    g.touching([i]),
                ))
    return issues


def _quantized(g: _Graph) -> list[PrecheckIssue]:
    io = {i for indices in g.io.values() for i in indices}
    bad = {}
    for i, t in g.tensors.items():
        dtype = np.dtype(t["dtype"])
        # int32 constants are biases, shapes and axes; Coral's rule is about parameters and activations.
        if i not in io and dtype not in (np.uint8, np.int8) and not (dtype == np.int32 and i in g.constants):
            bad[i] = dtype.name
    if not bad:
        return []
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(Counter(bad.values()).items()))
    return [_issue(
        "quantized-tensors", "error",
        f"{len(bad)} tensors are not 8-bit ({kinds}); the Edge TPU needs every tensor int8/uint8 "
        "(int32 only for biases): convert full-integer with int8 kernels and a representative dataset, "
        "and replace ops TFLite cannot quantize",
        g.touching(bad),
    )]


def _shapes(g: _Graph) -> list[PrecheckIssue]:
    issues = []
    # A -1 batch alone is accepted: the converter also stores the concrete batch-1 shape, which is
    # what the compiler compiles (Coral's Keras retraining tutorials convert such models). Other -1
    # axes are not; neither is a shape computed at run time.
    dynamic = [i for i, t in g.tensors.items() if i not in g.constants and -1 in list(t["shape_signature"])[1:]]
    if dynamic:
        issues.append(_issue(
            "static-shapes", "error",
            f"{len(dynamic)} tensors have a dynamic height, width or length (e.g. '{g.tensors[dynamic[0]]['name']}' "
            f"{_dims(g.tensors[dynamic[0]]['shape_signature'])}); the Edge TPU compiles fixed shapes only: "
            "give the model a fixed input shape, e.g. keras.Input((224, 224, 3))",
            g.touching(dynamic),
        ))
    runtime = [op for op in g.ops if op["op_name"] == "SHAPE" or (
        op["op_name"] == "RESHAPE" and len(op["inputs"]) > 1 and int(op["inputs"][1]) not in g.constants)]
    if runtime:
        issues.append(_issue(
            "static-shapes", "error",
            "the graph computes tensor shapes at run time, which edgetpu_compiler rejects as "
            "'dynamic-sized tensors' (Keras 3 Flatten/Reshape with a dynamic batch does this): "
            "fix the batch size to 1 (keras.Input(shape, batch_size=1)) or use GlobalAveragePooling2D",
            [_label(op) for op in runtime],
        ))
    # Coral's rank rule is about activations; conv filters (OHWI) are 4-D by nature.
    wide = [i for i, t in g.tensors.items()
            if i not in g.constants and len(t["shape"]) > 3 and any(int(d) > 1 for d in t["shape"][:-3])]
    if wide:
        issues.append(_issue(
            "static-shapes", "error",
            f"{len(wide)} tensors have more than 3 dimensions larger than 1 (e.g. '{g.tensors[wide[0]]['name']}' "
            f"{_dims(g.tensors[wide[0]]['shape'])}); Coral allows only the 3 innermost to exceed 1: use batch size 1",
            g.touching(wide),
        ))
    return issues


def _ops(g: _Graph) -> list[PrecheckIssue]:
    issues = []
    unsupported: dict[str, list[str]] = {}
    for op in g.ops:
        if op["op_name"] not in SUPPORTED_OPS:
            unsupported.setdefault(op["op_name"], []).append(_label(op))
    for name, labels in unsupported.items():
        fix = _OP_FIXES.get(name, "replace it with an op from Coral's supported list")
        issues.append(_issue(
            "supported-ops", "error",
            f"{name} is not an Edge TPU op ({OPS_DOC}): {fix}; {_PARTITION}", labels,
        ))
    issues.extend(_limits(g))
    newer = [_label(op) for op in g.ops if MIN_RUNTIME.get(op["op_name"], 0) >= _WARN_RUNTIME]
    if newer:
        issues.append(_issue(
            "op-version", "warning",
            f"these ops map to the Edge TPU only from runtime {_WARN_RUNTIME} (edgetpu_compiler 16): compiling "
            "for an older runtime (-m 13) leaves them on the CPU, and the device needs a current libedgetpu1-std",
            newer,
        ))
    return issues


def _limits(g: _Graph) -> list[PrecheckIssue]:
    """Known limitations from Coral's table that the tensor shapes alone reveal."""
    issues = []
    for op in g.ops:
        if op["op_name"] == "SOFTMAX":
            shape = _dims(g.tensors[int(op["inputs"][0])]["shape"])
            if int(np.prod(shape[1:])) > SOFTMAX_MAX_ELEMENTS:
                issues.append(_issue(
                    "supported-ops", "error",
                    f"SOFTMAX over {int(np.prod(shape[1:]))} elements; the Edge TPU's softmax takes at most "
                    f"{SOFTMAX_MAX_ELEMENTS}: fewer classes, or leave the softmax to the host",
                    [_label(op)],
                ))
        if op["op_name"] == "FULLY_CONNECTED":
            shape = _dims(g.tensors[int(op["outputs"][0])]["shape"])
            if sum(d > 1 for d in shape) > 1:  # TFLite folds a sequence into rows: [14, 8] is 2-D
                issues.append(_issue(
                    "supported-ops", "error",
                    f"FULLY_CONNECTED with output shape {shape}; the Edge TPU needs a one-dimensional "
                    "output: Flatten (or pool) before Dense",
                    [_label(op)],
                ))
    return issues


def _parameters(g: _Graph) -> tuple[list[PrecheckIssue], int]:
    size = sum(int(np.prod(g.tensors[i]["shape"])) * np.dtype(g.tensors[i]["dtype"]).itemsize for i in g.constants)
    if size <= PARAMETER_CACHE_BYTES:
        return [], size
    return [_issue(
        "parameter-cache", "warning",
        f"constant parameters take {size / 2**20:.1f} MiB, more than the Edge TPU's "
        f"{PARAMETER_CACHE_BYTES / 2**20:.0f} MiB on-chip cache: the rest streams from host memory on every "
        "inference (slow over USB); use a smaller model (narrower layers, GlobalAveragePooling2D before Dense)",
    )], size


def precheck(content: bytes, *, cpu_tail: bool = False) -> tuple[list[PrecheckIssue], int]:
    """Coral's Edge TPU model requirements checked on a full-integer .tflite, before compiling.

    Returns the issues (errors first) and the bytes of constant parameters. An ``error`` means the
    op will run on the CPU or compilation will fail; a ``warning`` means it will run, but slower
    or only on a recent runtime. With ``cpu_tail``, the ops from the first DEQUANTIZE on are meant
    for the CPU (a detector's decode kept in float): the rules apply to the part before them.
    """
    g = _graph(content)
    tail: list[dict] = []
    if cpu_tail:
        g, tail = _split_tail(g)
    cache, size = _parameters(g)
    issues = [*_io_dtypes(g), *_quantized(g), *_shapes(g), *_ops(g), *cache]
    if tail:
        issues.append(_issue(
            "cpu-tail", "warning",
            f"the last {len(tail)} ops (the detector's decode, kept in float for box precision) run on the CPU "
            "after the Edge TPU part, as the compiler places every op after the first one it cannot map",
            [_label(op) for op in tail],
        ))
    return sorted(issues, key=lambda issue: issue.severity != "error"), size


def _split_tail(g: _Graph) -> tuple[_Graph, list[dict]]:
    """The graph before the first DEQUANTIZE, with the tensors it hands over as its outputs, and the rest."""
    first = next((i for i, op in enumerate(g.ops) if op["op_name"] == "DEQUANTIZE"), None)
    if first is None:
        return g, []
    body, tail = g.ops[:first], g.ops[first:]
    touched = {int(i) for op in body for i in (*op["inputs"], *op["outputs"]) if int(i) >= 0}
    produced = {int(o) for op in body for o in op["outputs"]}
    handed = {int(i) for op in tail for i in op["inputs"] if int(i) in produced}
    outputs = [i for i in g.io["output"] if i in produced] + sorted(handed - set(g.io["output"]))
    tensors = {i: t for i, t in g.tensors.items() if i in touched or i in g.io["input"]}
    return _Graph(body, tensors, frozenset(g.constants & set(tensors)), {"input": g.io["input"], "output": outputs}), tail


# ---------------------------------------------------------------------------------------------
# Compiler log


@dataclass(frozen=True)
class CompilerLog:
    """What edgetpu_compiler reported: its version, op counts and operator table."""

    version: str
    ops_on_tpu: int
    ops_on_cpu: int
    placement: tuple[OpPlacement, ...]
    off_chip_bytes: int | None = None  # parameters streamed from host memory on every inference

    @property
    def tpu_fraction(self) -> float:
        total = self.ops_on_tpu + self.ops_on_cpu
        return self.ops_on_tpu / total if total else 0.0


_VERSION = re.compile(r"Edge TPU Compiler version\s+(\S+)")
_ON_TPU = re.compile(r"Number of operations that will run on Edge TPU:\s*(\d+)")
_ON_CPU = re.compile(r"Number of operations that will run on CPU:\s*(\d+)")
_TOTAL = re.compile(r"Total number of operations:\s*(\d+)")
_OFF_CHIP = re.compile(r"Off-chip memory used for streaming uncached model parameters:\s*([\d.]+)\s*([KMG]i)?B")
_UNITS = {None: 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
_HEADER = re.compile(r"^\s*Operator\s+Count\s+Status\s*$", re.MULTILINE)
_ROW = re.compile(r"^\s*([A-Za-z][\w\-]*)\s+(\d+)\s+(\S.*?)\s*$")
_MAPPED = "mapped to edge tpu"


def _table(text: str) -> tuple[OpPlacement, ...]:
    header = _HEADER.search(text)
    if header is None:
        return ()
    rows = []
    for line in text[header.end():].splitlines():
        if not line.strip():
            if rows:
                break
            continue
        match = _ROW.match(line)
        if match is None:  # e.g. "... All other operators were mapped successfully."
            break
        op, count, status = match.groups()
        rows.append(OpPlacement(op=op, count=int(count), on_tpu=status.lower() == _MAPPED, status=status))
    return tuple(rows)


def parse_compiler_log(text: str) -> CompilerLog:
    """Parse edgetpu_compiler output: its stdout, its ``*_edgetpu.log``, or both concatenated.

    The first operator table wins (put the .log first: with ``-s`` stdout lists only the ops that
    did not map). Op counts come from the "Number of operations that will run on ..." lines, else
    from the table; a fully mapped model prints neither line, only "Total number of operations".
    """
    version = _VERSION.search(text)
    placement = _table(text)
    on_tpu, on_cpu = _ON_TPU.search(text), _ON_CPU.search(text)
    if on_tpu and on_cpu:
        counts = (int(on_tpu.group(1)), int(on_cpu.group(1)))
    elif placement:
        counts = (sum(p.count for p in placement if p.on_tpu), sum(p.count for p in placement if not p.on_tpu))
    elif (total := _TOTAL.search(text)) and "not all operations are supported" not in text:
        counts = (int(total.group(1)), 0)
    else:
        counts = None
    missing = [what for what, found in (
        ("'Edge TPU Compiler version' line", version),
        ("op counts ('Number of operations that will run on ...' lines or an 'Operator Count Status' table)", counts),
    ) if not found]
    if missing:
        raise ConversionError(f"cannot read the edgetpu_compiler log: it has no {' and no '.join(missing)}")
    off_chip = _OFF_CHIP.search(text)
    return CompilerLog(
        version=version.group(1), ops_on_tpu=counts[0], ops_on_cpu=counts[1], placement=placement,
        off_chip_bytes=round(float(off_chip.group(1)) * _UNITS[off_chip.group(2)]) if off_chip else None,
    )


# ---------------------------------------------------------------------------------------------
# Compiler


def find_compiler(explicit: str | None = None) -> str | None:
    """The compiler to run: ``explicit`` (a path or command name), else ``edgetpu_compiler`` on PATH.

    Returns None when none is installed; an explicit one that cannot be found is an error.
    """
    if explicit is None:
        return shutil.which(COMPILER)
    found = shutil.which(explicit)
    if found is None:
        raise ConfigError(f"Edge TPU compiler '{explicit}' does not exist or is not executable")
    return found


def _last_line(text: str) -> str:
    return next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "")


def _reason(stdout: str, stderr: str) -> str:
    lines = [line.strip() for line in (stderr + "\n" + stdout).splitlines()]
    # The compiler states its cause on an "ERROR:" line and then ends with "Compilation failed!".
    reason = next((line for line in lines if line.startswith("ERROR")), None)
    reason = reason or _last_line(stderr) or _last_line(stdout) or "no output"
    hint = next((h for key, h in _COMPILER_HINTS if key in (stdout + stderr).lower()), None)
    return f"{reason[:300]} ({hint})" if hint else reason[:300]


def _stop(proc: subprocess.Popen) -> None:
    try:
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, signal.SIGKILL)  # the compiler runs a child process of its own
        else:
            proc.kill()
    except ProcessLookupError:
        pass


def _run(command: list[str], *, timeout: float, cwd: str) -> tuple[str, str, int]:
    try:
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
            cwd=cwd, start_new_session=True,
        )
    except OSError as exc:
        raise ConversionError(f"cannot run {command[0]}: {exc.strerror or exc}") from exc
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        _stop(proc)
        stdout, stderr = proc.communicate()
        raise ConversionError(
            f"edgetpu_compiler did not finish within {timeout:g} s (last output: {_reason(stdout, stderr)}); "
            "raise the timeout or shrink the model"
        ) from exc
    return stdout, stderr, proc.returncode


def _fix(status: str) -> str:
    lowered = status.lower()
    return next((fix for key, fix in _STATUS_FIXES if key in lowered), f"keep the op within Coral's limits ({OPS_DOC})")


class TPUShareError(ConversionError):
    """Too few ops mapped to the Edge TPU; carries the parsed log so the report can show the placement."""

    def __init__(self, message: str, *, log: CompilerLog) -> None:
        super().__init__(message)
        self.log = log


def _check_fraction(log: CompilerLog, minimum: float, cpu_ops: int = 0) -> None:
    """``cpu_ops`` ops are meant for the CPU (a detector's float decode): the share is of the rest."""
    meant = log.ops_on_tpu + max(0, log.ops_on_cpu - cpu_ops)
    if (log.ops_on_tpu / meant if meant else 0.0) + 1e-9 >= minimum:
        return
    cpu = [p for p in log.placement if not p.on_tpu]
    listed = "; ".join(f"{p.op} x{p.count} ({p.status})" for p in cpu) or "no operator table in the log"
    fixes = "; ".join(dict.fromkeys(_fix(p.status) for p in cpu))
    raise TPUShareError(
        f"edgetpu_compiler mapped {log.ops_on_tpu} of {log.ops_on_tpu + log.ops_on_cpu} ops "
        f"({log.tpu_fraction:.0%}) to the Edge TPU, below the required {minimum:.0%}. On the CPU: {listed}. "
        f"Usual fixes: {fixes or 'see ' + OPS_DOC}",
        log=log,
    )


def compile_model(
    content: bytes, *, compiler: str, min_tpu_fraction: float, timeout: float = 300, cpu_ops: int = 0
) -> tuple[bytes, CompilerLog]:
    """Compile a full-integer .tflite with ``edgetpu_compiler -s -o OUT model.tflite``.

    Returns the ``model_edgetpu.tflite`` bytes and the parsed log. Raises ConversionError when the
    compiler fails, hangs past ``timeout`` seconds or writes no model, and its TPUShareError
    (carrying the log) when less than ``min_tpu_fraction`` of the ops map to the Edge TPU, naming
    the CPU ops with the compiler's status and the usual fixes. ``cpu_ops`` ops at the end are
    meant for the CPU and do not count against the share.
    """
    if not 0.0 <= min_tpu_fraction <= 1.0:
        raise ConfigError(f"min_tpu_fraction must be between 0 and 1, not {min_tpu_fraction}")
    if timeout <= 0:
        raise ConfigError(f"timeout must be positive, not {timeout}")
    with tempfile.TemporaryDirectory(prefix="edge-sdk-edgetpu-") as tmp:
        model, out = Path(tmp) / "model.tflite", Path(tmp) / "out"
        out.mkdir()
        model.write_bytes(content)
        command = [compiler, "-s", "-o", str(out), str(model)]
        stdout, stderr, code = _run(command, timeout=timeout, cwd=tmp)
        if code != 0:
            raise ConversionError(
                f"edgetpu_compiler failed (exit {code}): {_reason(stdout, stderr)}"
            ) from subprocess.CalledProcessError(code, command, stdout, stderr)
        compiled, log_file = out / "model_edgetpu.tflite", out / "model_edgetpu.log"
        if not compiled.is_file():
            raise ConversionError(
                f"edgetpu_compiler exited 0 but wrote no model_edgetpu.tflite (last output: {_reason(stdout, stderr)})"
            )
        log_text = log_file.read_text(encoding="utf-8", errors="replace") if log_file.is_file() else ""
        log = parse_compiler_log(log_text + "\n" + stdout)
        data = compiled.read_bytes()
    _check_fraction(log, min_tpu_fraction, cpu_ops)
    return data, log


def edgetpu_report(
    issues: list[PrecheckIssue], parameter_bytes: int, *, min_tpu_fraction: float, log: CompilerLog | None = None
) -> EdgeTPUReport:
    """The report section for a pre-checked and, when ``log`` is given, compiled model."""
    return EdgeTPUReport(
        precheck_passed=not any(issue.severity == "error" for issue in issues),
        precheck=issues,
        parameter_bytes=parameter_bytes,
        compiled=log is not None,
        compiler_version=log.version if log else None,
        ops_on_tpu=log.ops_on_tpu if log else None,
        ops_on_cpu=log.ops_on_cpu if log else None,
        placement=list(log.placement) if log else [],
        min_tpu_fraction=min_tpu_fraction,
    )


class EdgeTPUTarget(TFLiteTarget):
    """Coral Edge TPU: a full-integer TFLite model, pre-checked, then compiled by edgetpu_compiler."""

    def preflight(self, job) -> None:
        self._compiler = None
        if job.options.compile:
            self._compiler = find_compiler(job.options.edgetpu_compiler)
            if self._compiler is None:
                raise ConversionError(MISSING_COMPILER)

    def package(self, job, attempt):
        packaged = super().package(job, attempt)
        content = packaged.files["model.tflite"]
        issues, parameter_bytes = precheck(content, cpu_tail=attempt.settings.decode == "cpu")
        errors = [issue for issue in issues if issue.severity == "error"]
        if errors and job.options.min_tpu_fraction >= 1.0:
            ops = sorted({op for issue in errors for op in issue.ops})
            raise ConversionError(
                f"the model cannot run entirely on the Edge TPU: {errors[0].rule}: {errors[0].message}"
                + (f" (ops: {', '.join(ops[:10])})" if ops else "")
                + (f"; {len(errors) - 1} more problem(s)" if len(errors) > 1 else "")
            )
        log = None
        if self._compiler is not None:
            compiled, log = compile_model(content, compiler=self._compiler, min_tpu_fraction=job.options.min_tpu_fraction,
                                          cpu_ops=len(cpu_tail(content)) if attempt.settings.decode == "cpu" else 0)
            packaged.files["model_edgetpu.tflite"] = compiled
            packaged.roles["model_edgetpu.tflite"] = "model"
            packaged.roles["model.tflite"] = "artifact"  # the CPU-fallback copy
            packaged.model_file = "model_edgetpu.tflite"
        packaged.edgetpu = edgetpu_report(issues, parameter_bytes, min_tpu_fraction=job.options.min_tpu_fraction, log=log)
        return packaged
