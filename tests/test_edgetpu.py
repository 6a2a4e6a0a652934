"""Edge TPU target: pre-check on real int8 models, compiler-log parsing, compiling and the device engine.

The Edge TPU compiler only installs on x86-64 Linux from Coral's apt repository and there is no
Coral stick here, so ``compile_model`` runs against a FAKE compiler script written below (clearly
named, documented output format); everything else runs on real TensorFlow and LiteRT.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edge_sdk.backends.edgetpu import EdgeTPUEngine, load_edgetpu_delegate
from edge_sdk.backends.litert import LiteRTEngine
from edge_sdk.converters import edgetpu
from edge_sdk.converters.data import ImageSet
from edge_sdk.converters.models import from_keras_object
from edge_sdk.converters.tflite import QuantSettings, convert, representative
from edge_sdk.errors import ConfigError, ConversionError, EngineError
from edge_sdk.preprocess import Preprocessing
from edge_sdk.profiles import IODtype, Precision

pytestmark = pytest.mark.slow

SIZE = 16
SPEC = Preprocessing(width=SIZE, height=SIZE, channels=3)


@pytest.fixture(scope="module")
def keras():
    from edge_sdk.converters import _tf

    module = _tf.keras3()
    module.utils.set_random_seed(0)
    return module


@pytest.fixture(scope="module")
def calib() -> ImageSet:
    """Generated uint8 images: smooth gradients plus noise, so activations cover a real range."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, SIZE)[None, :, None, None]
    images = ramp * rng.uniform(0.2, 1.0, size=(48, 1, 1, 3)) + rng.normal(0, 25, size=(48, SIZE, SIZE, 3))
    return ImageSet(np.clip(images, 0, 255).astype(np.uint8))


def to_int8(model, calib: ImageSet, *, io: IODtype = IODtype.UINT8) -> bytes:
    """Through edge-sdk's own TFLite conversion, as the edgetpu target does."""
    quant = QuantSettings(strict=True, io_dtype=io)
    return convert(from_keras_object(model), precision=Precision.INT8, spec=SPEC, calib=calib, quant=quant).content


def raw_int8(model, calib: ImageSet) -> bytes:
    """Straight through TFLiteConverter, as a user's own .tflite would be made (no edge-sdk fixes)."""
    from edge_sdk.converters import _tf

    tf = _tf.tensorflow()
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative(calib, SPEC)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.uint8
    return converter.convert()


def labels(content: bytes, name: str) -> list[str]:
    return [f"{op['op_name']}#{op['index']}" for op in LiteRTEngine(content).ops() if op["op_name"] == name]


def cnn(keras, *, batch_size: int | None = 1, activation=None):
    L = keras.layers
    inp = L.Input((SIZE, SIZE, 3), batch_size=batch_size)
    h = L.Conv2D(8, 3)(inp)
    h = (activation or L.ReLU())(h)
    h = L.MaxPooling2D()(h)
    h = L.Conv2D(8, 3, activation="relu")(h)
    h = L.Flatten()(h)
    h = L.Dense(16, activation="relu")(h)
    return keras.Model(inp, L.Dense(4, activation="softmax")(h))


@pytest.fixture(scope="module")
def good(keras, calib) -> tuple[object, bytes]:
    model = cnn(keras)
    return model, to_int8(model, calib)


# --- pre-check ---------------------------------------------------------------------------------


def test_a_conv_pool_dense_softmax_model_passes_and_its_weights_are_counted(good):
    model, content = good
    issues, parameter_bytes = edgetpu.precheck(content)
    assert issues == []
    kernels = sum(int(np.prod(w.shape)) for w in model.weights if len(w.shape) > 1)
    biases = sum(int(np.prod(w.shape)) for w in model.weights if len(w.shape) == 1)
    # int8 kernels, int32 biases (the converter drops all-zero ones), a few bytes of shape constants
    assert kernels < parameter_bytes <= kernels + 4 * biases + 64
    report = edgetpu.edgetpu_report(issues, parameter_bytes, min_tpu_fraction=0.9)
    assert report.precheck_passed and not report.compiled and report.parameter_bytes == parameter_bytes


