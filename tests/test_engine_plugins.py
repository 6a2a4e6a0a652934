"""Engine plugins: a real installed package (a ``.dist-info`` with ``entry_points.txt`` on PYTHONPATH)
registering engines under ``edge_sdk.engines``: the README's example plugin found through its entry
point and run end to end to a real Mosquitto, and broken plugins (an import error, a missing
method, an exception in open) each refused with one line naming it and exit code 2."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from support import child_env, wait
from support.subscriber import Subscriber

from edge_sdk.samples import shapes

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "engine_plugin"

BROKEN = textwrap.dedent(
    """
    class NoRun:
        consumes = "onnx"

        def __init__(self, model_path, *, threads=None, options):
            pass

        def input_specs(self):
            return []

        def output_specs(self):
            return []

        def close(self):
            pass


    class FailsOpen(NoRun):
        def __init__(self, model_path, *, threads=None, options):
            raise RuntimeError("no accelerator answered on /dev/hailo0")

        def run(self, inputs):
            return []
    """
)

ENTRY_POINTS = """[edge_sdk.engines]
example = edge_sdk_example_engine:ExampleEngine
no-run = broken_engines:NoRun
fails-open = broken_engines:FailsOpen
broken-import = broken_import_engine:Engine
"""


@pytest.fixture(scope="session")
def plugin_path(tmp_path_factory) -> Path:
    """A site folder holding the example plugin and three broken ones, installed as one distribution."""
    site = tmp_path_factory.mktemp("plugin-site")
    shutil.copy(EXAMPLE / "edge_sdk_example_engine.py", site)
    (site / "broken_engines.py").write_text(BROKEN)
    (site / "broken_import_engine.py").write_text('raise ImportError("libhailort.so.4.18: cannot open shared object file")\n')
    info = site / "edge_sdk_test_engines-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: edge-sdk-test-engines\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    (info / "top_level.txt").write_text("edge_sdk_example_engine\nbroken_engines\nbroken_import_engine\n")
    return site


@pytest.fixture(scope="session")
def plugin_bundle(plugin_path, tmp_path_factory) -> dict:
    """The YOLOv8-layout detector converted for a board whose engine is the example plugin."""
    from support.models import onnx_detectors

    from edge_sdk.converters import convert

    root = tmp_path_factory.mktemp("plugin-bundle")
    profile = yaml.safe_load((EXAMPLE / "plugin-board.yaml").read_text())
    profile["engine_options"] = {"trace": str(root / "trace.txt")}
    (root / "board.yaml").write_text(yaml.safe_dump(profile))
    model = onnx_detectors.yolov8_onnx_of_shipped_detector(root / "v8.onnx")
    (root / "labels.txt").write_text("\n".join(shapes.CLASSES) + "\n")
    sys.path.insert(0, str(plugin_path))  # the converter asks the plugin which format it reads
    try:
        result = convert(model, profile=root / "board.yaml", out=root / "bundle", name="shapes-plugin",
                         labels=root / "labels.txt")
    finally:
        sys.path.remove(str(plugin_path))
    return {"root": root, "bundle": result.bundle, "trace": root / "trace.txt"}


def _env(plugin_path: Path) -> dict:
    env = child_env()
    env["PYTHONPATH"] = os.pathsep.join([str(plugin_path), env["PYTHONPATH"]])
    return env


def _cli(args: list[str], env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_sdk.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_the_bundle_names_the_plugin_and_carries_the_format_it_reads(plugin_bundle):
    manifest = plugin_bundle["bundle"].manifest
    assert manifest.target.value == "plugin" and manifest.profile.engine == "example"
    assert manifest.model_file == "model.onnx" and manifest.decoder.kind == "yolo"


def test_example_plugin_runs_a_bundle_end_to_end_to_mqtt(plugin_bundle, plugin_path, mosquitto, tmp_path):
    video = tmp_path / "shapes.avi"
    shapes.moving_video(video, frames=40, fps=15.0, objects=3)
    subscriber = Subscriber(mosquitto.port, "edge/plug-1/#")
    try:
        proc = _cli(["run", str(plugin_bundle["bundle"].path), "--source", str(video), "--max-frames", "30",
                     "--broker", mosquitto.url, "--device-id", "plug-1", "--threshold", "0.3"], _env(plugin_path))
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert wait(lambda: len(subscriber.payloads("/detections")) >= 30, 30), "not every frame reached the broker"
        frames = subscriber.payloads("/detections")
        info = subscriber.payloads("/info")
    finally:
        subscriber.close()
    labels = {d["label"] for body in frames for d in body["detections"]}
    assert labels and labels <= set(shapes.CLASSES), labels
    assert info and info[-1]["model"]["target"] == "plugin"
    assert info[-1]["engine"]["name"] == "ExampleEngine"  # the fleet sees which engine runs the model
    assert plugin_bundle["trace"].read_text().splitlines()[-1] == "opened model.onnx"  # the plugin, not a built-in engine


def test_doctor_lists_plugins_and_refuses_broken_ones_with_one_line(plugin_path):
    env = _env(plugin_path)
    proc = _cli(["doctor"], env)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr
    assert "engine plugin example" in proc.stdout and "reads onnx" in proc.stdout
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "engine plugin 'broken-import'" in err[0] and "libhailort" in err[0], err


@pytest.mark.parametrize("name, reason", [
    ("broken-import", "cannot be imported: ImportError: libhailort"),
    ("no-run", "lacks the engine method(s) run"),
    ("fails-open", "failed to open model.onnx: RuntimeError: no accelerator answered"),
    ("not-installed", "is not installed"),
])
def test_a_broken_plugin_stops_the_run_with_one_line_naming_it(plugin_bundle, plugin_path, tmp_path, name, reason):
    folder = tmp_path / "bundle"
    shutil.copytree(plugin_bundle["bundle"].path, folder)
    manifest = json.loads((folder / "edge-bundle.json").read_text())
    manifest["profile"]["engine"] = name
    (folder / "edge-bundle.json").write_text(json.dumps(manifest))
    proc = _cli(["run", str(folder), "--source", str(tmp_path), "--max-frames", "1"], _env(plugin_path))
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1, proc.stderr[-3000:]
    assert f"engine plugin '{name}'" in err[0] and reason in err[0], err[0]
    assert "Traceback" not in proc.stderr
