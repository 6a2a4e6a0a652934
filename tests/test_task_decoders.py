"""Decoders for segmentation, instance masks, pose and landmarks, on hand-built outputs with hand-worked answers.

Every case uses a 128x64 (w x h) source frame and a 64x64 model input, placed by the real
preprocessing (``fit``), so the three placements work out as:
    stretch    x = m / 0.5,        y = m
    letterbox  x = m / 0.5,        y = (m - 16) / 0.5    (16 grey rows above and below)
    crop       x = m + 32,         y = m                 (the centred 64x64 window; x < 32 and x >= 96 unseen)
where m is a model-input pixel coordinate.
"""

from __future__ import annotations

import numpy as np
import pytest

from edge_sdk.decoders import DecodeContext, get_decoder
from edge_sdk.errors import ConfigError, ModelError
from edge_sdk.preprocess import Preprocessing, fit

FRAME_W, FRAME_H, INPUT = 128, 64, 64


def context(mode: str, *, labels=(), options=None, threshold=0.25) -> DecodeContext:
    spec = Preprocessing(width=INPUT, height=INPUT, channels=3, resize=mode)
    _, placement = fit(np.zeros((FRAME_H, FRAME_W, 3), np.uint8), spec)
    return DecodeContext(labels=tuple(labels), placement=placement, preprocessing=spec, score_threshold=threshold,
                         options=dict(options or {}))


# model-input x range -> source x range, model-input y range -> source y range, per placement
# (clipped to the frame: the letterbox's grey rows are nowhere in it)
def to_source_x(mode: str, a: int, b: int) -> slice:
    return {"stretch": slice(2 * a, 2 * b), "letterbox": slice(2 * a, 2 * b), "crop": slice(a + 32, b + 32)}[mode]


def to_source_y(mode: str, a: int, b: int) -> slice:
    return {"stretch": slice(a, b), "letterbox": slice(max(0, 2 * (a - 16)), 2 * (b - 16)), "crop": slice(a, b)}[mode]


def test_placements_are_the_ones_the_expected_values_were_worked_out_for():
    assert context("stretch").placement.scale_x == 0.5 and context("stretch").placement.scale_y == 1.0
    assert (context("letterbox").placement.pad_y, context("letterbox").placement.scale_x) == (16, 0.5)
    assert (context("crop").placement.crop_x, context("crop").placement.scale_x) == (32, 1.0)


# ---------------------------------------------------------------- semantic segmentation

def _class_scores(layout: str) -> np.ndarray:
    """16x16 output (4 model pixels a cell): class 1 everywhere, class 2 on cells 4-7 x 4-7, class 3 on rows 8-11, cols 10-13."""
    classes = np.ones((16, 16), np.int64)
    classes[4:8, 4:8] = 2
    classes[8:12, 10:14] = 3
    logits = np.where(np.arange(4)[None, None, :] == classes[..., None], 3.0, -1.0).astype(np.float32)
    logits[..., 0] += 0.5  # a runner-up that must not win
    return logits[None] if layout == "nhwc" else np.transpose(logits, (2, 0, 1))[None]


@pytest.mark.parametrize("mode", ["stretch", "letterbox", "crop"])
@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
def test_class_scores_map_back_to_the_source_frame_exactly(mode, layout):
    labels = ("background", "road", "car", "tree")
    result = get_decoder("segmentation")([_class_scores(layout)], context(mode, labels=labels, options={"layout": layout}))
    expected = np.zeros((FRAME_H, FRAME_W), np.uint8)
    expected[to_source_y(mode, 0, 64), to_source_x(mode, 0, 64)] = 1
    expected[to_source_y(mode, 16, 32), to_source_x(mode, 16, 32)] = 2
    expected[to_source_y(mode, 32, 48), to_source_x(mode, 40, 56)] = 3
    assert result.class_map.shape == (FRAME_H, FRAME_W) and result.labels == labels
    np.testing.assert_array_equal(result.class_map, expected)
    if mode == "crop":  # what the model never saw is background, not the nearest cell
        assert not result.class_map[:, :32].any() and not result.class_map[:, 96:].any()