def test_keras3_flatten_with_a_dynamic_batch_computes_shapes_at_run_time(keras, calib):
    content = raw_int8(cnn(keras, batch_size=None), calib)
    issues, _ = edgetpu.precheck(content)
    by_rule = {issue.rule: issue for issue in issues}
    shape_ops = labels(content, "SHAPE")
    assert shape_ops, "Keras 3 Flatten with a dynamic batch is expected to emit SHAPE -> ... -> RESHAPE"
    assert by_rule["static-shapes"].severity == "error"
    assert set(shape_ops) <= set(by_rule["static-shapes"].ops)
    assert "batch_size=1" in by_rule["static-shapes"].message
    assert by_rule["supported-ops"].ops == shape_ops


def test_an_op_outside_corals_list_is_named_with_its_fix(keras, calib):
    # LeakyReLU quantizes to int8 under TFLITE_BUILTINS_INT8 but is not in Coral's table
    # (real compiler logs report "LEAKY_RELU ... Operation not supported").
    content = to_int8(cnn(keras, activation=keras.layers.LeakyReLU(0.1)), calib)
    issues, _ = edgetpu.precheck(content)
    assert [issue.rule for issue in issues] == ["supported-ops"]
    issue = issues[0]
    assert issue.severity == "error"
    assert issue.ops == labels(content, "LEAKY_RELU") and len(issue.ops) == 1
    assert "LEAKY_RELU is not an Edge TPU op" in issue.message and "use ReLU" in issue.message
    assert not edgetpu.edgetpu_report(issues, 0, min_tpu_fraction=0.9).precheck_passed


def test_a_dynamic_input_height_and_width_is_an_error(keras, calib):
    L = keras.layers
    inp = L.Input((None, None, 3), batch_size=1)
    h = L.Conv2D(4, 3, padding="same", activation="relu")(inp)
    model = keras.Model(inp, L.Dense(3, activation="softmax")(L.GlobalAveragePooling2D()(h)))
    # edge-sdk refuses such a Keras model up front; a ready-made .tflite must be caught here.
    content = raw_int8(model, calib)
    issues, _ = edgetpu.precheck(content)
    shapes = [issue for issue in issues if issue.rule == "static-shapes"]
    assert len(shapes) == 1 and shapes[0].severity == "error"
    assert "fixed input shape" in shapes[0].message
    assert labels(content, "CONV_2D")[0] in shapes[0].ops


def test_float_io_is_an_io_dtype_error_and_its_dequantize_runs_on_the_cpu(good, calib):
    content = to_int8(good[0], calib, io=IODtype.FLOAT32)
    issues, _ = edgetpu.precheck(content)
    io = [issue for issue in issues if issue.rule == "io-dtype"]
    assert len(io) == 2 and all("float32" in issue.message and issue.severity == "error" for issue in io)
    assert labels(content, "QUANTIZE")[0] in io[0].ops
    unsupported = next(issue for issue in issues if issue.rule == "supported-ops")
    assert unsupported.ops == labels(content, "DEQUANTIZE")


def test_parameters_over_the_8_mb_cache_are_a_warning(keras, calib):
    L = keras.layers
    inp = L.Input((SIZE, SIZE, 3), batch_size=1)
    h = L.Dense(12_000, activation="relu")(L.Flatten()(inp))  # 768 x 12,000 int8 weights = 8.8 MiB
    content = to_int8(keras.Model(inp, L.Dense(2, activation="softmax")(h)), calib)
    issues, parameter_bytes = edgetpu.precheck(content)
    assert parameter_bytes > edgetpu.PARAMETER_CACHE_BYTES
    assert [(issue.rule, issue.severity) for issue in issues] == [("parameter-cache", "warning")]
    assert "streams from host memory" in issues[0].message
    assert edgetpu.edgetpu_report(issues, parameter_bytes, min_tpu_fraction=0.9).precheck_passed


def test_known_limitations_and_runtime_14_ops_are_reported(keras, calib):
    L = keras.layers

    def model(middle):
        inp = L.Input((SIZE, SIZE, 3), batch_size=1)
        h = middle(L.Conv2D(4, 3, activation="relu")(inp))
        return keras.Model(inp, L.Dense(3, activation="softmax")(L.Flatten()(h)))

    transposed = to_int8(model(L.Permute((2, 1, 3))), calib)  # TRANSPOSE maps from runtime 14 on
    issues, _ = edgetpu.precheck(transposed)
    assert [(issue.rule, issue.severity) for issue in issues] == [("op-version", "warning")]
    assert issues[0].ops == labels(transposed, "TRANSPOSE")

    sequence = to_int8(model(lambda h: L.Dense(8)(L.Reshape((14, 14 * 4))(h))), calib)  # Dense per row
    issues, _ = edgetpu.precheck(sequence)
    assert [issue.rule for issue in issues] == ["supported-ops"]
    assert "one-dimensional" in issues[0].message
    assert issues[0].ops == labels(sequence, "FULLY_CONNECTED")[:1]


