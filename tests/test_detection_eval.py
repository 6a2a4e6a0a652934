"""Detection scoring (mAP, precision, recall) against hand-computed cases, and YOLO dataset reading."""

from __future__ import annotations

import numpy as np
import pytest

from edge_sdk.converters.detection_eval import (
    agreement, average_precision, detection_metrics, iou_matrix, is_yolo_dataset, load_yolo, precision_recall,
)
from edge_sdk.errors import DatasetError
from edge_sdk.samples import shapes
from edge_sdk.preprocess import Preprocessing

SPEC = Preprocessing(width=64, height=64, channels=3)


def _truth(*boxes) -> np.ndarray:
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 5)


def _found(*rows) -> np.ndarray:
    return np.asarray(rows, dtype=np.float64).reshape(-1, 6)


def test_iou_of_known_boxes():
    a = np.array([[0, 0, 10, 10]], dtype=float)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], dtype=float)
    assert np.allclose(iou_matrix(a, b), [[1.0, 50 / 150, 0.0]])


def test_perfect_detections_score_one_and_misses_score_zero():
    truth = [_truth((0, 10, 10, 50, 50), (1, 60, 60, 90, 90))]
    perfect = [_found((0, 10, 10, 50, 50, 0.9), (1, 60, 60, 90, 90, 0.8))]
    scores = detection_metrics(perfect, truth, 2)
    assert scores.map50 == pytest.approx(1.0) and scores.map50_95 == pytest.approx(1.0)
    assert (scores.precision, scores.recall) == (1.0, 1.0)
    shifted = [_found((0, 30, 30, 70, 70, 0.9), (1, 60, 60, 90, 90, 0.8))]  # class 0 box at IoU 0.14
    assert detection_metrics(shifted, truth, 2).map50 == pytest.approx(0.5)


def test_a_false_positive_ranked_first_halves_precision_at_full_recall():
    """Two truths of one class; ranking FP (0.9), TP (0.8), TP (0.7).

    Recall 0.5 is reached at precision 1/2 and recall 1.0 at 2/3; the interpolated envelope is 2/3
    for every recall point, so COCO's 101-point AP is 2/3.
    """
    truth = [_truth((0, 0, 0, 10, 10)), _truth((0, 20, 20, 30, 30))]
    found = [_found((0, 50, 50, 60, 60, 0.9), (0, 0, 0, 10, 10, 0.8)), _found((0, 20, 20, 30, 30, 0.7))]
    assert average_precision(found, truth, 0, 0.5) == pytest.approx(2 / 3)


def test_a_duplicate_box_is_a_false_positive_and_wrong_class_never_matches():
    truth = [_truth((0, 0, 0, 10, 10))]
    found = [_found((0, 0, 0, 10, 10, 0.9), (0, 0, 0, 10, 10, 0.8), (1, 0, 0, 10, 10, 0.95))]
    precision, recall = precision_recall(found, truth, score=0.5)
    assert (precision, recall) == (pytest.approx(1 / 3), 1.0)
    assert average_precision(found, truth, 1, 0.5) is None  # no truth of class 1: not counted in the mean


def test_stricter_iou_thresholds_lower_map50_95_only():
    truth = [_truth((0, 0, 0, 100, 100))]
    found = [_found((0, 0, 0, 100, 80, 0.9))]  # IoU 0.8
    scores = detection_metrics(found, truth, 1)
    assert scores.map50 == pytest.approx(1.0)
    assert scores.map50_95 == pytest.approx(7 / 10)  # matches at 0.50 ... 0.80, not at 0.85 ... 0.95


def test_agreement_counts_the_reference_boxes_the_converted_model_keeps():
    reference = [_found((0, 0, 0, 10, 10, 0.9), (1, 20, 20, 30, 30, 0.8), (1, 40, 40, 50, 50, 0.1))]
    converted = [_found((0, 0, 0, 10, 10, 0.7))]
    assert agreement(reference, converted) == pytest.approx(0.5)  # the 0.1 box is not a confident one


def test_generated_yolo_dataset_reads_back_with_exact_boxes(tmp_path):
    root = shapes.write_yolo(tmp_path / "set", 12, seed=3, photos=("astronaut",), width=96, height=80)
    assert is_yolo_dataset(root)
    data = load_yolo(root, SPEC, what="--val")
    assert data.class_names == shapes.CLASSES and len(data) == 12
    assert data.images.shape == (12, 64, 64, 3)
    boxes = np.concatenate(data.truth)
    assert len(boxes) > 0 and boxes[:, 1:].min() >= 0 and boxes[:, 3].max() <= 96 and boxes[:, 4].max() <= 80
    assert set(boxes[:, 0].astype(int)) <= set(range(len(shapes.CLASSES)))


@pytest.mark.parametrize("line, message", [
    ("0 0.5 0.5 0.2", "expected 'class cx cy w h'"),
    ("9 0.5 0.5 0.2 0.2", "class below 4"),
    ("0 0.5 0.5 1.7 0.2", "0-1 box"),
    ("zero 0.5 0.5 0.2 0.2", "expected 'class cx cy w h'"),
])
def test_bad_label_lines_name_the_file_and_line(tmp_path, line, message):
    root = shapes.write_yolo(tmp_path / "set", 2, seed=1, photos=("astronaut",), width=64, height=64)
    (root / "labels" / "00001.txt").write_text("0 0.5 0.5 0.2 0.2\n" + line + "\n")
    with pytest.raises(DatasetError, match=rf"00001.txt:2: .*{message}"):
        load_yolo(root, SPEC, what="--val")


def test_a_dataset_without_class_names_or_folders_is_refused(tmp_path):
    root = shapes.write_yolo(tmp_path / "set", 2, seed=1, photos=("astronaut",), width=64, height=64)
    (root / "classes.txt").unlink()
    with pytest.raises(DatasetError, match="names no classes"):
        load_yolo(root, SPEC, what="--val")
    (root / "data.yaml").write_text("names: {0: circle, 1: square, 2: triangle, 3: star}\n")
    assert load_yolo(root, SPEC, what="--val").class_names == shapes.CLASSES
    with pytest.raises(DatasetError, match="not a YOLO dataset"):
        load_yolo(tmp_path, SPEC, what="--val")
