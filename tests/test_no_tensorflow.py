"""Architecture: the device runtime, the bundle format and the CLI never load TensorFlow.

Runs in a fresh interpreter, because this test process may already have imported anything.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from support.bundles import BUNDLE_NAME, make_bundle


FORBIDDEN = ["tensorflow", "tf_keras", "keras", "tensorflow_model_optimization", "nncf"]

SCRIPT = textwrap.dedent(
    """
    import contextlib, io, json, sys

    import edge_sdk
    import edge_sdk.cli
    import edge_sdk.bundle
    import edge_sdk.backends
    import edge_sdk.backends.litert
    import edge_sdk.backends.worker  # what the engine's child process runs under watchdog.isolate
    import edge_sdk.pipeline
    import edge_sdk.converters  # lazy: must not pull TensorFlow in until a conversion starts
    import edge_sdk.demo.broker, edge_sdk.demo.run  # the demo converts lazily, inside its functions
    import edge_sdk.samples.detector, edge_sdk.samples.digits, edge_sdk.samples.shapes  # TensorFlow only when a model is built

    forbidden = json.loads(sys.argv[2])

    def loaded():
        return sorted(m for m in sys.modules if m.split(".")[0] in forbidden)

    steps = {"imports": loaded()}

    bundle = edge_sdk.bundle.open_bundle(sys.argv[1])
    steps["open_bundle"] = loaded()

    # The engine lookup a device does before running a bundle (the interpreter class, not a model).
    edge_sdk.backends.engine_class(bundle.manifest.target.value)
    edge_sdk.backends.litert.load_interpreter_class()
    steps["engine"] = loaded()

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc_list = edge_sdk.cli.main(["profiles", "list"])
        rc_inspect = edge_sdk.cli.main(["inspect", sys.argv[1]])
    steps["cli"] = loaded()

    print(json.dumps({
        "steps": steps,
        "name": bundle.manifest.name,
        "rc": [rc_list, rc_inspect],
        "cli_output": out.getvalue(),
        "converters_exports": sorted(edge_sdk.converters.__all__),
    }))
    """
)


def test_runtime_bundle_and_cli_never_import_tensorflow(tmp_path):
    bundle = tmp_path / "bundle"
    make_bundle(bundle)

    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(bundle), json.dumps(FORBIDDEN)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])

    # The script really did the work (so an empty module list is not an accident).
    assert result["name"] == BUNDLE_NAME
    assert result["rc"] == [0, 0]
    assert "rpi4" in result["cli_output"] and BUNDLE_NAME in result["cli_output"]
    assert result["converters_exports"] == ["ConversionResult", "convert"]

    for step, modules in result["steps"].items():
        assert modules == [], f"after {step}, these modules were imported: {modules}"


ONNX_SCRIPT = textwrap.dedent(
    """
    import json, sys

    import numpy as np

    from edge_sdk.config import RunConfig
    from edge_sdk.pipeline import open_pipeline

    forbidden = json.loads(sys.argv[2])
    pipeline = open_pipeline(sys.argv[1], config=RunConfig(threshold=0.0))
    frame = np.random.default_rng(0).integers(0, 256, size=(240, 320, 3), dtype=np.uint8)
    result = pipeline.infer(frame)
    print(json.dumps({
        "loaded": sorted(m for m in sys.modules if m.split(".")[0] in forbidden),
        "onnxruntime": "onnxruntime" in sys.modules,
        "provider": pipeline.engine.provider,
        "detections": len(result.detections),
    }))
    """
)


def test_running_an_onnx_runtime_bundle_never_imports_tensorflow(tmp_path):
    from support.models import onnx_detectors

    from edge_sdk.converters import convert

    model = onnx_detectors.yolov8_onnx_of_shipped_detector(tmp_path / "v8.onnx")
    convert(model, profile="x86-onnx", out=tmp_path / "bundle", precision="fp32")
    proc = subprocess.run(
        [sys.executable, "-c", ONNX_SCRIPT, str(tmp_path / "bundle"), json.dumps(FORBIDDEN + ["openvino"])],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["onnxruntime"] and result["provider"] == "CPUExecutionProvider"
    assert result["detections"] > 0  # it really ran (threshold 0)
    assert result["loaded"] == [], f"running an onnx bundle imported {result['loaded']}"
