"""Bad input to `edge-sdk convert`: one line naming the problem, exit code 2, --out untouched."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge_sdk.cli import main
from support import snapshot

pytestmark = pytest.mark.slow


def _non_image_model(tmp_path: Path) -> Path:
    from edge_sdk.converters import _tf

    keras = _tf.keras3()
    inp = keras.Input((10,))
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(inp))
    path = tmp_path / "tabular.keras"
    model.save(path)
    return path


CASES = {
    "missing model": lambda t, d, m: (["convert", str(t / "nope.keras")], "does not exist"),
    "corrupt model": lambda t, d, m: (["convert", str(_write(t / "bad.keras", b"not a zip"))], "not a valid .keras"),
    "corrupt h5": lambda t, d, m: (["convert", str(_write(t / "bad.h5", b"\x89HDF garbage"))], "HDF5"),
    "wrong suffix": lambda t, d, m: (["convert", str(_write(t / "model.pt", b"x"))], ".keras, .h5"),
    "corrupt onnx": lambda t, d, m: (["convert", str(_write(t / "model.onnx", b"x")), "--profile", "intel-cpu"], "not a readable ONNX"),
    "corrupt tflite": lambda t, d, m: (["convert", str(_write(t / "model.tflite", b"x")), "--profile", "intel-cpu"], "not a valid .tflite"),
    "float tflite asked for int8": lambda t, d, m: (["convert", str(_float_tflite(t, m)), "--profile", "rpi4", "--precision", "int8"], "cannot be re-quantized to int8"),
    "float tflite for the Edge TPU": lambda t, d, m: (["convert", str(_float_tflite(t, m)), "--profile", "coral-usb", "--no-compile"], "bring its Keras, SavedModel or ONNX source, or a full-integer .tflite"),
    "non-image model": lambda t, d, m: (["convert", str(_non_image_model(t))], "not an image batch"),
    "unknown profile": lambda t, d, m: (["convert", str(m), "--profile", "toaster"], "unknown profile 'toaster'"),
    "sparsity too big": lambda t, d, m: (["convert", str(m), "--prune", "1.5", "--train", str(d["train"])], "--prune must be in [0, 1)"),
    "prune without train": lambda t, d, m: (["convert", str(m), "--prune", "0.5"], "--prune needs --train"),
    "empty calib": lambda t, d, m: (["convert", str(m), "--calib", str(_mkdir(t / "empty"))], "holds no images"),
    "non-image calib": lambda t, d, m: (["convert", str(m), "--calib", str(_textfolder(t / "txt"))], "holds no images"),
    "corrupt calib image": lambda t, d, m: (["convert", str(m), "--calib", str(_corrupt_images(t / "cc")), "--min-calib", "1"], "not a readable image"),
    "too few calib images": lambda t, d, m: (["convert", str(m), "--calib", str(_few_images(t / "few"))], "at least 50"),
    "missing val": lambda t, d, m: (["convert", str(m), "--val", str(t / "noval")], "does not exist"),
    "val without class folders": lambda t, d, m: (["convert", str(m), "--val", str(d["calib"])], "no class sub-folders"),
    "bad precision": lambda t, d, m: (["convert", str(m), "--precision", "int4"], "--precision must be one of"),
    "labels count mismatch": lambda t, d, m: (["convert", str(m), "--labels", str(_write(t / "l.txt", b"a\nb\n")), "--precision", "fp32"], "labels name 2"),
    "onnx op nothing converts": lambda t, d, m: (["convert", str(_onnx_with_op(t / "op.onnx")), "--profile", "intel-cpu"], "no conversion for op com.example.FancyOp at node 'fancy'"),
    "dynamic onnx without --imgsz": lambda t, d, m: (["convert", str(_dynamic_onnx(t)), "--profile", "intel-cpu"], "dynamic input size [?, 3, ?, ?]; give its size with --imgsz"),
    "bad --imgsz": lambda t, d, m: (["convert", str(m), "--imgsz", "big"], "--imgsz must be a size like 640"),
    "outputs matching no head": lambda t, d, m: (["convert", str(_custom_onnx(t)), "--profile", "intel-cpu", "--precision", "fp16"], "match no known head"),
    "unimportable plugin decoder": lambda t, d, m: (["convert", str(_custom_onnx(t)), "--profile", "intel-cpu", "--decoder", "plugin:nowhere:decode"], "plugin decoder nowhere:decode cannot be imported"),
}


def _onnx_with_op(path: Path, op: str = "FancyOp", domain: str = "com.example") -> Path:
    """A small NCHW classifier with one node whose op no converter knows."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("Conv", ["images", "w"], ["c"], pads=[1, 1, 1, 1], name="conv0"),
        helper.make_node(op, ["c"], ["y"], name="fancy", domain=domain),
        helper.make_node("GlobalAveragePool", ["y"], ["p"]),
        helper.make_node("Flatten", ["p"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(domain, 1)]), path)
    return path


