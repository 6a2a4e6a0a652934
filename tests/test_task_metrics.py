"""Scores of the new tasks on hand-built predictions: mean IoU and pixel accuracy, mask mAP, OKS
keypoint mAP and PCK, against hand-computed values and against pycocotools' COCOeval on the same
small synthetic sets."""

from __future__ import annotations

import contextlib
import io

import cv2
import numpy as np
import pytest

from edge_sdk.converters import evaluate
from edge_sdk.converters.detection_eval import Objects, greedy_match
from edge_sdk.converters.pose_eval import PoseSet, landmark_agreement, landmark_metrics, oks_matrix, pose_metrics, sigmas_for
from edge_sdk.converters.segmentation_eval import (
    InstanceSet, SemanticSet, instance_metrics, mask_iou_matrix, pixel_agreement, rasterise, semantic_metrics,
)
from edge_sdk.results import Mask

mask_utils = pytest.importorskip("pycocotools.mask")
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402



def _images(n: int) -> np.ndarray:
    return np.zeros((n, 1, 1, 3), dtype=np.uint8)


# -- semantic -----------------------------------------------------------------------------------

def test_mean_iou_and_pixel_accuracy_of_a_hand_counted_pair():
    truth = [np.array([[0, 0, 1], [1, 1, 255]], dtype=np.uint8), np.array([[2, 2]], dtype=np.uint8)]
    found = [np.array([[0, 1, 1], [1, 0, 3]], dtype=np.uint8), np.array([[2, 0]], dtype=np.uint8)]
    # Scored pixels: 7 (one is 255). Class 0: tp 1, fp 2, fn 1 -> 1/4. Class 1: tp 2, fp 1, fn 1 -> 2/4.
    # Class 2: tp 1, fn 1 -> 1/2. Class 3 is predicted only on an ignored pixel: absent.
    scores = semantic_metrics(found, truth, 4)
    assert scores.miou == pytest.approx((1 / 4 + 2 / 4 + 1 / 2) / 3)
    assert scores.pixel_accuracy == pytest.approx(4 / 7)
    assert scores.score == scores.miou and scores.score_name == "mean IoU"


def test_a_class_only_predicted_counts_with_iou_zero():
    truth = [np.zeros((2, 2), dtype=np.uint8)]
    found = [np.array([[0, 0], [0, 1]], dtype=np.uint8)]
    assert semantic_metrics(found, truth, 2).miou == pytest.approx((3 / 4 + 0) / 2)
    assert semantic_metrics(truth, truth, 2).miou == 1.0


def test_pixel_agreement_and_the_pixel_confusion_matrix():
    a = [np.array([[0, 1], [2, 2]], dtype=np.uint8)]
    b = [np.array([[0, 1], [2, 1]], dtype=np.uint8)]
    assert pixel_agreement(a, b) == 0.75
    val = SemanticSet(_images(1), None, ("a", "b", "c"), truth=tuple(a))
    assert evaluate.agreement(val, a, b) == 0.75
    matrix = evaluate.confusion_of(val, b, 3)
    assert matrix.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]


# -- masks --------------------------------------------------------------------------------------

def test_a_polygon_rasterises_to_the_pixels_it_covers():
    square = np.array([[0.25, 0.25], [0.75, 0.25], [0.75, 0.75], [0.25, 0.75]])
    mask = rasterise(square, width=40, height=20)
    assert (mask.x, mask.y, mask.bitmap.shape) == (10, 5, (10, 20))  # rows 5-14, columns 10-29
    assert mask.area == 200 and mask.frame_size == (40, 20)


def test_mask_iou_from_crops_equals_full_frame_iou():
    rng = np.random.default_rng(0)
    masks = [Mask.from_full(rng.random((30, 40)) < p) for p in (0.1, 0.5, 0.9)]
    masks.append(Mask.from_full(np.zeros((30, 40), dtype=bool)))
    found = mask_iou_matrix(masks, masks)
    for i, a in enumerate(masks):
        for j, b in enumerate(masks):
            assert found[i, j] == pytest.approx(a.iou(b))


def test_greedy_matching_prefers_counted_truth_and_drops_what_takes_ignored_truth():
    similarity = np.array([[0.9, 0.6], [0.8, 0.1], [0.1, 0.7]])
    hits, dropped = greedy_match(similarity, 0.5, np.array([True, False]))
    # First detection takes the counted truth (0.6) though the ignored one is closer; the second
    # falls back on the ignored truth and is dropped; the third finds nothing free.
    assert hits.tolist() == [True, False, False] and dropped.tolist() == [False, True, False]


