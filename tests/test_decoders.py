"""Decoders on real engines: SSD models ending in TFLite_Detection_PostProcess, YOLO heads, plugins.

Expected boxes are worked out by hand in the comments next to them, so a decoder and a test cannot
share a mistake.
"""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from edge_sdk.backends.litert import LiteRTEngine
from edge_sdk.decoders import DecodeContext, get_decoder, nms as nms_module, ssd, yolo
from edge_sdk.decoders.nms import nms
from edge_sdk.errors import ConfigError, ModelError
from edge_sdk.preprocess import Placement, Preprocessing, ResizeMode, fit, preprocess
from edge_sdk.results import BBox, Detection
from support.models.tflite_detectors import constant_head_model, ssd_postprocess_model

TOL = 1e-5


def _context(spec, placement, labels, *, threshold=0.25, **options) -> DecodeContext:
    return DecodeContext(
        labels=tuple(labels), placement=placement, preprocessing=spec, score_threshold=threshold, options=options
    )


def _assert_detections(got: list[Detection], expected: list[tuple]) -> None:
    """``expected`` rows are (class_id, label, score, (x1, y1, x2, y2))."""
    assert [(d.class_id, d.label) for d in got] == [(c, label) for c, label, _, _ in expected]
    for detection, (_, _, score, box) in zip(got, expected):
        assert detection.score == pytest.approx(score, abs=TOL)
        got_box = (detection.box.x1, detection.box.y1, detection.box.x2, detection.box.y2)
        assert got_box == pytest.approx(box, abs=TOL)