def test_layout_is_read_off_the_shape_when_the_option_is_unset():
    spec_ctx = context("letterbox")
    nchw = get_decoder("segmentation")([_class_scores("nchw")], spec_ctx)
    nhwc = get_decoder("segmentation")([_class_scores("nhwc")], spec_ctx)
    np.testing.assert_array_equal(nchw.class_map, nhwc.class_map)
    assert nchw.labels == ("0", "1", "2", "3") and set(np.unique(nchw.class_map)) == {1, 2, 3}


@pytest.mark.parametrize("activation, inside, outside", [("sigmoid", 0.8, 0.3), ("logits", 1.2, -0.5)])
def test_a_one_channel_map_is_foreground_where_it_reaches_the_threshold(activation, inside, outside):
    scores = np.full((1, 32, 32, 1), outside, np.float32)
    scores[0, 8:16, 16:24] = inside  # model pixels y 16-32, x 32-48
    result = get_decoder("segmentation")([scores], context("letterbox", options={"activation": activation}))
    expected = np.zeros((FRAME_H, FRAME_W), np.uint8)
    expected[0:32, 64:96] = 1
    np.testing.assert_array_equal(result.class_map, expected)
    assert result.labels == ("background", "foreground")
    named = get_decoder("segmentation")([scores], context("letterbox", labels=("sky", "person"), options={"activation": activation}))
    assert named.labels == ("sky", "person")
    stricter = get_decoder("segmentation")([scores], context("letterbox", options={"activation": activation, "threshold": 0.9}))
    assert not stricter.class_map.any()


def test_an_argmaxed_class_map_is_taken_as_it_is():
    ids = np.zeros((1, 64, 64), np.int64)
    ids[0, 20:30, 10:50] = 5
    result = get_decoder("segmentation")([ids], context("crop", labels=[str(i) for i in range(6)]))
    expected = np.zeros((FRAME_H, FRAME_W), np.uint8)
    expected[20:30, 42:82] = 5
    np.testing.assert_array_equal(result.class_map, expected)
    assert result.areas()["5"] == pytest.approx(400 / (FRAME_W * FRAME_H))


@pytest.mark.parametrize("outputs, options, error, match", [
    ([np.zeros((1, 10))], {}, ModelError, r"must be \[1, H, W, C\]"),
    ([], {}, ModelError, "no outputs"),
    ([np.full((1, 8, 8), -1.0)], {}, ModelError, "negative"),
    ([np.zeros((1, 8, 8, 2))], {"activation": "tanh"}, ConfigError, "option 'activation'"),
])
def test_bad_segmentation_outputs_give_one_line(outputs, options, error, match):
    with pytest.raises(error, match=match) as caught:
        get_decoder("segmentation")(outputs, context("stretch", options=options))
    assert "\n" not in str(caught.value)


# ---------------------------------------------------------------- instance segmentation

M = 4


def _seg_outputs(candidates, *, classes=2, n=12, proto_hw=16):
    """A v8 -seg head with the given candidates (cx, cy, w, h, class, score, proto channel) and protos where
    channel 0 is a band on proto columns 4-7 (model x 16-32), channel 1 one on rows 8-11 (model y 32-48),
    channel 2 everywhere: bands, so that the box's crop makes every mask a rectangle whose edges are exact
    (bilinear upsampling rounds a square's corners, as it does in Ultralytics)."""
    head = np.zeros((1, 4 + classes + M, n), np.float32)
    for i, (cx, cy, w, h, cls, score, channel) in enumerate(candidates):
        head[0, :4, i] = cx, cy, w, h
        head[0, 4 + cls, i] = score
        head[0, 4 + classes + channel, i] = 1.0
    protos = np.full((1, M, proto_hw, proto_hw), -6.0, np.float32)
    protos[0, 0, :, 4:8] = 6.0
    protos[0, 1, 8:12, :] = 6.0
    protos[0, 2] = 6.0
    return head, protos