def test_a_file_litert_cannot_read_is_a_conversion_error():
    with pytest.raises(ConversionError, match="the Edge TPU pre-check cannot read the model"):
        edgetpu.precheck(b"not a flatbuffer")


# --- compiler log ------------------------------------------------------------------------------

# Formats as printed by edgetpu_compiler 16 (https://coral.ai/docs/edgetpu/compiler/ and real runs).
FULL_STDOUT = """Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 180 seconds.

Model compiled successfully in 412 ms.

Input model: /tmp/x/model.tflite
Input size: 41.30KiB
Output model: /tmp/x/out/model_edgetpu.tflite
Output size: 88.08KiB
On-chip memory used for caching model parameters: 39.50KiB
On-chip memory remaining for caching model parameters: 7.98MiB
Off-chip memory used for streaming uncached model parameters: 0.00B
Number of Edge TPU subgraphs: 1
Total number of operations: 9
Operation log: /tmp/x/out/model_edgetpu.log
See the operation log file for individual operation details.
Compilation child process completed within timeout period.
Compilation succeeded!
"""
FULL_LOG = """Edge TPU Compiler version 16.0.384591198
Input: /tmp/x/model.tflite
Output: /tmp/x/out/model_edgetpu.tflite

Operator                       Count      Status

FULLY_CONNECTED                2          Mapped to Edge TPU
MAX_POOL_2D                    1          Mapped to Edge TPU
QUANTIZE                       2          Mapped to Edge TPU
SOFTMAX                        1          Mapped to Edge TPU
CONV_2D                        2          Mapped to Edge TPU
RESHAPE                        1          Mapped to Edge TPU
"""
PARTIAL_STDOUT = """Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 180 seconds.

Model compiled successfully in 377 ms.

Input model: /tmp/x/model.tflite
Input size: 41.41KiB
Output model: /tmp/x/out/model_edgetpu.tflite
Output size: 45.97KiB
On-chip memory used for caching model parameters: 3.00KiB
On-chip memory remaining for caching model parameters: 8.02MiB
Off-chip memory used for streaming uncached model parameters: 0.00B
Number of Edge TPU subgraphs: 1
Total number of operations: 10
Operation log: /tmp/x/out/model_edgetpu.log

Model successfully compiled but not all operations are supported by the Edge TPU. A percentage of the model will instead run on the CPU, which is slower. If possible, consider updating your model to use only operations supported by the Edge TPU. For details, visit g.co/coral/model-reqs.
Number of operations that will run on Edge TPU: 2
Number of operations that will run on CPU: 8

Operator                       Count      Status

LEAKY_RELU                     1          Operation not supported
CONV_2D                        1          More than one subgraph is not supported
... All other operators were mapped successfully. See /tmp/x/out/model_edgetpu.log.
"""
PARTIAL_LOG = """Edge TPU Compiler version 16.0.384591198
Input: /tmp/x/model.tflite
Output: /tmp/x/out/model_edgetpu.tflite

Operator                       Count      Status

QUANTIZE                       1          Mapped to Edge TPU
QUANTIZE                       1          More than one subgraph is not supported
CONV_2D                        1          Mapped to Edge TPU
LEAKY_RELU                     1          Operation not supported
CONV_2D                        1          More than one subgraph is not supported
MAX_POOL_2D                    1          More than one subgraph is not supported
RESHAPE                        1          Operation is otherwise supported, but not mapped due to some unspecified limitation
FULLY_CONNECTED                2          More than one subgraph is not supported
SOFTMAX                        1          Operation is working on an unsupported data type
"""