def _frame(width: int, height: int) -> np.ndarray:
    frame = np.zeros((height, width, 3), np.uint8)
    frame[:, : width // 2] = (40, 160, 220)
    return frame


# ---------------------------------------------------------------------------------------------
# 4. BBox and Detection values
# ---------------------------------------------------------------------------------------------

# A 400x100 frame letterboxed into a 64x48 model input: scale min(64/400, 48/100) = 0.16, the
# frame fills 64x16 pixels, pad_y = (48 - 16) // 2 = 16.
SSD_SPEC = Preprocessing(width=64, height=48, channels=3, resize=ResizeMode.LETTERBOX)
# A 200x100 frame into a 64x64 model input. Letterbox: scale 0.32, 64x32, pad_y = 16.
# Crop: a centred 100x100 window at x0 = 50, scale 0.64.
YOLO_LETTERBOX = Preprocessing(width=64, height=64, channels=3, resize=ResizeMode.LETTERBOX)
YOLO_CROP = Preprocessing(width=64, height=64, channels=3, resize=ResizeMode.CROP)


def test_placements_are_the_ones_the_expected_values_assume():
    assert fit(_frame(400, 100), SSD_SPEC)[1] == Placement(400, 100, 0.16, 0.16, pad_y=16)
    assert fit(_frame(200, 100), YOLO_LETTERBOX)[1] == Placement(200, 100, 0.32, 0.32, pad_y=16)
    assert fit(_frame(200, 100), YOLO_CROP)[1] == Placement(200, 100, 0.64, 0.64, crop_x=50)


def test_iou():
    a = BBox(0.0, 0.0, 0.5, 0.5)
    assert a.iou(a) == pytest.approx(1.0)
    # overlap 0.25 x 0.5 = 0.125; union 0.25 + 0.25 - 0.125 = 0.375
    assert a.iou(BBox(0.25, 0.0, 0.75, 0.5)) == pytest.approx(1 / 3)
    assert a.iou(BBox(0.6, 0.6, 0.9, 0.9)) == 0.0
    assert BBox(0.2, 0.2, 0.2, 0.4).iou(BBox(0.2, 0.2, 0.2, 0.4)) == 0.0  # zero area, no division by zero


def test_to_pixels_and_json():
    box = BBox(0.1, 0.2, 0.5, 0.9)
    assert box.to_pixels(640, 480) == (64, 96, 320, 432)
    detection = Detection(class_id=3, label="car", score=0.876543219, box=box)
    assert detection.to_json() == {"class_id": 3, "label": "car", "score": 0.87654, "box": [0.1, 0.2, 0.5, 0.9]}
    assert detection.to_json(frame_size=(640, 480))["box_px"] == [64, 96, 320, 432]
    assert Detection(class_id=1, label="dog", score=0.5).to_json() == {"class_id": 1, "label": "dog", "score": 0.5}


def test_values_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        BBox(0, 0, 1, 1).x1 = 0.5
    with pytest.raises(dataclasses.FrozenInstanceError):
        Detection(class_id=0, label="a", score=1.0).score = 0.0


def test_from_model_pixels_letterbox():
    placement = fit(_frame(200, 100), YOLO_LETTERBOX)[1]
    # x: 16 / 0.32 = 50, 48 / 0.32 = 150 of 200; y: (24 - 16) / 0.32 = 25, (40 - 16) / 0.32 = 75 of 100
    assert BBox.from_model_pixels(16, 24, 48, 40, placement) == pytest.approx(BBox(0.25, 0.25, 0.75, 0.75))
    # a box reaching into the top pad is clipped to the frame: (8 - 16) / 0.32 < 0
    assert BBox.from_model_pixels(16, 8, 48, 40, placement).y1 == 0.0


def test_from_model_pixels_crop():
    placement = fit(_frame(200, 100), YOLO_CROP)[1]
    # the whole model input is the 100x100 window at x0 = 50
    assert BBox.from_model_pixels(0, 0, 64, 64, placement) == BBox(0.25, 0.0, 0.75, 1.0)
    # x: 16 / 0.64 + 50 = 75, 48 / 0.64 + 50 = 125 of 200; y: 25, 75 of 100
    assert BBox.from_model_pixels(16, 16, 48, 48, placement) == pytest.approx(BBox(0.375, 0.25, 0.625, 0.75))


# ---------------------------------------------------------------------------------------------
# 1. SSD: a real model ending in TFLite_Detection_PostProcess
# ---------------------------------------------------------------------------------------------

# Anchors (ycenter, xcenter, h, w) and encodings (ty, tx, th, tw), decoded by the op with scales
# y=x=10, h=w=5: yc = ya + ty/10*ha, xc = xa + tx/10*wa, h = ha*exp(th/5), w = wa*exp(tw/5).
# Class scores have the background column first.
SSD_ANCHORS = np.array(
    [
        [0.5, 0.5, 1 / 6, 0.5],  # A
        [0.5, 0.25, 0.25, 0.25],  # B
        [0.25, 0.75, 0.25, 0.25],  # C
        [0.5, 0.9, 0.1, 0.1],  # D
        [0.5, 0.5, 1 / 6, 0.5],  # E: A again
        [0.8, 0.2, 0.1, 0.1],  # F
    ]
)
SSD_ENCODINGS = np.zeros((6, 4))
SSD_ENCODINGS[1] = [2.0, -1.0, 5 * math.log(0.5), 0.0]
SSD_SCORES = np.array(
    [
        [0.0, 0.0, 0.9, 0.0],  # A: dog 0.9
        [0.0, 0.8, 0.0, 0.0],  # B: cat 0.8
        [0.0, 0.0, 0.0, 0.6],  # C: bird 0.6
        [0.0, 0.2, 0.0, 0.0],  # D: cat 0.2, under the decoder's threshold, over the op's 0.05
        [0.0, 0.0, 0.7, 0.0],  # E: dog 0.7 on A's box, suppressed by the op's NMS
        [0.01, 0.01, 0.01, 0.01],  # F: under the op's threshold
    ]
)
SSD_LABELS = ("cat", "dog", "bird")
# Source frame 400x100, letterbox scale 0.16, pad_y 16 (model 64x48).
SSD_EXPECTED = [
    # A: y 0.5 -+ 1/12 -> 20..28 px, x 0.25..0.75 -> 16..48 px;
    #    source x 16/0.16 = 100, 48/0.16 = 300 of 400; y (20-16)/0.16 = 25, (28-16)/0.16 = 75 of 100
    (1, "dog", 0.9, (0.25, 0.25, 0.75, 0.75)),
    # B: yc = 0.5 + 0.2*0.25 = 0.55, xc = 0.25 - 0.1*0.25 = 0.225, h = 0.125, w = 0.25;
    #    y 0.4875..0.6125 -> 23.4..29.4 px, x 0.1..0.35 -> 6.4..22.4 px;
    #    source x 40, 140 of 400; y (23.4-16)/0.16 = 46.25, (29.4-16)/0.16 = 83.75 of 100
    (0, "cat", 0.8, (0.1, 0.4625, 0.35, 0.8375)),
    # C: y 0.125..0.375 -> 6..18 px, x 0.625..0.875 -> 40..56 px;
    #    source x 250, 350 of 400; y (6-16)/0.16 < 0 -> clipped to 0, (18-16)/0.16 = 12.5 of 100
    (2, "bird", 0.6, (0.625, 0.0, 0.875, 0.125)),
]
TF1_ORDER = ("boxes", "classes", "scores", "count")


@pytest.fixture(scope="module")
def ssd_engine() -> LiteRTEngine:
    model = ssd_postprocess_model(
        encodings=SSD_ENCODINGS, class_scores=SSD_SCORES, anchors=SSD_ANCHORS, width=64, height=48
    )
    return LiteRTEngine(model)


@pytest.fixture(scope="module")
def ssd_run(ssd_engine) -> tuple[list[np.ndarray], Placement]:
    batch, placement = preprocess(_frame(400, 100), SSD_SPEC)
    return ssd_engine.run([batch]), placement


def _by_role(outputs: list[np.ndarray]) -> dict[str, np.ndarray]:
    """The outputs of the model built above, which ships in TF2 order: scores, boxes, count, classes."""
    return dict(zip(("scores", "boxes", "count", "classes"), outputs))


def test_ssd_model_ends_in_the_postprocess_op(ssd_engine):
    assert ssd_engine.ops()[-1]["op_name"] == "TFLite_Detection_PostProcess"
    assert [spec["shape"] for spec in ssd_engine.output_specs()] == [[1, 10], [1, 10, 4], [1], [1, 10]]


def test_ssd_letterboxed_boxes_match_hand_computed(ssd_run):
    outputs, placement = ssd_run
    assert float(_by_role(outputs)["count"][0]) == 4  # A, B, C, D: E suppressed, F under the op's threshold
    got = ssd.decode(outputs, _context(SSD_SPEC, placement, SSD_LABELS, threshold=0.3))
    _assert_detections(got, SSD_EXPECTED)


def test_ssd_tf1_order_is_recognised(ssd_run):
    outputs, placement = ssd_run
    roles = _by_role(outputs)
    got = ssd.decode([roles[r] for r in TF1_ORDER], _context(SSD_SPEC, placement, SSD_LABELS, threshold=0.3))
    _assert_detections(got, SSD_EXPECTED)


def test_ssd_converter_order_without_reversal_is_recognised():
    model = ssd_postprocess_model(
        encodings=SSD_ENCODINGS,
        class_scores=SSD_SCORES,
        anchors=SSD_ANCHORS,
        width=64,
        height=48,
        exporter_order=False,
    )
    engine = LiteRTEngine(model)
    assert [spec["shape"] for spec in engine.output_specs()] != [[1, 10], [1, 10, 4], [1], [1, 10]]
    batch, placement = preprocess(_frame(400, 100), SSD_SPEC)
    got = ssd.decode(engine.run([batch]), _context(SSD_SPEC, placement, SSD_LABELS, threshold=0.3))
    _assert_detections(got, SSD_EXPECTED)


def test_ssd_output_order_option(ssd_run):
    outputs, placement = ssd_run
    roles = _by_role(outputs)
    context = _context(SSD_SPEC, placement, SSD_LABELS, threshold=0.3, output_order="boxes, classes, scores, count")
    _assert_detections(ssd.decode([roles[r] for r in TF1_ORDER], context), SSD_EXPECTED)
    wrong = _context(SSD_SPEC, placement, SSD_LABELS, output_order="boxes,classes,scores,count")
    with pytest.raises(ModelError, match="output_order"):
        ssd.decode(outputs, wrong)  # the model's real order is scores, boxes, count, classes


def test_ssd_label_offset_for_a_background_label(ssd_run):
    outputs, placement = ssd_run
    labels = ("???", *SSD_LABELS)
    got = ssd.decode(outputs, _context(SSD_SPEC, placement, labels, threshold=0.3, label_offset=1))
    _assert_detections(got, [(c + 1, label, score, box) for c, label, score, box in SSD_EXPECTED])


def test_ssd_score_threshold(ssd_run):
    outputs, placement = ssd_run
    got = ssd.decode(outputs, _context(SSD_SPEC, placement, SSD_LABELS, threshold=0.85))
    _assert_detections(got, SSD_EXPECTED[:1])
    with_d = ssd.decode(outputs, _context(SSD_SPEC, placement, SSD_LABELS, threshold=0.1))
    assert [(d.label, round(d.score, 5)) for d in with_d][-1] == ("cat", 0.2)


def test_ssd_model_with_nothing_to_detect():
    scores = np.full_like(SSD_SCORES, 0.01)
    model = ssd_postprocess_model(
        encodings=SSD_ENCODINGS, class_scores=scores, anchors=SSD_ANCHORS, width=64, height=48
    )
    batch, placement = preprocess(_frame(400, 100), SSD_SPEC)
    outputs = LiteRTEngine(model).run([batch])
    assert float(_by_role(outputs)["count"][0]) == 0
    assert ssd.decode(outputs, _context(SSD_SPEC, placement, SSD_LABELS, threshold=0.0)) == []


# 5. SSD edge cases on crafted op outputs (rows past count are garbage, as on a real device)

STRETCH = Preprocessing(width=100, height=100, channels=3)
STRETCH_PLACEMENT = Placement(100, 100, 1.0, 1.0)


def _ssd_outputs(boxes, classes, scores, count, *, order=("scores", "boxes", "count", "classes")):
    roles = {
        "boxes": np.asarray(boxes, np.float32)[None],
        "classes": np.asarray(classes, np.float32)[None],
        "scores": np.asarray(scores, np.float32)[None],
        "count": np.asarray([count], np.float32),
    }
    return [roles[r] for r in order]


def _stretch_context(**options) -> DecodeContext:
    return _context(STRETCH, STRETCH_PLACEMENT, ("a", "b", "c"), threshold=0.5, **options)


GARBAGE_BOX = [np.nan, 1e30, -1e30, 3.0]


@pytest.mark.parametrize("order", [("scores", "boxes", "count", "classes"), TF1_ORDER])
def test_ssd_rows_past_count_are_ignored(order):
    outputs = _ssd_outputs(
        [[0.1, 0.2, 0.3, 0.4], GARBAGE_BOX, GARBAGE_BOX],
        [2, 4.1e5, np.nan],
        [0.75, 0.99, np.nan],
        1,
        order=order,
    )
    _assert_detections(ssd.decode(outputs, _stretch_context()), [(2, "c", 0.75, (0.2, 0.1, 0.4, 0.3))])


@pytest.mark.parametrize("count", [0, -3, np.nan])
def test_ssd_zero_detections(count):
    outputs = _ssd_outputs([GARBAGE_BOX, GARBAGE_BOX], [3.5e8, 1.0], [0.9, 0.8], count)
    assert ssd.decode(outputs, _stretch_context()) == []


def test_ssd_count_larger_than_n():
    outputs = _ssd_outputs([[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.9, 0.9]], [0, 1], [0.6, 0.9], 50)
    got = ssd.decode(outputs, _stretch_context())
    _assert_detections(got, [(1, "b", 0.9, (0.5, 0.5, 0.9, 0.9)), (0, "a", 0.6, (0.2, 0.1, 0.4, 0.3))])


def test_ssd_nan_scores_and_boxes_are_ignored():
    outputs = _ssd_outputs(
        [[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.9, 0.9], [0.1, np.nan, 0.3, 0.4]], [0, 1, 2], [np.nan, 0.9, 0.95], 3
    )
    _assert_detections(ssd.decode(outputs, _stretch_context()), [(1, "b", 0.9, (0.5, 0.5, 0.9, 0.9))])


@pytest.mark.parametrize("order", [("scores", "boxes", "count", "classes"), TF1_ORDER])
def test_ssd_classes_and_scores_that_values_cannot_tell_apart(order):
    # every class id and score is 0 or 1: the exporter's layout decides
    outputs = _ssd_outputs([[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.9, 0.9]], [1, 0], [1.0, 1.0], 2, order=order)
    got = ssd.decode(outputs, _stretch_context())
    assert [(d.class_id, d.score) for d in got] == [(1, 1.0), (0, 1.0)]


def test_ssd_single_detection_slot():
    # N == 1: classes and scores are [1, 1] like count's one value; count is the flat one
    outputs = _ssd_outputs([[0.1, 0.2, 0.3, 0.4]], [2], [0.7], 1)
    _assert_detections(ssd.decode(outputs, _stretch_context()), [(2, "c", 0.7, (0.2, 0.1, 0.4, 0.3))])


def test_ssd_refuses_outputs_of_another_kind():
    with pytest.raises(ModelError, match="4 outputs"):
        ssd.decode([np.zeros((1, 10))], _stretch_context())
    with pytest.raises(ModelError, match="not boxes"):
        ssd.decode([np.zeros((1, 5, 4)), np.zeros((1, 5)), np.zeros((1, 7)), np.zeros(1)], _stretch_context())


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"output_order": "boxes,boxes,scores,count"}, "output_order"),
        ({"output_order": "boxes,labels,scores,count"}, "output_order"),
        ({"label_offset": "one"}, "label_offset"),
        ({"labels_offset": 1}, "labels_offset"),
    ],
)
def test_ssd_bad_options_name_the_option(options, name):
    outputs = _ssd_outputs([[0.1, 0.2, 0.3, 0.4]], [0], [0.9], 1)
    with pytest.raises(ConfigError, match=f"ssd decoder option '{name}'"):
        ssd.decode(outputs, _stretch_context(**options))


