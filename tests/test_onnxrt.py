"""The onnx target on ONNX Runtime's CPU provider: the YOLOv8-layout detector in fp32, fp16 and int8
QDQ, decoded by the runtime exactly as a raw ``InferenceSession.run`` decodes, int8 within both
budgets, and the provider rules (a missing GPU provider refuses to start unless CPU fallback is
allowed)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from edge_sdk.backends.onnxrt import CPU, ONNXRuntimeEngine, choose_providers
from edge_sdk.cli import main
from edge_sdk.config import RunConfig
from edge_sdk.errors import EngineError, ProfileError
from edge_sdk.profiles import load_profile, parse_profile
from edge_sdk.samples import shapes


@pytest.fixture(scope="session")
def onnx_detector(tmp_path_factory) -> dict:
    """The shipped detector as a YOLOv8-layout ONNX file, rendered scenes, and its fp32 and int8 onnx bundles."""
    from support.models import onnx_detectors

    from edge_sdk.converters import convert

    root = tmp_path_factory.mktemp("onnxrt")
    model = onnx_detectors.yolov8_onnx_of_shipped_detector(root / "shapes_v8.onnx")
    val = shapes.write_yolo(root / "val", 80, seed=424242, photos=shapes.HELD_OUT_PHOTOS)
    calib = shapes.write_yolo(root / "calib", 60, seed=1, photos=shapes.TRAIN_PHOTOS)
    fp32 = convert(model, profile="x86-onnx", out=root / "fp32", precision="fp32", name="shapes-onnx")
    int8 = convert(model, profile="x86-onnx", out=root / "int8", calib=calib, val=val, min_calib=50, name="shapes-onnx")
    return {"root": root, "model": model, "val": val, "calib": calib, "fp32": fp32, "int8": int8}


def _frames(val: Path, count: int) -> list[np.ndarray]:
    return [cv2.imread(str(p)) for p in sorted((val / "images").glob("*.png"))[:count]]


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_runtime_detections_equal_a_raw_session_run_decoded(onnx_detector, precision):
    import onnxruntime as ort

    from edge_sdk.decoders import DecodeContext, get_decoder
    from edge_sdk.pipeline import open_pipeline
    from edge_sdk.preprocess import preprocess

    bundle = onnx_detector[precision].bundle
    manifest = bundle.manifest
    assert manifest.target.value == "onnx" and manifest.model_file == "model.onnx"
    pipeline = open_pipeline(bundle.path, config=RunConfig(threshold=0.25))
    assert pipeline.engine.provider == CPU
    session = ort.InferenceSession(str(bundle.model_path), providers=[CPU])
    decode = get_decoder(manifest.decoder.kind)
    found = 0
    for frame in _frames(onnx_detector["val"], 12):
        ours = pipeline.infer(frame).detections
        x, placement = preprocess(frame, manifest.preprocessing)
        raw = session.run(None, {session.get_inputs()[0].name: x})
        context = DecodeContext(labels=tuple(bundle.labels()), placement=placement, preprocessing=manifest.preprocessing,
                                score_threshold=0.25, options=dict(manifest.decoder.options))
        reference = tuple(d for d in decode(raw, context) if d.score >= 0.25)
        assert ours == reference
        found += len(ours)
    assert found >= 12, "the detector found almost nothing: the comparison would prove little"


def test_int8_qdq_stays_within_both_budgets_with_the_decode_in_float(onnx_detector):
    result = onnx_detector["int8"]
    accuracy, quantization = result.report.accuracy, result.report.quantization
    print(f"\nonnx int8: mAP@0.5 {100 * accuracy.reference.map50:.2f} -> {100 * accuracy.converted.map50:.2f}, "
          f"mAP@0.5:0.95 {100 * accuracy.reference.map50_95:.2f} -> {100 * accuracy.converted.map50_95:.2f} "
          f"({accuracy.remedy_used}); {result.report.float_bytes} -> {result.report.converted_bytes} bytes")
    assert accuracy.reference.map50_95 > 0.7
    assert accuracy.within_budget and accuracy.drop_points <= 1.0 and accuracy.drop_map50_95_points <= 2.0
    assert quantization.decode == "float" and any(n.startswith("Sigmoid") for n in quantization.float_layers)
    assert result.report.converted_bytes < result.report.float_bytes / 2.5  # int8 weights, really
    import onnx

    ops = {node.op_type for node in onnx.load(str(result.bundle.model_path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_fp16_bundle_keeps_float_io_and_finds_the_same_objects(onnx_detector, tmp_path):
    from edge_sdk.converters import convert
    from edge_sdk.pipeline import open_pipeline

    fp16 = convert(onnx_detector["model"], profile="x86-onnx", out=tmp_path / "fp16", precision="fp16")
    assert fp16.report.converted_bytes < 0.6 * fp16.report.float_bytes
    assert fp16.bundle.manifest.inputs[0].dtype.value == "float32"
    half = open_pipeline(fp16.bundle.path, config=RunConfig(threshold=0.5))
    full = open_pipeline(onnx_detector["fp32"].bundle.path, config=RunConfig(threshold=0.5))
    for frame in _frames(onnx_detector["val"], 4):
        a, b = half.infer(frame).detections, full.infer(frame).detections
        assert [d.class_id for d in a] == [d.class_id for d in b]
        assert all(x.box.iou(y.box) > 0.95 for x, y in zip(a, b))


def test_provider_choice_and_the_missing_gpu_provider_rule():
    assert choose_providers(["CUDAExecutionProvider"], [CPU], allow_cpu_fallback=True) == [CPU]
    assert choose_providers(["CUDAExecutionProvider", CPU], [CPU], allow_cpu_fallback=False) == [CPU]
    assert choose_providers(["TensorrtExecutionProvider", "CUDAExecutionProvider"],
                            ["CUDAExecutionProvider", CPU], allow_cpu_fallback=False) == ["CUDAExecutionProvider", CPU]
    with pytest.raises(EngineError, match="no TensorrtExecutionProvider .*onnxruntime-gpu"):
        choose_providers(["TensorrtExecutionProvider", "CUDAExecutionProvider"], [CPU], allow_cpu_fallback=False)


def _gpu_bundle(onnx_detector, tmp_path) -> Path:
    """The fp32 bundle rewritten for the Jetson GPU profile (TensorRT, then CUDA; no CPU fallback)."""
    import shutil

    folder = tmp_path / "gpu-bundle"
    shutil.copytree(onnx_detector["fp32"].bundle.path, folder)
    manifest = json.loads((folder / "edge-bundle.json").read_text())
    manifest["profile"] = load_profile("jetson-orin-nano-gpu").model_dump(mode="json")
    (folder / "edge-bundle.json").write_text(json.dumps(manifest))
    return folder


def test_missing_gpu_provider_is_one_line_and_exit_2_unless_cpu_fallback(onnx_detector, tmp_path, capsys):
    import onnxruntime as ort

    if "TensorrtExecutionProvider" in ort.get_available_providers():
        pytest.skip("this host has TensorRT: nothing is missing")
    bundle = _gpu_bundle(onnx_detector, tmp_path)
    assert main(["bench", str(bundle), "--frames", "3", "--json"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "TensorrtExecutionProvider" in err and "onnxruntime-gpu" in err
    assert main(["bench", str(bundle), "--frames", "3", "--json", "--cpu-fallback"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["engine"] == "ONNXRuntimeEngine" and result["delegate"].startswith(CPU)
    assert f"onnxruntime {ort.__version__}" in result["delegate"]


def test_engine_uses_the_profile_threads_and_reports_itself(onnx_detector):
    engine = ONNXRuntimeEngine(onnx_detector["fp32"].bundle.model_path, providers=[CPU], threads=1)
    assert engine.threads == 1 and engine.info()["provider"] == CPU
    assert engine._session.get_session_options().intra_op_num_threads == 1
    assert engine.input_specs()[0]["shape"] == [1, 3, 160, 160]
    engine.close()


def test_doctor_lists_onnxruntime_and_the_provider_in_use(onnx_detector):
    import onnxruntime as ort

    from edge_sdk.doctor import diagnose

    checks = {c.name: c for c in diagnose(onnx_detector["fp32"].bundle.path)}
    assert checks["onnxruntime"].ok and checks["onnxruntime"].detail == ort.__version__
    assert CPU in checks["onnxruntime providers"].detail.split(", ")
    assert checks["can run bundle"].ok and checks["can run bundle"].detail.endswith(f"({CPU})")


def test_onnx_profiles_are_validated():
    for name in ("x86-onnx", "jetson-orin-nano-gpu"):
        assert load_profile(name).target.value == "onnx"
    base = yaml.safe_load((Path(__file__).resolve().parents[1] / "device_profiles" / "x86-cpu.yaml").read_text())
    with pytest.raises(ProfileError, match="onnx profiles only"):
        parse_profile({**base, "providers": [CPU]}, source="t")
    with pytest.raises(ProfileError, match="ExecutionProvider"):
        parse_profile({**base, "target": "onnx", "providers": ["cuda"]}, source="t")
    with pytest.raises(ProfileError, match="'providers' does not list"):
        parse_profile({**base, "target": "onnx", "providers": [CPU], "provider_options": {"CUDAExecutionProvider": {}}}, source="t")
    with pytest.raises(ProfileError, match="names its engine"):
        parse_profile({**base, "target": "plugin"}, source="t")


def test_a_keras_source_for_the_onnx_target_is_one_line(tmp_path, capsys):
    from edge_sdk.converters.assets import DETECTOR

    rc = main(["convert", str(DETECTOR), "--profile", "x86-onnx", "--out", str(tmp_path / "b"), "--precision", "fp32"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "onnx target takes .onnx models" in err, err
    assert not (tmp_path / "b").exists()