@pytest.mark.parametrize("mode", ["stretch", "letterbox", "crop"])
def test_instance_masks_are_the_selected_prototype_inside_the_box(mode):
    # Box model x 8-40, y 16-40 crosses band 0 (x 16-32): the mask is x 16-32, y 16-40.
    head, protos = _seg_outputs([(24, 28, 32, 24, 1, 0.9, 0)])
    (det,) = get_decoder("yolo-seg")([head, protos], context(mode, labels=("a", "b"), options={"num_masks": M}))
    expected = np.zeros((FRAME_H, FRAME_W), bool)
    expected[to_source_y(mode, 16, 40), to_source_x(mode, 16, 32)] = True
    np.testing.assert_array_equal(det.mask.full(), expected)
    assert det.label == "b" and det.mask.frame_size == (FRAME_W, FRAME_H)
    # only the box's region is stored
    assert det.mask.bitmap.shape[1] <= round((det.box.x2 - det.box.x1) * FRAME_W) + 1


@pytest.mark.parametrize("mode", ["stretch", "letterbox", "crop"])
def test_a_mask_is_cropped_to_its_box(mode):
    # Channel 2 is on everywhere: the mask is exactly the box, model x 12-28, y 20-44.
    head, protos = _seg_outputs([(20, 32, 16, 24, 0, 0.8, 2)])
    (det,) = get_decoder("yolo-seg")([head, protos], context(mode, options={"num_masks": M}))
    expected = np.zeros((FRAME_H, FRAME_W), bool)
    expected[to_source_y(mode, 20, 44), to_source_x(mode, 12, 28)] = True
    np.testing.assert_array_equal(det.mask.full(), expected)


def test_nms_keeps_the_right_instances_and_each_keeps_its_own_mask():
    candidates = [
        (24, 24, 16, 16, 0, 0.6, 0),  # suppressed by the next one (same class, same place)
        (24, 24, 17, 17, 0, 0.9, 0),  # band 0 in a box x/y 15.5-32.5: x 16-32, y 15.5-32.5
        (16, 40, 16, 16, 1, 0.7, 1),  # band 1 in a box x 8-24, y 32-48: another class, kept
        (25, 25, 16, 16, 1, 0.8, 2),  # overlaps the best one but is class 1: kept, everywhere-mask in its box
        (50, 50, 8, 8, 0, 0.1, 0),  # under the score threshold
    ]
    head, protos = _seg_outputs(candidates)
    dets = get_decoder("yolo-seg")([head, protos], context("stretch", options={"num_masks": M}))
    assert [(d.class_id, round(d.score, 2)) for d in dets] == [(0, 0.9), (1, 0.8), (1, 0.7)]
    square0 = np.zeros((FRAME_H, FRAME_W), bool)
    square0[15:32, 32:64] = True  # rows whose centre + 0.5 is in 15.5-32.5
    square1 = np.zeros((FRAME_H, FRAME_W), bool)
    square1[32:48, 16:48] = True
    box3 = np.zeros((FRAME_H, FRAME_W), bool)
    box3[17:33, 34:66] = True
    for det, expected in zip(dets, (square0, box3, square1)):
        np.testing.assert_array_equal(det.mask.full(), expected)
    agnostic = get_decoder("yolo-seg")([head, protos], context("stretch", options={"num_masks": M, "agnostic": True}))
    assert [round(d.score, 2) for d in agnostic] == [0.9, 0.7]


