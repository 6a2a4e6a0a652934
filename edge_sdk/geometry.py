"""Points, polygons and lines in normalised frame coordinates (x right, y down, 0-1)."""

from __future__ import annotations

from collections.abc import Sequence

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
