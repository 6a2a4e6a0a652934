"""int8 detection that keeps its boxes: the shipped detector converted for each target family stays
within both budgets (mAP@0.5 and mAP@0.5:0.95), and the budget judges detectors on both figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_sdk.converters import convert
from edge_sdk.samples import shapes
from edge_sdk.converters.assets import DETECTOR
from edge_sdk.converters.targets import Attempt, Job, TargetOptions, best
from edge_sdk.report import Metrics

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("int8det")
    return {
        "val": shapes.write_yolo(root / "val", 150, seed=424242, photos=shapes.HELD_OUT_PHOTOS),
        "calib": shapes.write_yolo(root / "calib", 100, seed=1, photos=shapes.TRAIN_PHOTOS),
    }


@pytest.mark.timeout(300)
@pytest.mark.parametrize("profile, decode", [("rpi5", "float"), ("coral-usb", "host"), ("intel-cpu", "float")])
def test_shipped_detector_int8_keeps_both_map_figures(scenes, tmp_path, profile, decode):
    result = convert(DETECTOR, profile=profile, out=tmp_path / "b", calib=scenes["calib"], val=scenes["val"],
                     compile=False, min_calib=50)
    accuracy, quantization = result.report.accuracy, result.report.quantization
    assert accuracy.reference.map50_95 > 0.7  # a detector worth keeping the boxes of
    assert accuracy.drop_points <= 1.0 and accuracy.drop_map50_95_points <= 2.0, accuracy
    assert accuracy.within_budget and accuracy.max_drop_map50_95 == 2.0
    assert quantization.decode == decode
    assert all(r.map50_95 is not None for r in accuracy.remedies if r.top1 is not None)
    manifest = result.bundle.manifest
    if decode == "host":
        # Full-integer: nothing in float, and the bundle's decoder finishes the head on the host.
        assert not quantization.float_ops
        assert result.report.edgetpu.precheck_passed
        assert {"grid", "anchor_w", "anchor_h"} <= set(manifest.decoder.options)
        _runtime_finds_the_truth(tmp_path / "b", scenes["val"])
    else:
        assert quantization.float_layers, "the report names the decode tensors kept in float"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("profile, decode", [("rpi5", "float"), ("coral-usb", "cpu"), ("intel-cpu", "float")])
def test_yolov8_layout_onnx_of_the_shipped_detector_int8_keeps_both_map_figures(scenes, tmp_path, profile, decode):
    """The PyTorch/Ultralytics form of the same network (NCHW, [1, 4+C, N], pixel boxes), for every target."""
    from support.models import onnx_detectors

    path = onnx_detectors.yolov8_onnx_of_shipped_detector(tmp_path / "shapes_v8.onnx")
    result = convert(path, profile=profile, out=tmp_path / "b", calib=scenes["calib"], val=scenes["val"],
                     compile=False, min_calib=50)
    accuracy, quantization = result.report.accuracy, result.report.quantization
    assert result.report.source_format == "onnx" and result.report.head == "yolo v8"
    assert accuracy.reference.map50_95 > 0.7
    assert accuracy.drop_points <= 1.0 and accuracy.drop_map50_95_points <= 2.0, accuracy
    assert accuracy.within_budget and quantization.decode == decode
    if profile == "coral-usb":
        # Full-integer up to the decode, which the Edge TPU leaves to the CPU; nothing float before it,
        # and no TRANSPOSE (onnx2tf's NCHW legacy) in front of the Edge TPU part.
        from edge_sdk.backends.litert import LiteRTEngine

        ops = [op["op_name"] for op in LiteRTEngine(result.bundle.path / "model.tflite").ops() if op["op_name"] != "DELEGATE"]
        body = ops[: ops.index("DEQUANTIZE")]
        assert "TRANSPOSE" not in body and not any(op.startswith("Flex") for op in ops)
        assert result.report.edgetpu.precheck_passed
        assert any(issue.rule == "cpu-tail" for issue in result.report.edgetpu.precheck)
        _runtime_finds_the_truth(tmp_path / "b", scenes["val"])


def _runtime_finds_the_truth(bundle: Path, val: Path) -> None:
    """The device runtime, reading only the bundle, puts its best box on a true object."""
    import cv2

    from edge_sdk.config import RunConfig
    from edge_sdk.converters.detection_eval import iou_matrix
    from edge_sdk.pipeline import open_pipeline

    pipeline = open_pipeline(bundle, config=RunConfig(cpu_fallback=True))  # CI has no Edge TPU
    image_path = sorted((val / "images").glob("*.png"))[0]
    frame = cv2.imread(str(image_path))
    height, width = frame.shape[:2]
    detections = pipeline.infer(frame).detections
    assert detections
    top = max(detections, key=lambda d: d.score)
    truth = np.loadtxt(val / "labels" / f"{image_path.stem}.txt", ndmin=2)
    boxes = np.stack([(truth[:, 1] - truth[:, 3] / 2) * width, (truth[:, 2] - truth[:, 4] / 2) * height,
                      (truth[:, 1] + truth[:, 3] / 2) * width, (truth[:, 2] + truth[:, 4] / 2) * height], axis=1)
    found = np.array([[top.box.x1 * width, top.box.y1 * height, top.box.x2 * width, top.box.y2 * height]])
    ious = iou_matrix(found, boxes)[0]
    assert ious.max() > 0.7 and int(truth[int(np.argmax(ious)), 0]) == top.class_id


def _job(**kw) -> Job:
    base = dict(source=None, float_tflite=None, spec=None, device=None, precision=None, calib_set=None,
                calib_path=None, calib_limit=200, min_calib=50, val_set=None, reference_score=0.97, max_drop=1.0,
                per_channel=True, options=TargetOptions(), reference_map50_95=0.85)
    return Job(**{**base, **kw})


def test_within_map50_but_outside_map50_95_is_not_within_budget():
    job = _job()
    boxy = Attempt("baseline", model=object(), metrics=Metrics(map50=0.965, map50_95=0.60))  # the int8-decode failure
    good = Attempt("float-decode", model=object(), metrics=Metrics(map50=0.962, map50_95=0.845))
    assert 100 * (job.reference_score - boxy.metrics.score) <= job.max_drop  # mAP@0.5 alone would accept it
    assert not job.within_budget(boxy)
    assert job.within_budget(good)
    assert best([boxy, good], job) is good  # within both budgets beats a higher mAP@0.5
    assert best([boxy, good]) is boxy  # (the headline-only order, for comparison)
    fields = job.budget_fields(boxy)
    assert fields["within_budget"] is False and fields["drop_map50_95_points"] == pytest.approx(25.0)
    assert _job(max_drop_map50_95=30.0).within_budget(boxy)
    # A classifier has no second figure: only its top-1 drop counts.
    clf = _job(reference_map50_95=None, reference_score=0.9)
    assert clf.within_budget(Attempt("baseline", model=object(), metrics=Metrics(top1=0.895)))
    assert clf.budget_fields(Attempt("b", model=object(), metrics=Metrics(top1=0.895)))["max_drop_map50_95"] is None


def test_host_grid_decode_matches_the_float_graph():
    from edge_sdk.converters import headsplit, models
    from edge_sdk.samples import detector

    source = models.load_model(DETECTOR)
    images = np.random.default_rng(0).random((4, detector.INPUT_SIZE, detector.INPUT_SIZE, 3), dtype=np.float32)
    split = headsplit.find(source, images)
    assert split is not None and split.options["grid"] == detector.grid()
    assert split.options["anchor_w"] == pytest.approx(detector.ANCHOR, rel=1e-4)
    from edge_sdk.decoders.yolo import grid_decode

    body = np.asarray(split.source.model(images[:1], training=False))
    decoded = grid_decode(body[0], anchor_w=split.options["anchor_w"], anchor_h=split.options["anchor_h"])
    np.testing.assert_allclose(decoded, source.predict(images[:1])[0][0], atol=1e-5)


def test_grid_option_of_the_yolo_decoder():
    from edge_sdk.decoders import DecodeContext, yolo
    from edge_sdk.errors import ConfigError, ModelError
    from edge_sdk.preprocess import Placement, Preprocessing

    spec = Preprocessing(width=160, height=160, channels=3)
    sigmoids = np.full((1, 4, 4, 6), 0.01, dtype=np.float32)  # a 4x4 grid, one class
    sigmoids[0, 2, 1] = [0.5, 0.25, 0.5, 0.25, 0.9, 0.95]  # row 2, col 1

    def context(**options):
        return DecodeContext(labels=("thing",), placement=Placement(160, 160, 1.0, 1.0), preprocessing=spec,
                             options={"layout": "v5", "normalized": True, **options})

    (found,) = yolo.decode([sigmoids], context(grid=4, anchor_w=0.2, anchor_h=0.4))
    # cx = (1 + 2·0.5 − 0.5)/4, cy = (2 + 2·0.25 − 0.5)/4, w = 0.2·(2·0.5)², h = 0.4·(2·0.25)²
    cx, cy, w, h = 1.5 / 4, 2.0 / 4, 0.2, 0.1
    assert (found.box.x1, found.box.y1, found.box.x2, found.box.y2) == pytest.approx(
        (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), abs=1e-6)
    assert found.score == pytest.approx(0.9 * 0.95, abs=1e-6)
    with pytest.raises(ConfigError, match="anchor_w"):
        yolo.decode([sigmoids], context(grid=4))
    with pytest.raises(ModelError, match="grid=5"):
        yolo.decode([sigmoids], context(grid=5, anchor_w=0.2, anchor_h=0.2))


def test_decode_tail_is_found_from_the_graph():
    from edge_sdk.backends.litert import LiteRTEngine
    from edge_sdk.converters import models, tflite
    from edge_sdk.preprocess import Preprocessing

    source = models.load_model(DETECTOR)
    content = models.float_tflite(source, Preprocessing(width=160, height=160, channels=3))
    tail = set(tflite.decode_tail(content))
    engine = LiteRTEngine(content)
    names = {t["index"]: t["name"] for t in engine.tensor_details()}
    interpreter = tflite._activations(content)
    kinds = {names[int(o)]: op["op_name"] for op in interpreter._get_ops_details() if op["op_name"] != "DELEGATE"
             for o in op["outputs"]}
    assert {kinds[name] for name in tail} == {"LOGISTIC", "MUL", "CONCATENATION", "SUB", "RESHAPE"}
    assert not any(kinds[name] == "CONV_2D" for name in tail)
    assert engine.output_specs()[0]["name"] in tail


def test_openvino_decode_tail_treats_a_bin_expectation_as_decode(tmp_path):
    """YOLOv8's DFL (softmax over bins, then a fixed 0..n-1 1x1 convolution) is decode, not a learned layer."""
    import openvino as ov

    from edge_sdk.converters import _tf, openvino as ovt

    keras = _tf.keras3()
    image = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="body")(image)
    bins = keras.layers.Conv2D(16, 1, name="head")(x)
    probs = keras.layers.Softmax(axis=-1, name="bins")(bins)
    expectation = keras.layers.Conv2D(1, 1, use_bias=False, trainable=False, name="dfl")
    out = expectation(probs)
    expectation.set_weights([np.arange(16, dtype=np.float32).reshape(1, 1, 16, 1)])
    model = keras.Model(image, keras.layers.Reshape((256, 1))(out))
    path = tmp_path / "m.tflite"
    with _tf.quiet_native():
        path.write_bytes(_tf.tensorflow().lite.TFLiteConverter.from_keras_model(model).convert())
    graph = ov.convert_model(str(path))
    tail, last = ovt.decode_tail(graph)
    kinds = {op.get_friendly_name(): op.get_type_name() for op in graph.get_ordered_ops()}
    tail_kinds = {kinds[name] for name in tail}
    assert "Convolution" in tail_kinds and any(kind.lower() == "softmax" for kind in tail_kinds), tail_kinds
    assert [kinds[name] for name in last] == ["Convolution"] and len(last) == 1


def test_tflite_decode_tail_treats_a_bin_expectation_as_decode():
    from edge_sdk.converters import _tf, tflite

    keras = _tf.keras3()
    image = keras.Input((16, 16, 3), batch_size=1, name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(image)
    probs = keras.layers.Softmax(axis=-1)(keras.layers.Conv2D(16, 1)(x))
    expectation = keras.layers.Conv2D(1, 1, use_bias=False)
    out = expectation(probs)
    expectation.set_weights([np.arange(16, dtype=np.float32).reshape(1, 1, 16, 1)])
    with _tf.quiet_native():
        content = _tf.tensorflow().lite.TFLiteConverter.from_keras_model(keras.Model(image, out)).convert()
    interpreter = tflite._activations(content)
    names = {d["index"]: d["name"] for d in interpreter.get_tensor_details()}
    kinds = {names[int(o)]: op["op_name"] for op in interpreter._get_ops_details() if op["op_name"] != "DELEGATE"
             for o in op["outputs"]}
    assert {kinds[name] for name in tflite.decode_tail(content)} == {"SOFTMAX", "CONV_2D"}
