"""Bad input to `edge-sdk convert`: one line naming the problem, exit code 2, --out untouched."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import snapshot
from edge_sdk.cli import main

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
}


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