# ---------------------------------------------------------------------------------------------
# 2. YOLO heads
# ---------------------------------------------------------------------------------------------

YOLO_LABELS = ("person", "car")
# Candidates in 64x64 model pixels: cx, cy, w, h, then v8 class scores (person, car).
YOLO_V8_ROWS = np.array(
    [
        [32, 32, 20, 20, 0.9, 0.0],  # 1: person 0.9 -> x1y1x2y2 22, 22, 42, 42
        [33, 32, 20, 20, 0.8, 0.0],  # 2: person 0.8, IoU with 1 = 19*20 / (800 - 380) = 0.905: suppressed
        [32, 32, 20, 20, 0.2, 0.7],  # 3: car 0.7 on 1's box: kept, as NMS is per class
        [10, 50, 8, 8, 0.0, 0.6],  # 4: car 0.6 -> 6, 46, 14, 54
        [50, 10, 10, 10, 0.1, 0.0],  # 5: person 0.1, under the threshold
        [20, 20, 10, 10, np.nan, np.nan],  # 6: NaN scores
        [np.nan, 40, 10, 10, 0.95, 0.0],  # 7: NaN box
    ]
)
# The same candidates as v5 rows: cx, cy, w, h, objectness, class probabilities; score = obj x prob.
YOLO_V5_ROWS = np.array(
    [
        [32, 32, 20, 20, 0.9, 1.0, 0.0],  # 1: person 0.9
        [33, 32, 20, 20, 1.0, 0.8, 0.1],  # 2: person 0.8
        [32, 32, 20, 20, 1.0, 0.2, 0.7],  # 3: car 0.7
        [10, 50, 8, 8, 0.75, 0.0, 0.8],  # 4: car 0.75 x 0.8 = 0.6
        [50, 10, 10, 10, 0.1, 0.95, 0.0],  # 5: person 0.1 x 0.95 = 0.095, under the threshold
        [20, 20, 10, 10, np.nan, 1.0, 0.0],  # 6: NaN objectness
        [np.nan, 40, 10, 10, 1.0, 0.95, 0.0],  # 7: NaN box
    ]
)
YOLO_HEADS = {"v8": YOLO_V8_ROWS.T[None], "v5": YOLO_V5_ROWS[None]}  # [1, 4+C, N] and [1, N, 5+C]