def test_protos_may_come_first_and_channels_last():
    head, protos = _seg_outputs([(24, 28, 32, 24, 1, 0.9, 0)])
    ctx = context("letterbox", options={"num_masks": M})
    (reference,) = get_decoder("yolo-seg")([head, protos], ctx)
    (swapped,) = get_decoder("yolo-seg")([np.transpose(protos, (0, 2, 3, 1)), head], ctx)
    assert swapped.mask == reference.mask and reference.mask.area == 32 * 48
    normalized = head.copy()
    normalized[0, :4] /= INPUT
    (unit,) = get_decoder("yolo-seg")([normalized, protos], context("letterbox", options={"num_masks": M, "normalized": True}))
    assert unit.mask == reference.mask


def test_the_mask_threshold_applies_to_the_sigmoid():
    head, protos = _seg_outputs([(24, 28, 32, 24, 1, 0.9, 2)])
    protos[0, 2] = 0.5  # sigmoid 0.62 everywhere
    low = get_decoder("yolo-seg")([head, protos], context("stretch", options={"num_masks": M, "mask_threshold": 0.6}))
    high = get_decoder("yolo-seg")([head, protos], context("stretch", options={"num_masks": M, "mask_threshold": 0.65}))
    assert low[0].mask.area == 64 * 24 and high[0].mask.area == 0


@pytest.mark.parametrize("outputs, options, match", [
    ([np.zeros((1, 10, 12))], {}, "got 1 output"),
    ([np.zeros((1, 10, 12)), np.zeros((1, 8, 16, 16))], {"num_masks": 4}, r"protos must be \[1, 4, Hp, Wp\]"),
    ([np.zeros((1, 8, 12)), np.zeros((1, 4, 16, 16))], {"num_masks": 4}, r"head must be \[1, 4\+C\+4, N\]"),
    ([np.zeros((1, 10, 12)), np.zeros((1, 10, 12))], {}, "no 4-D protos"),
])
def test_bad_instance_outputs_give_one_line(outputs, options, match):
    with pytest.raises(ModelError, match=match) as caught:
        get_decoder("yolo-seg")(outputs, context("stretch", options=options))
    assert "\n" not in str(caught.value)


# ---------------------------------------------------------------- pose

def _pose_head(people, *, classes=1, k=3, d=3, n=10):
    head = np.zeros((1, 4 + classes + k * d, n), np.float32)
    for i, (box, score, points) in enumerate(people):
        head[0, :4, i] = box
        head[0, 4, i] = score
        head[0, 4 + classes :, i] = np.asarray(points, np.float32).reshape(-1)
    return head


PERSON = ((32, 32, 40, 40), 0.9, [(20, 24, 0.9), (40, 30, 0.2), (32, 48, 0.7)])


@pytest.mark.parametrize("mode, expected_xy", [
    # (20, 24) (40, 30) (32, 48) in model pixels, mapped by hand, then / (128, 64)
    ("stretch", [(40 / 128, 24 / 64), (80 / 128, 30 / 64), (64 / 128, 48 / 64)]),
    ("letterbox", [(40 / 128, 16 / 64), (80 / 128, 28 / 64), (64 / 128, 64 / 64)]),
    ("crop", [(52 / 128, 24 / 64), (72 / 128, 30 / 64), (64 / 128, 48 / 64)]),
])
def test_keypoints_map_back_to_the_source_frame(mode, expected_xy):
    names = ("head", "hand", "foot")
    options = {"kpt_shape": [3, 3], "keypoint_names": names, "skeleton": [[0, 1], [0, 2]]}
    (det,) = get_decoder("yolo-pose")([_pose_head([PERSON])], context(mode, labels=("person",), options=options))
    np.testing.assert_allclose(det.keypoints.array()[:, :2], expected_xy, atol=1e-9)
    np.testing.assert_allclose(det.keypoints.array()[:, 2], [0.9, 0.2, 0.7], atol=1e-6)
    assert [p.name for p in det.keypoints.points] == list(names) and det.keypoints.skeleton == ((0, 1), (0, 2))
    assert det.label == "person" and det.score == pytest.approx(0.9)