def _dynamic_onnx(tmp_path: Path) -> Path:
    from support.models import onnx_detectors

    return onnx_detectors.yolov8_onnx_of_shipped_detector(tmp_path / "dynamic.onnx", dynamic=True)


def _custom_onnx(tmp_path: Path) -> Path:
    from support.models import onnx_detectors

    return onnx_detectors.custom_two_output_onnx(tmp_path / "custom.onnx")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _textfolder(path: Path) -> Path:
    path.mkdir()
    (path / "notes.txt").write_text("hello")
    return path


def _corrupt_images(path: Path) -> Path:
    path.mkdir()
    (path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but then nothing")
    return path


def _few_images(path: Path) -> Path:
    import cv2
    import numpy as np

    path.mkdir()
    for i in range(3):
        cv2.imwrite(str(path / f"{i}.png"), np.full((8, 8, 3), i * 40, np.uint8))
    return path


# Every case with no --out folder yet; a few also with a user's folder in the way of --out.
PARAMS = [(case, "absent") for case in sorted(CASES)] + [
    (case, "foreign") for case in ("missing model", "unknown profile", "corrupt calib image")
]


@pytest.mark.parametrize(("case", "out_state"), PARAMS)
def test_bad_input_is_one_line_exit_2_and_out_untouched(case, out_state, keras3_model, digits, tmp_path, capsys):
    out = tmp_path / "out"
    if out_state == "foreign":
        out.mkdir()
        (out / "precious.txt").write_text("user data")
    before = snapshot(out)
    args, expected = CASES[case](tmp_path, digits, keras3_model)
    if "--profile" not in args:
        args += ["--profile", "x86-cpu"]
    if out_state == "foreign" and case != "unknown profile":
        expected = "not an edge-sdk bundle"
    rc = main(args + ["--out", str(out)] + (["--calib", str(digits["calib"])] if "--calib" not in args else []))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1, err
    assert err[0].startswith("edge-sdk: error: ")
    assert expected in err[0]
    assert snapshot(out) == before
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []


def test_console_script_prints_no_traceback(tmp_path):
    """The installed `edge-sdk` command, in its own process, on a model that does not exist."""
    proc = subprocess.run(
        [sys.executable, "-m", "edge_sdk.cli", "convert", str(tmp_path / "missing.keras"), "--profile", "rpi4",
         "--precision", "fp32", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"edge-sdk: error: model {tmp_path / 'missing.keras'} does not exist"]
    assert not (tmp_path / "out").exists()


def test_cli_convert_prints_the_report(keras3_model, digits, tmp_path, capsys):
    rc = main(["convert", str(keras3_model), "--profile", "rpi5", "--out", str(tmp_path / "b"),
               "--calib", str(digits["calib"]), "--val", str(digits["val"])])
    out = capsys.readouterr().out
    assert rc == 0
    assert "Conversion report" in out and "top-1 agreement" in out and "bundle written to" in out
    rc = main(["inspect", str(tmp_path / "b")])
    assert rc == 0
    assert "every file matches its sha256" in capsys.readouterr().out


def _float_tflite(tmp_path: Path, keras_model: Path) -> Path:
    from edge_sdk.converters import models
    from edge_sdk.preprocess import Preprocessing

    source = models.load_model(keras_model)
    path = tmp_path / "float.tflite"
    path.write_bytes(models.float_tflite(source, Preprocessing(width=32, height=32, channels=3)))
    return path