def test_a_fully_mapped_run_has_no_cpu_counts_so_they_come_from_the_log_table():
    log = edgetpu.parse_compiler_log(FULL_LOG + "\n" + FULL_STDOUT)
    assert log.version == "16.0.384591198"
    assert (log.ops_on_tpu, log.ops_on_cpu) == (9, 0)
    assert len(log.placement) == 6 and all(p.on_tpu for p in log.placement)
    assert log.placement[0].op == "FULLY_CONNECTED" and log.placement[0].count == 2
    assert log.off_chip_bytes == 0
    # stdout alone (no table, no per-device counts): every op of the total mapped
    stdout_only = edgetpu.parse_compiler_log(FULL_STDOUT)
    assert (stdout_only.ops_on_tpu, stdout_only.ops_on_cpu, stdout_only.placement) == (9, 0, ())


def test_a_partially_mapped_model_keeps_every_table_line_with_its_status():
    log = edgetpu.parse_compiler_log(PARTIAL_LOG + "\n" + PARTIAL_STDOUT.replace("0.00B", "1.50MiB"))
    assert (log.ops_on_tpu, log.ops_on_cpu) == (2, 8)
    assert log.off_chip_bytes == 3 * 2**19
    assert log.tpu_fraction == pytest.approx(0.2)
    assert len(log.placement) == 9, "the .log table (complete) wins over stdout's abridged one"
    leaky = next(p for p in log.placement if p.op == "LEAKY_RELU")
    assert not leaky.on_tpu and leaky.status == "Operation not supported"
    assert [p.on_tpu for p in log.placement if p.op == "QUANTIZE"] == [True, False]
    assert "unspecified limitation" in next(p.status for p in log.placement if p.op == "RESHAPE")


def test_counts_come_from_the_table_when_only_the_log_file_is_there_and_spacing_does_not_matter():
    ragged = re.sub(r" {2,}", " \t  ", PARTIAL_LOG).replace("Operator", "  Operator", 1)
    log = edgetpu.parse_compiler_log(ragged)
    assert (log.ops_on_tpu, log.ops_on_cpu) == (2, 8)
    assert [p.op for p in log.placement] == [p.op for p in edgetpu.parse_compiler_log(PARTIAL_LOG).placement]
    # abridged stdout table: stops at the "... All other operators" line
    assert [p.op for p in edgetpu.parse_compiler_log(PARTIAL_STDOUT).placement] == ["LEAKY_RELU", "CONV_2D"]


@pytest.mark.parametrize(
    ("text", "missing"),
    [
        ("Segmentation fault\n", "no 'Edge TPU Compiler version' line and no op counts"),
        ("Edge TPU Compiler version 16.0.384591198\nInvalid model: model.tflite\nModel not quantized\n",
         "it has no op counts"),
        ("Number of operations that will run on Edge TPU: 3\nNumber of operations that will run on CPU: 0\n",
         "it has no 'Edge TPU Compiler version' line"),
    ],
)
def test_an_unreadable_log_names_what_is_missing(text, missing):
    with pytest.raises(ConversionError, match="cannot read the edgetpu_compiler log") as info:
        edgetpu.parse_compiler_log(text)
    assert missing in str(info.value)


# --- compiler ----------------------------------------------------------------------------------

FAKE_COMPILER = '''#!{python}
"""FAKE edgetpu_compiler, for tests only: the real one needs x86-64 Linux and Coral's apt package.

Takes the flags edge-sdk passes (-s -o DIR model.tflite), prints stdout in the documented format,
writes DIR/<model>_edgetpu.log and copies the model to DIR/<model>_edgetpu.tflite like the real one.
"""
import os, shutil, sys, time
from pathlib import Path

MODE, STDOUT, LOG, PID_FILE = {mode!r}, {stdout!r}, {log!r}, {pid_file!r}
args = sys.argv[1:]
if "-s" not in args or "-o" not in args or not args[-1].endswith(".tflite"):
    sys.exit("Usage: edgetpu_compiler [options] model...")
out, model = Path(args[args.index("-o") + 1]), Path(args[-1])
if MODE == "hang":
    Path(PID_FILE).write_text(str(os.getpid()))
    time.sleep(600)
print(STDOUT)
if MODE == "fail":
    print("ERROR: Attempting to use a delegate that only supports static-sized tensors "
          "with a graph that has dynamic-sized tensors.", file=sys.stderr)
    print("Compilation failed: Model failed in Tflite interpreter.", file=sys.stderr)
    print("Compilation failed!", file=sys.stderr)
    sys.exit(1)
if MODE != "silent":
    (out / (model.stem + "_edgetpu.log")).write_text(LOG)
    shutil.copy(model, out / (model.stem + "_edgetpu.tflite"))
'''


