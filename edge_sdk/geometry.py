"""Points, polygons and lines in normalised frame coordinates (x right, y down, 0-1)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Point = tuple[float, float]


def inside(point: Point, polygon: Sequence[Point]) -> bool:
    """Whether ``point`` is inside ``polygon`` (even-odd rule; a point on an edge may go either way)."""
    x, y = point
    result = False
    j = len(polygon) - 1
    for i in range(len(polygon)):
        xi, yi = polygon[i]
        xj, yj = polygon[j]
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            result = not result
        j = i
    return result


def signed_distance(point: Point, origin: Point, normal: Point) -> float:
    """How far ``point`` lies from the line through ``origin`` along its unit ``normal``."""
    return (point[0] - origin[0]) * normal[0] + (point[1] - origin[1]) * normal[1]


def along(point: Point, a: Point, b: Point) -> float:
    """Where ``point`` projects on the segment a-b: 0 at a, 1 at b (outside 0-1: beyond its ends)."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    length2 = dx * dx + dy * dy
    return ((point[0] - a[0]) * dx + (point[1] - a[1]) * dy) / length2 if length2 else 0.0


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every (x1, y1, x2, y2) row of ``a`` with every row of ``b``, by broadcasting
    (0 where a union is empty)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=2)
    union = np.prod(a[:, 2:] - a[:, :2], axis=1)[:, None] + np.prod(b[:, 2:] - b[:, :2], axis=1)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter, dtype=float), where=union > 0)