# 200x100 frame, letterbox: scale 0.32, pad_y 16. Box 1 (22, 22, 42, 42): x 22/0.32 = 68.75,
# 42/0.32 = 131.25 of 200; y (22-16)/0.32 = 18.75, (42-16)/0.32 = 81.25 of 100. Box 4 (6, 46, 14, 54):
# x 18.75, 43.75; y (46-16)/0.32 = 93.75, (54-16)/0.32 = 118.75 -> clipped to 100.
BOX1_LETTERBOX = (0.34375, 0.1875, 0.65625, 0.8125)
BOX4_LETTERBOX = (0.09375, 0.9375, 0.21875, 1.0)
# 200x100 frame, crop: window at x0 = 50, scale 0.64. Box 1: x 22/0.64 + 50 = 84.375, 115.625;
# y 34.375, 65.625. Box 4: x 6/0.64 + 50 = 59.375, 14/0.64 + 50 = 71.875; y 71.875, 84.375.
BOX1_CROP = (0.421875, 0.34375, 0.578125, 0.65625)
BOX4_CROP = (0.296875, 0.71875, 0.359375, 0.84375)
YOLO_EXPECTED = {
    "letterbox": [(0, "person", 0.9, BOX1_LETTERBOX), (1, "car", 0.7, BOX1_LETTERBOX), (1, "car", 0.6, BOX4_LETTERBOX)],
    "crop": [(0, "person", 0.9, BOX1_CROP), (1, "car", 0.7, BOX1_CROP), (1, "car", 0.6, BOX4_CROP)],
}
YOLO_SPECS = {"letterbox": YOLO_LETTERBOX, "crop": YOLO_CROP}