def test_pose_nms_keeps_each_persons_own_keypoints_and_normalised_heads_work():
    other = ((10, 10, 12, 12), 0.95, [(5, 6, 1.0), (7, 8, 1.0), (9, 10, 1.0)])
    duplicate = ((32, 32, 38, 38), 0.5, [(0, 0, 0.1)] * 3)
    head = _pose_head([duplicate, PERSON, other])
    ctx = context("stretch", options={"kpt_shape": [3, 3]})
    dets = get_decoder("yolo-pose")([head], ctx)
    assert [round(d.score, 2) for d in dets] == [0.95, 0.9]
    np.testing.assert_allclose(dets[0].keypoints.array()[:, :2], [(10 / 128, 6 / 64), (14 / 128, 8 / 64), (18 / 128, 10 / 64)])
    np.testing.assert_allclose(dets[1].keypoints.array()[0, :2], (40 / 128, 24 / 64))
    unit = head.copy()
    unit[0, :4] /= INPUT
    unit[0, 5:][np.arange(9) % 3 != 2] /= INPUT
    normalised = get_decoder("yolo-pose")([unit], ctx)
    for a, b in zip(dets, normalised):
        np.testing.assert_allclose(a.keypoints.array(), b.keypoints.array(), atol=1e-6)


def test_seventeen_keypoints_get_cocos_names_and_skeleton_and_two_d_points_score_one():
    people = [((32, 32, 40, 40), 0.9, np.tile([[30.0, 30.0]], (17, 1)))]
    (det,) = get_decoder("yolo-pose")([_pose_head(people, k=17, d=2)], context("stretch", options={"kpt_shape": [17, 2]}))
    assert det.keypoints.points[0].name == "nose" and det.keypoints.points[16].name == "right_ankle"
    assert len(det.keypoints.skeleton) == 19 and np.all(det.keypoints.array()[:, 2] == 1.0)
    (guessed,) = get_decoder("yolo-pose")([_pose_head(people, k=17, d=2)], context("stretch"))
    assert len(guessed.keypoints) == 17


@pytest.mark.parametrize("head, options, error, match", [
    (np.zeros((1, 14, 10)), {"kpt_shape": [5, 3]}, ModelError, "not 4 \\+ C \\+ K\\*D"),
    (np.zeros((1, 10)), {}, ModelError, r"must be \[1, 4\+C\+K\*D, N\]"),
    (np.zeros((1, 10, 50)), {}, ModelError, "not 4 \\+ C \\+ K\\*D"),
    (np.zeros((1, 14, 10)), {"kpt_shape": [3, 4]}, ConfigError, "option 'kpt_shape'"),
    (_pose_head([PERSON]), {"kpt_shape": [3, 3], "keypoint_names": ["a"]}, ConfigError, "1 names for 3 keypoints"),
    (_pose_head([PERSON]), {"kpt_shape": [3, 3], "skeleton": [[0, 3]]}, ConfigError, "outside 0-2"),
])
def test_bad_pose_outputs_and_options_give_one_line(head, options, error, match):
    with pytest.raises(error, match=match) as caught:
        get_decoder("yolo-pose")([head], context("stretch", options=options))
    assert "\n" not in str(caught.value)


# ---------------------------------------------------------------- landmarks

LANDMARKS_PX = np.array([[16, 20, 0.3], [48, 20, -0.1], [32, 44, 0.0]], np.float32)  # x, y, depth
LANDMARKS_SOURCE = [(48 / 128, 20 / 64), (80 / 128, 20 / 64), (64 / 128, 44 / 64)]  # under crop: x + 32