def fake_compiler(folder: Path, mode: str, stdout: str = "", log: str = "") -> str:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "edgetpu_compiler"
    path.write_text(FAKE_COMPILER.format(
        python=sys.executable, mode=mode, stdout=stdout, log=log, pid_file=str(folder / "fake.pid")
    ))
    path.chmod(0o755)
    return str(path)


def test_find_compiler_with_an_empty_path_finds_none_and_the_message_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert edgetpu.find_compiler(None) is None
    message = edgetpu.MISSING_COMPILER
    assert "edgetpu_compiler" in message and "apt-get install edgetpu-compiler" in message
    assert "x86-64 Linux" in message and "--no-compile" in message and "\n" not in message
    with pytest.raises(ConfigError, match="does not exist"):
        edgetpu.find_compiler(str(tmp_path / "nowhere" / "edgetpu_compiler"))
    fake = fake_compiler(tmp_path / "bin", "pass")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert edgetpu.find_compiler(None) == fake
    assert edgetpu.find_compiler(fake) == fake


def test_compile_returns_the_compiled_model_and_its_log(good, tmp_path):
    content = good[1]
    compiler = fake_compiler(tmp_path, "pass", FULL_STDOUT, FULL_LOG)
    compiled, log = edgetpu.compile_model(content, compiler=compiler, min_tpu_fraction=1.0)
    assert compiled == content  # the fake copies its input
    assert (log.version, log.ops_on_tpu, log.ops_on_cpu) == ("16.0.384591198", 9, 0)
    report = edgetpu.edgetpu_report([], 1000, min_tpu_fraction=1.0, log=log)
    assert report.compiled and report.compiler_version == "16.0.384591198" and len(report.placement) == 6


def test_compile_below_the_tpu_share_lists_the_cpu_ops_with_their_status_and_fixes(good, tmp_path):
    compiler = fake_compiler(tmp_path, "pass", PARTIAL_STDOUT, PARTIAL_LOG)
    with pytest.raises(edgetpu.TPUShareError) as info:
        edgetpu.compile_model(good[1], compiler=compiler, min_tpu_fraction=0.9)
    assert isinstance(info.value, ConversionError) and info.value.log.ops_on_cpu == 8
    message = str(info.value)
    assert "mapped 2 of 10 ops (20%)" in message and "below the required 90%" in message
    assert "LEAKY_RELU x1 (Operation not supported)" in message
    assert "FULLY_CONNECTED x2 (More than one subgraph is not supported)" in message
    assert "LeakyReLU -> ReLU" in message and "smaller input size" in message
    _, log = edgetpu.compile_model(good[1], compiler=compiler, min_tpu_fraction=0.2)
    assert log.ops_on_cpu == 8


def test_a_failing_compiler_gives_its_error_line_and_the_cause(good, tmp_path):
    compiler = fake_compiler(tmp_path, "fail", "Edge TPU Compiler version 16.0.384591198")
    with pytest.raises(ConversionError) as info:
        edgetpu.compile_model(good[1], compiler=compiler, min_tpu_fraction=0.5)
    message = str(info.value)
    assert message.startswith("edgetpu_compiler failed (exit 1): ERROR: Attempting to use a delegate")
    assert "fixed input shape" in message
    assert isinstance(info.value.__cause__, subprocess.CalledProcessError)


def test_a_compiler_that_writes_no_model_is_an_error(good, tmp_path):
    compiler = fake_compiler(tmp_path, "silent", "Edge TPU Compiler version 16.0.384591198")
    with pytest.raises(ConversionError, match="wrote no model_edgetpu.tflite"):
        edgetpu.compile_model(good[1], compiler=compiler, min_tpu_fraction=0.5)