def _yolo_context(resize: str, **options) -> DecodeContext:
    spec = YOLO_SPECS[resize]
    return _context(spec, fit(_frame(200, 100), spec)[1], YOLO_LABELS, threshold=0.25, **options)


@pytest.mark.parametrize("resize", ["letterbox", "crop"])
@pytest.mark.parametrize("layout", ["v8", "v5"])
def test_yolo_head_matches_hand_computed(layout, resize):
    got = yolo.decode([YOLO_HEADS[layout].astype(np.float32)], _yolo_context(resize))
    _assert_detections(got, YOLO_EXPECTED[resize])


@pytest.mark.parametrize("layout", ["v8", "v5"])
@pytest.mark.parametrize("normalized", [None, True])
def test_yolo_normalised_boxes(layout, normalized):
    head = YOLO_HEADS[layout].copy()
    box_axis = (slice(None), slice(0, 4), slice(None)) if layout == "v8" else (slice(None), slice(None), slice(0, 4))
    head[box_axis] /= 64.0
    options = {} if normalized is None else {"normalized": normalized}
    _assert_detections(yolo.decode([head], _yolo_context("letterbox", **options)), YOLO_EXPECTED["letterbox"])


def test_yolo_pixel_boxes_stated_explicitly():
    got = yolo.decode([YOLO_HEADS["v8"]], _yolo_context("letterbox", normalized=False, layout="v8"))
    _assert_detections(got, YOLO_EXPECTED["letterbox"])


