"""Which head a model's outputs form: shapes first, values where shapes cannot tell."""

from __future__ import annotations

import numpy as np
import pytest

from edge_sdk.bundle import Task
from edge_sdk.converters.heads import recognise, settle
from edge_sdk.errors import ModelError


@pytest.mark.parametrize("shapes, decoder, layout, classes", [
    ([(1, 10)], "classification", "classification", 10),
    ([(None, 10)], "classification", "classification", 10),
    ([(1, 25200, 85)], "yolo", "v5", 80),
    ([(1, 84, 8400)], "yolo", "v8", 80),
    ([(1, 300, 6)], "yolo", "e2e", None),
    ([(1, 8400, 4), (1, 8400, 80)], "yolo", "split", 80),
    ([(1, 8400, 80), (1, 8400, 4)], "yolo", "split", 80),
    ([(1, 4, 8400), (1, 80, 8400)], "yolo", "split", 80),
    ([(1, 10, 4), (1, 10), (1, 10), (1,)], "ssd", "ssd", None),
])
def test_known_heads_are_recognised_from_their_shapes(shapes, decoder, layout, classes):
    head = recognise(shapes)
    assert head is not None and head.decoder == decoder and head.layout == layout and head.num_classes == classes
    assert head.task is (Task.CLASSIFICATION if decoder == "classification" else Task.DETECTION)


@pytest.mark.parametrize("shapes", [
    [(1, 896, 16), (1, 896, 1)],  # MediaPipe's face detector: regressors and scores, no known head
    [(1, 64, 20, 20)],
    [(1, 1)],
    [(2, 10)],  # a batch of two is no image model's output
    [(1, 10), (1, 10), (1, 10)],
])
def test_other_outputs_match_no_head(shapes):
    assert recognise(shapes) is None


def test_split_boxes_and_scores_of_equal_shape_take_the_source_order():
    head = recognise([(1, 400, 4), (1, 400, 4)])
    assert head.options["boxes_output"] == 0 and head.num_classes == 4


def _rows(k: int, *, classes: int, e2e: bool, rng) -> np.ndarray:
    x1, y1 = rng.uniform(0, 100, k), rng.uniform(0, 100, k)
    rows = np.stack([x1, y1, x1 + rng.uniform(5, 50, k), y1 + rng.uniform(5, 50, k), rng.uniform(0.1, 1, k),
                     rng.integers(0, classes, k) if e2e else rng.uniform(0, 1, k)], axis=1)
    return rows[None].astype(np.float32)


def test_a_k_by_6_head_is_end_to_end_only_when_its_values_say_so():
    rng = np.random.default_rng(0)
    head = recognise([(1, 300, 6)])
    e2e = settle(head, [_rows(300, classes=3, e2e=True, rng=rng)], labels=3)
    assert e2e.layout == "e2e" and e2e.num_classes == 3 and e2e.options["normalized"] is False
    # The same shape with a class probability in the last column is a one-class YOLOv5 head.
    v5 = settle(head, [_rows(300, classes=3, e2e=False, rng=rng)], labels=None)
    assert v5.layout == "v5" and v5.num_classes == 1
    with pytest.raises(ModelError, match="--labels"):
        settle(head, [_rows(300, classes=3, e2e=True, rng=rng)], labels=None)
    with pytest.raises(ModelError, match="predicts class 2 but only 2 labels"):
        settle(head, [_rows(300, classes=3, e2e=True, rng=np.random.default_rng(1))], labels=2)


def test_settle_reads_box_units_and_corner_format_off_the_values():
    rng = np.random.default_rng(0)
    v8 = recognise([(1, 6, 50)])
    pixels = rng.uniform(0, 160, (1, 6, 50)).astype(np.float32)
    assert settle(v8, [pixels], labels=None).options["normalized"] is False
    assert settle(v8, [pixels / 160], labels=None).options["normalized"] is True

    split = recognise([(1, 50, 4), (1, 50, 2)])
    corners = _rows(50, classes=2, e2e=True, rng=rng)[..., :4]
    scores = rng.uniform(0, 1, (1, 50, 2)).astype(np.float32)
    assert settle(split, [corners, scores], labels=None).options["box_format"] == "xyxy"
    centres = np.concatenate([rng.uniform(40, 150, (1, 50, 2)), rng.uniform(5, 30, (1, 50, 2))], axis=2).astype(np.float32)
    assert settle(split, [centres, scores], labels=None).options["box_format"] == "cxcywh"
