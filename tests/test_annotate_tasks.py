"""Drawing the new tasks' results on real pixels: instance masks, semantic maps, skeletons."""

from __future__ import annotations

import numpy as np

from edge_sdk.annotate import Overlay, annotate, class_colour
from edge_sdk.results import BBox, Detection, Keypoint, Keypoints, Mask, Segmentation

W, H = 320, 240
GREY = 100


def grey() -> np.ndarray:
    return np.full((H, W, 3), GREY, np.uint8)


def changed(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    return (before != after).any(axis=2)


def test_an_instance_mask_tints_its_pixels_and_nothing_else():
    full = np.zeros((H, W), bool)
    yy, xx = np.mgrid[:H, :W]
    full[(xx - 100) ** 2 + (yy - 120) ** 2 <= 40**2] = True  # a disc, not its box
    detection = Detection(0, "cat", 0.9, mask=Mask.from_full(full))  # no box: only the caption line and the mask
    image = annotate(grey(), [detection])
    diff = changed(grey(), image)
    assert diff[full].all()
    caption = np.zeros((H, W), bool)
    caption[:20, :120] = True  # the boxless detection's caption at the top left
    assert not diff[~full & ~caption].any()
    inside = image[120, 100].astype(int)
    assert inside[1] > GREY and inside[0] < GREY  # towards class 0's green, not just lighter or darker


def test_a_semantic_map_tints_each_class_but_not_the_background():
    class_map = np.zeros((H, W), np.uint8)
    class_map[:, 200:] = 1  # road
    class_map[50:90, 20:60] = 2  # person
    seg = Segmentation(class_map, ("background", "road", "person"))
    image = annotate(grey(), [], Overlay(segmentation=seg))
    diff = changed(grey(), image)
    assert not diff[class_map == 0].any()
    assert diff[class_map > 0].all()
    road, person = image[10, 300].astype(int), image[70, 40].astype(int)
    assert (road != person).any()  # one colour per class
    expected = np.round(0.4 * np.asarray(class_colour(1)) + 0.6 * GREY)
    assert np.abs(road - expected).max() <= 1
    # A map inferred at another size than the frame drawn is scaled to it.
    small = Segmentation(class_map[::2, ::2], seg.labels)
    assert changed(grey(), annotate(grey(), [], Overlay(segmentation=small)))[10, 300]


def test_a_skeleton_joins_the_right_points_and_skips_unseen_ones():
    points = (Keypoint(0.2, 0.2, 0.9, "a"), Keypoint(0.8, 0.2, 0.9, "b"), Keypoint(0.8, 0.8, 0.9, "c"),
              Keypoint(0.2, 0.8, 0.1, "d"))  # d scored too low to draw
    bones = ((0, 1), (1, 2), (2, 3), (3, 0))
    detection = Detection(0, "person", 0.9, BBox(0.1, 0.1, 0.9, 0.9), keypoints=Keypoints(points, bones))
    image = annotate(grey(), [detection])
    diff = changed(grey(), image)

    def at(x: float, y: float) -> bool:
        return bool(diff[round(y * H), round(x * W)])

    assert at(0.5, 0.2) and at(0.8, 0.5)  # a-b and b-c drawn
    assert not at(0.5, 0.8) and not at(0.2, 0.5)  # c-d and d-a end at an unseen point
    assert not at(0.5, 0.5)  # a-c is no bone
    assert at(0.2, 0.2) and at(0.8, 0.8) and not at(0.2, 0.8)  # the seen points, not d
    # Without a skeleton the points alone are drawn.
    lone = annotate(grey(), [Detection(0, "person", 0.9, keypoints=Keypoints(points))])
    assert changed(grey(), lone)[round(0.2 * H), round(0.8 * W)] and not changed(grey(), lone)[round(0.2 * H), round(0.5 * W)]