def test_yolo_agnostic_nms_suppresses_across_classes():
    got = yolo.decode([YOLO_HEADS["v8"]], _yolo_context("letterbox", agnostic=True))
    expected = YOLO_EXPECTED["letterbox"]
    _assert_detections(got, [expected[0], expected[2]])


def test_yolo_iou_and_max_detections():
    loose = yolo.decode([YOLO_HEADS["v5"]], _yolo_context("letterbox", iou=0.95))
    expected = [("person", 0.9), ("person", 0.8), ("car", 0.7), ("car", 0.6)]
    assert [(d.label, round(d.score, 5)) for d in loose] == expected
    capped = yolo.decode([YOLO_HEADS["v5"]], _yolo_context("letterbox", max_detections=2))
    _assert_detections(capped, YOLO_EXPECTED["letterbox"][:2])


def test_yolo_threshold_filtering():
    placement = fit(_frame(200, 100), YOLO_LETTERBOX)[1]
    got = yolo.decode([YOLO_HEADS["v8"]], _context(YOLO_LETTERBOX, placement, YOLO_LABELS, threshold=0.65))
    _assert_detections(got, YOLO_EXPECTED["letterbox"][:2])


def test_yolo_zero_detections():
    quiet = YOLO_V8_ROWS.copy()
    quiet[:, 4:] = 0.01
    assert yolo.decode([quiet.T[None]], _yolo_context("letterbox")) == []
    assert yolo.decode([np.zeros((1, 6, 0), np.float32)], _yolo_context("letterbox", layout="v8")) == []


