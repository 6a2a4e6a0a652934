"""Greedy non-maximum suppression in numpy, shared by the decoders that need it."""

from __future__ import annotations

import numpy as np


def pairwise_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one ``(x1, y1, x2, y2)`` box with each row of ``boxes``."""
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0.0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0.0, None)
    inter = ix * iy
    area = max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0.0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0.0, None)
    union = area + areas - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    *,
    iou_threshold: float,
    max_detections: int,
    classes: np.ndarray | None = None,
) -> np.ndarray:
    """Indices of the boxes kept, best score first.

    ``boxes`` is ``[N, 4]`` as ``x1, y1, x2, y2``; a box is dropped when its IoU with a better kept
    box is above ``iou_threshold``. With ``classes``, only boxes of the same class suppress each other.
    """
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be within 0-1, not {iou_threshold}")
    if max_detections < 1:
        raise ValueError(f"max_detections must be at least 1, not {max_detections}")
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(boxes) != len(scores):
        raise ValueError(f"{len(boxes)} boxes but {len(scores)} scores")
    if classes is not None:
        # Shifting each class into its own region of the plane makes one pass class-aware:
        # boxes of different classes can then never overlap.
        span = float(np.max(boxes) - np.min(boxes)) + 1.0 if len(boxes) else 0.0
        boxes = boxes + (np.asarray(classes, dtype=np.float64).reshape(-1, 1) * span)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size and len(keep) < max_detections:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        order = rest[pairwise_iou(boxes[best], boxes[rest]) <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)