@pytest.mark.parametrize("form", ["flat", "kd", "mediapipe", "normalised"])
def test_landmarks_in_pixels_or_normalised_give_one_object(form):
    points = LANDMARKS_PX.copy()
    options = {"num_keypoints": 3, "presence_output": 1}
    if form == "normalised":
        points[:, :2] /= INPUT
        options["normalized"] = True
    landmarks = {"kd": points[None], "mediapipe": points.reshape(1, 1, 1, 9)}.get(form, points.reshape(1, 9))
    ctx = context("crop", labels=("hand",), options=options)
    (det,) = get_decoder("landmarks")([landmarks, np.array([[0.8]], np.float32)], ctx)
    np.testing.assert_allclose(det.keypoints.array()[:, :2], LANDMARKS_SOURCE, atol=1e-6)
    assert det.score == pytest.approx(0.8) and det.class_id == 0 and det.label == "hand"
    assert (det.box.x1, det.box.y1, det.box.x2, det.box.y2) == pytest.approx((48 / 128, 20 / 64, 80 / 128, 44 / 64))


def test_landmarks_without_presence_score_one_and_a_low_presence_is_no_object():
    flat = LANDMARKS_PX[:, :2].reshape(1, 6)
    (det,) = get_decoder("landmarks")([flat], context("letterbox", options={"dims": 2}))
    assert det.score == 1.0
    np.testing.assert_allclose(det.keypoints.array()[:, :2], [(32 / 128, 8 / 64), (96 / 128, 8 / 64), (64 / 128, 56 / 64)])
    absent = get_decoder("landmarks")([flat, np.array([[0.1]])], context("letterbox", options={"dims": 2, "presence_output": 1}))
    assert absent == []


@pytest.mark.parametrize("outputs, options, match", [
    ([np.zeros((1, 9))], {}, "needs option num_keypoints or dims"),
    ([np.zeros((1, 10))], {"num_keypoints": 3}, "does not hold 3 landmarks"),
    ([np.zeros((1, 9))], {"dims": 2}, "whole number of 2-value"),
    ([np.zeros((1, 9))], {"dims": 3, "presence_output": 1}, "presence_output=1 but the model has 1 output"),
    ([np.zeros((2, 9))], {"dims": 3}, r"must be \[1, K\*D\]"),
])
def test_bad_landmark_outputs_give_one_line(outputs, options, match):
    with pytest.raises(ModelError, match=match) as caught:
        get_decoder("landmarks")(outputs, context("stretch", options=options))
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("resize", ["stretch", "letterbox", "crop"])
def test_a_decoded_segmentation_counts_and_masks_exactly_what_its_frame_sized_map_holds(resize):
    """The decoder keeps the grid and its mapping; areas, pixel counts and per-class masks computed on
    the grid equal those counted on the frame-sized map, including what a crop never showed."""
    from edge_sdk.decoders.segmentation import source_cells
    from edge_sdk.preprocess import Preprocessing, fit
    from edge_sdk.results import Mask, Segmentation

    rng = np.random.default_rng(7)
    spec = Preprocessing(width=32, height=32, channels=3, resize=resize)
    frame = np.zeros((37, 53, 3), dtype=np.uint8)
    _, placement = fit(frame, spec)
    grid = rng.integers(0, 4, (16, 16)).astype(np.uint8)
    rows, cols = source_cells(grid.shape, placement, input_size=(32, 32))
    lazy = Segmentation(grid, ("background", "a", "b", "c"), rows=rows, cols=cols)
    full = np.array(lazy.class_map)
    assert full.shape == (37, 53) and lazy.frame_size == (53, 37)
    eager = Segmentation(full, lazy.labels)
    assert lazy == eager
    assert list(lazy.pixels) == list(np.bincount(full.ravel(), minlength=4))
    assert lazy.areas() == pytest.approx(eager.areas()) and list(lazy.areas()) == list(eager.areas())
    for class_id in range(4):
        assert lazy.mask(class_id) == Mask.from_full(full == class_id)
    if resize == "crop":
        assert (rows < 0).any() or (cols < 0).any()  # the crop hid part of the frame: class 0 there