@pytest.mark.parametrize(
    ("shape", "num_classes", "layout"),
    [
        ((84, 8400), 80, yolo.Layout.V8),
        ((25200, 85), 80, yolo.Layout.V5),
        ((84, 8400), 0, yolo.Layout.V8),
        ((25200, 85), 0, yolo.Layout.V5),
        ((6, 7), 2, yolo.Layout.V8),  # both fit the labels: the shorter axis holds the attributes
        ((7, 7), 2, yolo.Layout.V5),
        ((3, 7), 2, yolo.Layout.V5),  # few candidates: the labels, not the shorter axis, decide
        ((6, 3), 2, yolo.Layout.V8),
    ],
)
def test_yolo_layout_guess(shape, num_classes, layout):
    assert yolo.guess_layout(shape, num_classes) is layout


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"iou": 1.5}, "iou"),
        ({"max_detections": 0}, "max_detections"),
        ({"layout": "v7"}, "layout"),
        ({"agnostic": "sometimes"}, "agnostic"),
        ({"nms": 0.5}, "nms"),
    ],
)
def test_yolo_bad_options_name_the_option(options, name):
    with pytest.raises(ConfigError, match=f"yolo decoder option '{name}'"):
        yolo.decode([YOLO_HEADS["v8"]], _yolo_context("letterbox", **options))


def test_yolo_refuses_heads_it_cannot_read():
    with pytest.raises(ModelError, match="head must be"):
        yolo.decode([np.zeros((1, 2, 6, 7))], _yolo_context("letterbox"))
    with pytest.raises(ModelError, match="v5 head needs more than 5"):
        yolo.decode([np.zeros((1, 7, 5))], _yolo_context("letterbox", layout="v5"))
    with pytest.raises(ModelError, match="no outputs"):
        yolo.decode([], _yolo_context("letterbox"))


@pytest.mark.parametrize("layout", ["v8", "v5"])
def test_yolo_head_from_a_real_tflite_model(layout):
    engine = LiteRTEngine(constant_head_model(YOLO_HEADS[layout], width=64, height=64))
    batch, placement = preprocess(_frame(200, 100), YOLO_LETTERBOX)
    outputs = engine.run([batch])
    assert outputs[0].shape == YOLO_HEADS[layout].shape
    got = yolo.decode(outputs, _context(YOLO_LETTERBOX, placement, YOLO_LABELS, threshold=0.25))
    _assert_detections(got, YOLO_EXPECTED["letterbox"])


# NMS on its own