def test_a_hanging_compiler_is_stopped_at_the_timeout(good, tmp_path):
    compiler = fake_compiler(tmp_path, "hang")
    started = time.monotonic()
    with pytest.raises(ConversionError, match="did not finish within 1 s") as info:
        edgetpu.compile_model(good[1], compiler=compiler, min_tpu_fraction=0.5, timeout=1)
    assert time.monotonic() - started < 30
    assert isinstance(info.value.__cause__, subprocess.TimeoutExpired)
    pid = int((tmp_path / "fake.pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_compile_options_are_checked_first(good, tmp_path):
    with pytest.raises(ConfigError, match="min_tpu_fraction"):
        edgetpu.compile_model(good[1], compiler="edgetpu_compiler", min_tpu_fraction=1.5)
    with pytest.raises(ConversionError, match="cannot run"):
        edgetpu.compile_model(good[1], compiler=str(tmp_path / "missing"), min_tpu_fraction=0.5)


# --- device engine -----------------------------------------------------------------------------


def test_without_libedgetpu_the_engine_says_what_to_install(good):
    with pytest.raises(EngineError) as info:
        EdgeTPUEngine(good[1])
    message = str(info.value)
    assert "libedgetpu.so.1" in message and "apt-get install libedgetpu1-std" in message
    assert "\n" not in message


def test_a_missing_device_is_reported_as_such(monkeypatch):
    import edge_sdk.backends.edgetpu as backend

    with pytest.raises(EngineError, match="not a TFLite delegate"):
        load_edgetpu_delegate(library="libc.so.6")

    # FAKE libedgetpu with no stick plugged in: the library loads, and its
    # tflite_plugin_create_delegate returns no delegate and no message (LiteRT raises ValueError).
    def no_device(library, options):
        assert options == {"device": "usb:0"}
        raise ValueError("")

    libedgetpu = SimpleNamespace(tflite_plugin_create_delegate=None)
    monkeypatch.setattr(backend, "_open_library", lambda name: libedgetpu)
    monkeypatch.setattr(backend, "_load_delegate_function", lambda: no_device)
    with pytest.raises(EngineError, match="no Edge TPU found at usb:0: plug in the Coral USB Accelerator"):
        load_edgetpu_delegate(device="usb:0")
    with pytest.raises(ConfigError, match="device must be"):
        EdgeTPUEngine(b"", device="usb0")


def test_the_opt_in_cpu_fallback_runs_the_edge_tpu_ready_model(good):
    content = good[1]
    engine = EdgeTPUEngine(content, cpu_fallback=True)
    assert engine.fallback and "libedgetpu" in engine.fallback_reason
    reference = LiteRTEngine(content)
    assert engine.input_specs() == reference.input_specs()
    assert engine.output_specs()[0]["dtype"] == np.uint8
    x = np.random.default_rng(1).integers(0, 256, size=(1, SIZE, SIZE, 3), dtype=np.uint8)
    np.testing.assert_array_equal(engine.run([x])[0], reference.run([x])[0])
    with pytest.raises(EngineError, match=r"must have shape \(1, 16, 16, 3\)"):
        engine.run([np.zeros((2, SIZE, SIZE, 3), np.uint8)])


def test_the_fallback_cannot_run_a_compiled_model_but_runs_the_ready_one_given_beside_it(good):
    compiled = good[1] + b"edgetpu-custom-op"  # stands in for model_edgetpu.tflite's custom op
    with pytest.raises(EngineError, match="compiled for the Edge TPU: pass the Edge-TPU-ready model.tflite"):
        EdgeTPUEngine(compiled, cpu_fallback=True)
    assert EdgeTPUEngine(compiled, cpu_fallback=True, cpu_model=good[1]).fallback


def test_the_edge_tpu_engine_never_imports_tensorflow(good, tmp_path):
    model = tmp_path / "model.tflite"
    model.write_bytes(good[1])
    script = textwrap.dedent(
        """
        import json, sys
        import numpy as np
        from edge_sdk.backends.edgetpu import EdgeTPUEngine
        engine = EdgeTPUEngine(sys.argv[1], cpu_fallback=True)
        engine.run([np.zeros((1, 16, 16, 3), np.uint8)])
        print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras"))))
        """
    )
    result = subprocess.run([sys.executable, "-c", script, str(model)], capture_output=True, text=True, check=True)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_a_detectors_cpu_tail_does_not_count_against_the_tpu_share():
    from edge_sdk.converters.edgetpu import CompilerLog, TPUShareError, _check_fraction

    log = CompilerLog(version="16.0", ops_on_tpu=13, ops_on_cpu=21, placement=())
    _check_fraction(log, 1.0, cpu_ops=21)  # every op but the float decode is on the Edge TPU
    with pytest.raises(TPUShareError, match="13 of 34 ops"):
        _check_fraction(log, 1.0, cpu_ops=20)  # one more op fell to the CPU than the decode
