"""Masks on the wire (edge_sdk.masks), held to pycocotools and to the exact masks of rendered shapes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from pycocotools import mask as coco

from edge_sdk.masks import (
    MaskFormat, area_summary, class_masks, decode_rle, encode, encode_polygons, encode_rle, polygons_to_bitmap, simplify,
)
from edge_sdk.results import Mask, Segmentation
from edge_sdk.samples import shapes

W, H = 640, 480


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return np.count_nonzero(a & b) / max(1, np.count_nonzero(a | b))


def shape_masks(seed: int, count: int, *, min_size: float = 20, max_size: float = 250) -> list[np.ndarray]:
    """Frame-sized exact masks of generated shapes (circles, squares, triangles, stars), some cut by the frame's edges."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        shape = shapes.Shape(int(rng.integers(len(shapes.CLASSES))), rng.uniform(-20, W + 20), rng.uniform(-20, H + 20),
                             rng.uniform(min_size, max_size), rng.uniform(0, 360), (0, 0, 0), rng.uniform(0.6, 1.6))
        full = shapes._mask(shape, H, W) > 127
        if np.count_nonzero(full) >= 50:
            out.append(full)
    return out


def blobs(seed: int, count: int) -> list[np.ndarray]:
    """Ragged random blobs: smoothed noise thresholded, several parts with holes, some touching every edge."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        noise = cv2.GaussianBlur(rng.random((H, W)).astype(np.float32), (0, 0), sigmaX=float(rng.uniform(2, 12)))
        full = noise > np.quantile(noise, rng.uniform(0.5, 0.97))
        if i % 3 == 0:
            full[:, : W // 3] = False  # a blob that starts part-way across
        out.append(full)
    return out


def pycoco(full: np.ndarray) -> dict:
    rle = coco.encode(np.asfortranarray(full.astype(np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}


def edge_cases() -> list[np.ndarray]:
    empty, every = np.zeros((H, W), bool), np.ones((H, W), bool)
    column = np.zeros((H, W), bool)
    column[:, 5:9] = True  # full-height columns: runs joined across columns
    corner = np.zeros((H, W), bool)
    corner[H - 1, W - 1] = corner[0, 0] = True
    ends = np.zeros((H, W), bool)
    ends[H - 3 :, 10] = True
    ends[:4, 11] = True  # a run over the foot of one column and the head of the next
    return [empty, every, column, corner, ends]


@pytest.mark.parametrize("kind", ["shapes", "blobs", "edges"])
def test_rle_is_byte_identical_to_pycocotools_and_round_trips_exactly(kind):
    fulls = {"shapes": lambda: shape_masks(1, 40), "blobs": lambda: blobs(2, 12), "edges": edge_cases}[kind]()
    for full in fulls:
        mask = Mask.from_full(full)
        ours, theirs = encode_rle(mask), pycoco(full)
        assert ours == theirs
        assert iou(decode_rle(ours), full) == 1.0 or not full.any()
        assert np.array_equal(decode_rle(ours), full)
        back = coco.decode({"size": ours["size"], "counts": ours["counts"].encode("ascii")}).astype(bool)
        assert np.array_equal(back, full)  # pycocotools reads what the device sends


def test_rle_of_a_mask_is_relative_to_the_whole_frame():
    bitmap = np.zeros((30, 20), bool)
    bitmap[5:25, 3:17] = True
    mask = Mask(400, 300, bitmap, (W, H))
    rle = encode_rle(mask)
    assert rle["size"] == [H, W]
    assert np.array_equal(decode_rle(rle), mask.full())
    assert rle == pycoco(mask.full())


def test_a_damaged_rle_is_refused():
    rle = encode_rle(Mask.from_full(shape_masks(3, 1)[0]))
    with pytest.raises(ValueError, match="cover"):
        decode_rle({**rle, "size": [H, W + 1]})
    with pytest.raises(ValueError):
        decode_rle({**rle, "counts": rle["counts"] + "\x7f"})


@pytest.mark.parametrize("budget", [24, 100])
def test_polygons_within_the_budget_keep_iou_on_real_shapes(budget):
    worst = 1.0
    for full in shape_masks(4, 60):
        polygons = encode_polygons(Mask.from_full(full), vertices=budget)
        assert sum(len(p) // 2 for p in polygons) <= budget
        assert all(0 <= v <= 1 for p in polygons for v in p)
        worst = min(worst, iou(polygons_to_bitmap(polygons, (W, H)), full))
    assert worst >= 0.95, worst


def test_polygons_cover_every_part_largest_first():
    full = np.zeros((H, W), np.uint8)
    cv2.circle(full, (120, 120), 60, 1, -1)
    cv2.rectangle(full, (400, 300), (440, 330), 1, -1)
    cv2.circle(full, (500, 100), 25, 1, -1)
    polygons = encode_polygons(Mask.from_full(full.astype(bool)), vertices=100)
    assert len(polygons) == 3
    areas = [cv2.contourArea((np.asarray(p).reshape(-1, 2) * (W, H)).astype(np.float32)) for p in polygons]
    assert areas == sorted(areas, reverse=True)
    assert iou(polygons_to_bitmap(polygons, (W, H)), full.astype(bool)) >= 0.95


@pytest.mark.parametrize("budget", [3, 8, 20, 60, 200])
def test_the_vertex_budget_is_respected_on_ragged_masks(budget):
    for full in blobs(5, 6):
        mask = Mask.from_full(full)
        parts = simplify(mask, vertices=budget)
        assert 0 < sum(len(p) for p in parts) <= budget
        assert all(len(p) >= 3 for p in parts)
    with pytest.raises(ValueError, match="vertices"):
        simplify(Mask.from_full(full), vertices=2)


def test_a_larger_budget_is_used_to_draw_a_closer_outline():
    full = blobs(6, 1)[0]
    mask = Mask.from_full(full)
    fits = [iou(polygons_to_bitmap(encode_polygons(mask, vertices=b), (W, H)), full) for b in (10, 40, 400)]
    assert fits[0] < fits[1] < fits[2]


def test_area_summary_is_exact_on_a_hand_made_map():
    class_map = np.zeros((10, 20), np.uint8)  # 200 pixels
    class_map[:, :8] = 1  # road: 80
    class_map[2:4, 10:13] = 2  # person: 6
    class_map[9, 19] = 3  # car: 1
    seg = Segmentation(class_map, ("background", "road", "person", "car", "bicycle"))
    assert area_summary(seg) == {"background": 0.565, "road": 0.4, "person": 0.03, "car": 0.005}
    assert list(area_summary(seg)) == ["background", "road", "person", "car"]  # largest first, absent classes left out
    masks = class_masks(seg)
    assert [(c, label) for c, label, _ in masks] == [(1, "road"), (2, "person"), (3, "car")]  # no background
    assert masks[1][2].area == 6 and masks[1][2].frame_size == (20, 10)


def test_encode_picks_the_format():
    mask = Mask.from_full(shape_masks(7, 1)[0])
    assert set(encode(mask, masks=MaskFormat.RLE)) == {"rle"}
    assert set(encode(mask, masks="polygon", vertices=30)) == {"polygons"}
    assert encode(mask, masks="summary") is None
    with pytest.raises(ValueError):
        encode(mask, masks="png")