def test_nms_keeps_best_first_and_suppresses_overlaps():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 10]], float)
    scores = np.array([0.5, 0.9, 0.7, 0.3])
    # 1 suppresses 0 (IoU 90/110 = 0.82) and 3 (the same box as 0)
    assert nms(boxes, scores, iou_threshold=0.5, max_detections=10).tolist() == [1, 2]
    per_class = nms(boxes, scores, iou_threshold=0.5, max_detections=10, classes=np.array([0, 1, 0, 1]))
    assert per_class.tolist() == [1, 2, 0]
    assert nms(boxes, scores, iou_threshold=0.5, max_detections=1).tolist() == [1]
    assert nms(boxes, scores, iou_threshold=1.0, max_detections=10).tolist() == [1, 2, 0, 3]


def test_nms_edge_cases():
    assert nms(np.zeros((0, 4)), np.zeros(0), iou_threshold=0.5, max_detections=5).tolist() == []
    degenerate = np.array([[5, 5, 5, 5], [5, 5, 5, 5]], float)  # zero area: IoU 0, both kept
    assert nms(degenerate, np.array([0.4, 0.6]), iou_threshold=0.5, max_detections=5).tolist() == [1, 0]
    with pytest.raises(ValueError, match="iou_threshold"):
        nms(degenerate, np.array([0.4, 0.6]), iou_threshold=2.0, max_detections=5)
    assert nms_module.pairwise_iou(np.array([0, 0, 2, 2.0]), np.array([[1, 1, 3, 3.0]])) == pytest.approx([1 / 7])


# ---------------------------------------------------------------------------------------------
# 3. Plugin decoders
# ---------------------------------------------------------------------------------------------

PLUGIN_SOURCE = textwrap.dedent(
    '''
    """Rows of x1, y1, x2, y2 (model pixels), score, class id."""
    import numpy as np

    from edge_sdk.results import BBox, Detection

    NOT_A_FUNCTION = 42


    def decode(outputs, context):
        rows = np.asarray(outputs[0], dtype=np.float64).reshape(-1, 6)
        rows = rows[rows[:, 4] >= context.score_threshold]
        return [
            Detection(class_id=int(c), label=context.label(int(c)), score=float(s),
                      box=BBox.from_model_pixels(x1, y1, x2, y2, context.placement))
            for x1, y1, x2, y2, s, c in rows
        ]
    '''
)


@pytest.fixture
def plugin_module(tmp_path, monkeypatch) -> str:
    name = "edge_plugin_rows_decoder"
    (tmp_path / f"{name}.py").write_text(PLUGIN_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    yield name
    sys.modules.pop(name, None)


def test_plugin_decoder_through_a_real_engine(plugin_module):
    head = np.array([[[22, 22, 42, 42, 0.9, 1], [0, 0, 10, 10, 0.1, 0]]], np.float32)
    engine = LiteRTEngine(constant_head_model(head, width=64, height=64))
    batch, placement = preprocess(_frame(200, 100), YOLO_LETTERBOX)
    decode = get_decoder(f"plugin:{plugin_module}:decode")
    got = decode(engine.run([batch]), _context(YOLO_LETTERBOX, placement, YOLO_LABELS, threshold=0.25))
    _assert_detections(got, [(1, "car", 0.9, BOX1_LETTERBOX)])
    assert got[0].to_json(frame_size=(200, 100))["box_px"] == [69, 19, 131, 81]


def test_plugin_decoder_errors(plugin_module):
    with pytest.raises(ConfigError, match="not callable"):
        get_decoder(f"plugin:{plugin_module}:NOT_A_FUNCTION")
    with pytest.raises(ConfigError, match="cannot be imported"):
        get_decoder(f"plugin:{plugin_module}:missing")
    with pytest.raises(ConfigError, match="cannot be imported"):
        get_decoder("plugin:edge_plugin_that_does_not_exist:decode")


def test_builtin_decoders_are_registered():
    assert get_decoder("ssd") is ssd.decode
    assert get_decoder("yolo") is yolo.decode


def test_decoders_do_not_import_tensorflow():
    code = (
        "import sys, edge_sdk.decoders.ssd, edge_sdk.decoders.yolo, edge_sdk.decoders.nms; "
        "print('tensorflow' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