def _ellipse(rng, height: int, width: int) -> np.ndarray:
    canvas = np.zeros((height, width), dtype=np.uint8)
    centre = (int(rng.integers(5, width - 5)), int(rng.integers(5, height - 5)))
    axes = (int(rng.integers(5, 14)), int(rng.integers(5, 12)))
    cv2.ellipse(canvas, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return canvas.astype(bool)


def _shifted(full: np.ndarray, rng) -> np.ndarray:
    dy, dx = (int(v) for v in rng.integers(-2, 3, size=2))
    out = np.zeros_like(full)
    h, w = full.shape
    out[max(0, dy):h + min(0, dy), max(0, dx):w + min(0, dx)] = full[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
    return out


def _instance_scene(seed: int, images: int = 12, height: int = 40, width: int = 48):
    """Truth ellipses of two classes; detections: shifted copies (sometimes the wrong class) and strays."""
    rng = np.random.default_rng(seed)
    truth, found = [], []
    for _ in range(images):
        gts = [(int(rng.integers(0, 2)), _ellipse(rng, height, width)) for _ in range(int(rng.integers(0, 5)))]
        dets = []
        for c, full in gts:
            if rng.random() < 0.85:
                dets.append((c if rng.random() < 0.9 else 1 - c, _shifted(full, rng), float(rng.random())))
        dets += [(int(rng.integers(0, 2)), _ellipse(rng, height, width), float(rng.random())) for _ in range(int(rng.integers(0, 3)))]
        truth.append(gts)
        found.append(dets)
    return truth, found


def _box(full: np.ndarray) -> tuple[float, float, float, float]:
    rows, cols = np.flatnonzero(full.any(axis=1)), np.flatnonzero(full.any(axis=0))
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


def _coco_stats(gt: dict, dt: list, kind: str, sigmas: np.ndarray | None = None) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        result = coco.loadRes(dt)
        run = COCOeval(coco, result, kind)
        if sigmas is not None:
            run.params.kpt_oks_sigmas = sigmas
        run.evaluate()
        run.accumulate()
        run.summarize()
    return run.stats


def _rle(full: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(full.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_mask_map_agrees_with_pycocotools(seed):
    truth, found = _instance_scene(seed)
    height, width = truth[0][0][1].shape if truth[0] else (40, 48)
    val = InstanceSet(
        _images(len(truth)), None, ("a", "b"),
        truth=tuple(np.array([(c, *_box(m)) for c, m in gts]).reshape(-1, 5) for gts in truth),
        masks=tuple(tuple(Mask.from_full(m) for _, m in gts) for gts in truth),
    )
    objects = [Objects(np.array([(c, *_box(m), s) if m.any() else (c, 0, 0, 0, 0, s) for c, m, s in dets]).reshape(-1, 6),
                       tuple(Mask.from_full(m) for _, m, _ in dets)) for dets in found]
    ours = instance_metrics(objects, val, 2)

    gt = {"images": [{"id": i, "height": 40, "width": 48} for i in range(len(truth))],
          "categories": [{"id": 0, "name": "a"}, {"id": 1, "name": "b"}], "annotations": []}
    for i, gts in enumerate(truth):
        for c, m in gts:
            x1, y1, x2, y2 = _box(m)
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": i, "category_id": c, "iscrowd": 0,
                                      "segmentation": _rle(m), "area": float(m.sum()), "bbox": [x1, y1, x2 - x1, y2 - y1]})
    dt = [{"image_id": i, "category_id": c, "segmentation": _rle(m), "score": s}
          for i, dets in enumerate(found) for c, m, s in dets]
    stats = _coco_stats(gt, dt, "segm")
    assert 0.05 < ours.mask_map50_95 < 0.95  # a set that discriminates: neither empty nor perfect
    assert ours.mask_map50_95 == pytest.approx(stats[0], abs=1e-6)
    assert ours.mask_map50 == pytest.approx(stats[1], abs=1e-6)
    assert ours.map50 is not None and ours.score == ours.mask_map50_95


def test_perfect_masks_score_one_and_instance_agreement_reads_boxes():
    full = np.zeros((20, 20), dtype=bool)
    full[2:10, 3:12] = True
    val = InstanceSet(_images(1), None, ("a",), truth=(np.array([[0, 3, 2, 12, 10]], dtype=float),),
                      masks=((Mask.from_full(full),),))
    perfect = [Objects(np.array([[0, 3, 2, 12, 10, 0.9]]), (Mask.from_full(full),))]
    scores = instance_metrics(perfect, val, 1)
    assert (scores.mask_map50, scores.mask_map50_95, scores.map50_95) == (1.0, 1.0, 1.0)
    empty = [Objects(np.zeros((0, 6)), ())]
    assert instance_metrics(empty, val, 1).mask_map50 == 0.0
    assert evaluate.agreement(val, perfect, empty) == 0.0 and evaluate.agreement(val, perfect, perfect) == 1.0


# -- keypoints ----------------------------------------------------------------------------------

def _pose_scene(seed: int, count: int, images: int = 10):
    """People as boxes with keypoints inside; some points unlabelled, some people with none labelled;
    detections: jittered copies (jitter scaled to the box) and strays."""
    rng = np.random.default_rng(seed)
    truth, found = [], []
    for _ in range(images):
        people, dets = [], []
        for _ in range(int(rng.integers(0, 4))):
            x1, y1 = rng.uniform(0, 200, size=2)
            w, h = rng.uniform(20, 120, size=2)
            points = np.column_stack([rng.uniform(x1, x1 + w, count), rng.uniform(y1, y1 + h, count),
                                      rng.choice([0, 1, 2], size=count, p=[0.2, 0.2, 0.6]).astype(float)])
            if rng.random() < 0.15:
                points[:, 2] = 0  # a person with no labelled point: ignored
                points[:, :2] = 0
            people.append((0, (x1, y1, x1 + w, y1 + h), points))
            if rng.random() < 0.85:
                jitter = rng.normal(0, rng.uniform(0.01, 0.15) * np.sqrt(w * h), size=(count, 2))
                guess = np.column_stack([points[:, :2] + jitter, rng.uniform(0.2, 1, count)])
                if not points[:, 2].any():
                    guess[:, :2] = np.column_stack([rng.uniform(x1, x1 + w, count), rng.uniform(y1, y1 + h, count)])
                dets.append((0, guess, float(rng.random())))
        for _ in range(int(rng.integers(0, 2))):
            x1, y1 = rng.uniform(0, 200, size=2)
            dets.append((0, np.column_stack([rng.uniform(x1, x1 + 60, count), rng.uniform(y1, y1 + 60, count),
                                             np.ones(count)]), float(rng.random())))
        truth.append(people)
        found.append(dets)
    return truth, found


def _pose_objects(found) -> list[Objects]:
    out = []
    for dets in found:
        rows = [(c, *p[:, :2].min(axis=0), *p[:, :2].max(axis=0), s) for c, p, s in dets]
        k = dets[0][1].shape[0] if dets else 0
        out.append(Objects(np.array(rows).reshape(-1, 6), (), np.array([p for _, p, _ in dets]).reshape(len(dets), k, 3)))
    return out


@pytest.mark.parametrize("seed, count", [(1, 17), (2, 17), (3, 5)])
def test_keypoint_map_agrees_with_pycocotools(seed, count):
    truth, found = _pose_scene(seed, count)
    val = PoseSet(_images(len(truth)), None, ("person",),
                  truth=tuple(np.array([(c, *b) for c, b, _ in people]).reshape(-1, 5) for people in truth),
                  keypoints=tuple(np.array([p for _, _, p in people]).reshape(-1, count, 3) for people in truth),
                  kpt_shape=(count, 3))
    objects = _pose_objects(found)
    for o in objects:  # give every image's detections the layout the decoder would (K points even when none)
        assert o.keypoints.shape[1:] in ((count, 3), (0, 3))
    objects = [o if o.keypoints.shape[1] == count else Objects(o.boxes, (), np.zeros((0, count, 3))) for o in objects]
    ours = pose_metrics(objects, val, 1)

    gt = {"images": [{"id": i, "height": 400, "width": 400} for i in range(len(truth))],
          "categories": [{"id": 0, "name": "person", "keypoints": [str(k) for k in range(count)], "skeleton": []}],
          "annotations": []}
    for i, people in enumerate(truth):
        for c, (x1, y1, x2, y2), points in people:
            gt["annotations"].append({
                "id": len(gt["annotations"]) + 1, "image_id": i, "category_id": c, "iscrowd": 0,
                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                "keypoints": points.ravel().tolist(), "num_keypoints": int(np.count_nonzero(points[:, 2] > 0)),
            })
    dt = [{"image_id": i, "category_id": c, "keypoints": p.ravel().tolist(), "score": s}
          for i, dets in enumerate(found) for c, p, s in dets]
    stats = _coco_stats(gt, dt, "keypoints", sigmas_for(count))
    assert 0.05 < ours.kpt_map50_95 < 0.95
    assert ours.kpt_map50_95 == pytest.approx(stats[0], abs=1e-6)
    assert ours.kpt_map50 == pytest.approx(stats[1], abs=1e-6)
    assert ours.score == ours.kpt_map50_95 and ours.map50 is not None


def test_oks_of_a_hand_computed_pose():
    # Two labelled points, one unlabelled; box 10 x 10 (area 100); sigma 0.05 (K != 17): (2σ)² = 0.01.
    truth = np.array([[[10, 10, 2], [20, 20, 1], [0, 0, 0]]], dtype=float)
    found = np.array([[[13, 14, 1], [20, 20, 1], [90, 90, 1]]], dtype=float)
    expected = (np.exp(-25 / 0.01 / 100 / 2) + 1.0) / 2
    oks = oks_matrix(found, truth, np.array([[10, 10, 20, 20]], dtype=float), sigmas_for(3))
    assert oks[0, 0] == pytest.approx(expected)


def test_pck_counts_labelled_points_within_a_tenth_of_the_diagonal():
    # Box 30 x 40: diagonal 50, radius 5. Points off by 3 (in), 6 (out), unlabelled (not counted).
    truth = np.array([[[10, 10, 2], [20, 20, 2], [5, 5, 0]]], dtype=float)
    val = PoseSet(_images(2), None, ("hand",), truth=(np.array([[0, 0, 0, 30, 40]], dtype=float),) * 2,
                  keypoints=(truth, truth), kpt_shape=(3, 3), landmarks=True)
    guess = np.array([[[13, 10, 0.9], [20, 26, 0.9], [50, 50, 0.9]]])
    worse = np.array([[[0, 0, 0.9], [0, 0, 0.9], [0, 0, 0.9]]])
    found = [Objects(np.array([[0, 0, 0, 30, 40, 0.5], [0, 0, 0, 30, 40, 0.9]]), (), np.concatenate([worse, guess])),
             Objects(np.zeros((0, 6)), (), None)]  # the second image: no prediction, both points missed
    scores = landmark_metrics(found, val)
    assert scores.pck == pytest.approx(1 / 4) and scores.pck_threshold == 0.1
    assert scores.score == scores.pck and scores.score_name == "PCK"
    assert evaluate.score(val, found, 1).pck == scores.pck
    assert landmark_agreement(val, found, found) == 1.0


# -- the printed report -------------------------------------------------------------------------

def _rendered(reference, converted, **budget) -> str:
    from rich.console import Console

    from edge_sdk.render import report_tables
    from edge_sdk.report import Accuracy, ConversionReport, Remedy

    accuracy = Accuracy(images=5, reference=reference, converted=converted, agreement=0.96, max_drop=1.0,
                        within_budget=True, remedy_used="baseline",
                        remedies=[Remedy(name="baseline", top1=converted.score, map50_95=converted.map50_95),
                                  Remedy(name="per-channel", top1=None, note="skipped")], **budget)
    report = ConversionReport(source_model="m.keras", source_format="keras3", parameters=1, float_bytes=1,
                              float_gzip_bytes=1, converted_bytes=1, converted_gzip_bytes=1, seconds={},
                              accuracy=accuracy)
    console = Console(width=200, record=True)
    console.print(report_tables(report))
    return console.export_text()


def test_the_report_prints_each_tasks_figures():
    from edge_sdk.report import Metrics

    semantic = _rendered(Metrics(miou=0.8, pixel_accuracy=0.9), Metrics(miou=0.79, pixel_accuracy=0.9), drop_points=1.0)
    assert "mean IoU" in semantic and "pixel accuracy" in semantic and "pixel agreement" in semantic
    assert "1.00 pts mean IoU (within budget 1)" in semantic and "box mAP" not in semantic
    boxes = dict(map50=0.9, map50_95=0.7, precision=0.9, recall=0.8)
    instances = _rendered(Metrics(mask_map50=0.8, mask_map50_95=0.6, **boxes), Metrics(mask_map50=0.8, mask_map50_95=0.59, **boxes),
                          drop_points=1.0, drop_map50_95_points=0.0, max_drop_map50_95=2.0)
    assert "mask mAP@0.5:0.95" in instances and "box mAP@0.5:0.95" in instances and "box agreement" in instances
    assert "1.00 / 0.00 pts mask mAP@0.5:0.95 / box mAP@0.5:0.95" in instances
    pose = _rendered(Metrics(kpt_map50=0.8, kpt_map50_95=0.6, **boxes), Metrics(kpt_map50=0.8, kpt_map50_95=0.6, **boxes),
                     drop_points=0.0, drop_map50_95_points=0.0, max_drop_map50_95=2.0)
    assert "keypoint mAP@0.5:0.95" in pose and "keypoint mAP@0.5:0.95 (OKS)" in pose  # the remedies' headline column
    landmarks = _rendered(Metrics(pck=0.9, pck_threshold=0.1), Metrics(pck=0.88, pck_threshold=0.1), drop_points=2.0)
    assert "PCK" in landmarks and "0.1 x box diagonal" in landmarks and "landmark agreement" in landmarks
