"""Masks on the wire: COCO run-length encoding, simplified polygons, and a class-area summary.

Device side, numpy and OpenCV only. The RLE is byte-compatible with pycocotools (the format every
COCO tool reads): runs over the frame in column-major order, the first run background (possibly
empty), written as pycocotools' compressed ``counts`` string. Polygons are what a dashboard draws
without a decoder: each part's outer contour, simplified under a vertex budget, in 0-1 frame
coordinates of boundary-pixel centres, so ``cv2.fillPoly`` on ``round(x * width), round(y * height)``
gives the mask back (:func:`polygons_to_bitmap`).
"""

from __future__ import annotations

import enum
import math
from typing import Protocol

import numpy as np

MIN_VERTICES = 3  # a part with fewer is a speck (or a line) and is left out of polygons
DEFAULT_VERTICES = 100  # per mask, all its parts together: about 1.4 KB of JSON


class Mask(Protocol):
    """What is read of a :class:`edge_sdk.results.Mask` (results.py encodes its masks through this
    module, so this one does not import it)."""

    x: int
    y: int
    bitmap: np.ndarray
    frame_size: tuple[int, int]


class Segmentation(Protocol):
    """What is read of a :class:`edge_sdk.results.Segmentation`."""

    pixels: np.ndarray  # source-frame pixels per class id

    def areas(self) -> dict[str, float]: ...

    def label(self, class_id: int) -> str: ...

    def mask(self, class_id: int) -> Mask: ...


class MaskFormat(str, enum.Enum):
    """How masks travel in a payload."""

    POLYGON = "polygon"  # simplified outer contours, 0-1 frame coordinates: drawable anywhere
    RLE = "rle"  # COCO run-length encoding: exact pixels, decoded with pycocotools or decode_rle
    SUMMARY = "summary"  # no masks: a semantic frame's class areas only, detections without their masks


def encode(mask: Mask, *, masks: MaskFormat | str, vertices: int = DEFAULT_VERTICES) -> dict | None:
    """The wire form of one mask, ``{"rle": {...}}`` or ``{"polygons": [...]}``, or None for SUMMARY."""
    kind = MaskFormat(masks)
    if kind is MaskFormat.RLE:
        return {"rle": encode_rle(mask)}
    if kind is MaskFormat.POLYGON:
        return {"polygons": encode_polygons(mask, vertices=vertices)}
    return None


# -- RLE -------------------------------------------------------------------------------------------


def _runs(mask: Mask) -> np.ndarray:
    """Start and end (exclusive) of each foreground run, as indices into the frame in column-major
    order, computed on the mask's box alone (the full frame is never built)."""
    width, height = mask.frame_size
    h, w = mask.bitmap.shape
    if mask.bitmap.size == 0 or not mask.bitmap.any():
        return np.zeros((0, 2), dtype=np.int64)
    columns = np.zeros((w, h + 2), dtype=np.int8)
    columns[:, 1:-1] = mask.bitmap.T  # one row per image column, padded with background at both ends
    change = np.diff(columns, axis=1)  # w x (h + 1): +1 where a run starts, -1 just past where it ends
    start_col, start_row = np.nonzero(change == 1)
    end_col, end_row = np.nonzero(change == -1)
    # np.nonzero walks row-major over (column, row): runs come out in column-major frame order.
    starts = (mask.x + start_col).astype(np.int64) * height + mask.y + start_row
    ends = (mask.x + end_col).astype(np.int64) * height + mask.y + end_row
    # A run that reaches the frame's bottom row goes on at the top of the next column.
    joined = np.flatnonzero(ends[:-1] == starts[1:])
    if joined.size:
        keep_start = np.ones(len(starts), dtype=bool)
        keep_start[joined + 1] = False
        keep_end = np.ones(len(ends), dtype=bool)
        keep_end[joined] = False
        starts, ends = starts[keep_start], ends[keep_end]
    return np.stack([starts, ends], axis=1)


def rle_counts(mask: Mask) -> list[int]:
    """The mask's uncompressed COCO run lengths over the whole frame (background first)."""
    width, height = mask.frame_size
    runs = _runs(mask)
    if len(runs) == 0:
        return [width * height]
    edges = np.concatenate([[0], runs.ravel(), [width * height]])
    counts = np.diff(edges)
    if counts[-1] == 0:
        counts = counts[:-1]  # pycocotools ends on the last run, with no empty background after it
    return counts.tolist()


def compress_counts(counts: list[int]) -> str:
    """Run lengths as pycocotools' ``rleToString``: each a delta from the run two before (after the
    first three), in 5-bit groups, low first, with a continuation bit, offset into printable ASCII.

    Vectorised over the runs (a ragged mask has tens of thousands): one pass per 5-bit group."""
    x = np.asarray(counts, dtype=np.int64).copy()
    if x.size == 0:
        return ""
    if x.size > 3:
        x[3:] -= np.asarray(counts[1:-2], dtype=np.int64)
    groups = np.zeros((x.size, 13), dtype=np.uint8)  # 13 x 5 bits hold any int64
    length = np.zeros(x.size, dtype=np.int64)
    active = np.ones(x.size, dtype=bool)
    for k in range(13):
        c = x & 0x1F
        x >>= 5  # arithmetic shift, as pycocotools' on a signed long
        more = np.where(c & 0x10, x != -1, x != 0) & active
        groups[:, k] = c + 48 + 0x20 * more
        length += active
        active = more
        if not active.any():
            break
    return groups[np.arange(13) < length[:, None]].tobytes().decode("ascii")


def decompress_counts(text: str) -> list[int]:
    """The run lengths of a pycocotools ``counts`` string (the inverse of :func:`compress_counts`)."""
    counts: list[int] = []
    p, n = 0, len(text)
    while p < n:
        x = k = 0
        while True:
            if p >= n:
                raise ValueError("RLE counts string ends inside a number")
            c = ord(text[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"RLE counts string has a character out of range: {text[p]!r}")
            x |= (c & 0x1F) << (5 * k)
            p, k = p + 1, k + 1
            if not c & 0x20:
                if c & 0x10:
                    x |= -1 << (5 * k)
                break
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def encode_rle(mask: Mask) -> dict:
    """``{"size": [height, width], "counts": "<compressed>"}`` of the mask over its whole frame."""
    width, height = mask.frame_size
    return {"size": [height, width], "counts": compress_counts(rle_counts(mask))}


def decode_rle(rle: dict) -> np.ndarray:
    """The frame-sized boolean bitmap of a COCO RLE (compressed string or a list of counts)."""
    height, width = (int(v) for v in rle["size"])
    counts = rle["counts"]
    counts = decompress_counts(counts) if isinstance(counts, str) else [int(c) for c in counts]
    if any(c < 0 for c in counts) or sum(counts) != height * width:
        raise ValueError(f"RLE counts cover {sum(counts)} pixels, not the {height}x{width} frame's {height * width}")
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, counts)
    return flat.reshape(width, height).T


# -- polygons --------------------------------------------------------------------------------------


def _contours(mask: Mask) -> list[np.ndarray]:
    """Each part's outer contour in frame pixels (n x 2 int32), largest part first."""
    import cv2

    if mask.bitmap.size == 0:
        return []
    found, _ = cv2.findContours(mask.bitmap.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE,
                                offset=(mask.x, mask.y))
    parts = sorted(found, key=lambda c: (cv2.contourArea(c), len(c)), reverse=True)
    return [p.reshape(-1, 2) for p in parts]


def _simplify(parts: list[np.ndarray], epsilon: float) -> list[np.ndarray]:
    import cv2

    out = []
    for part in parts:
        if len(part) < MIN_VERTICES:
            continue  # a speck or a line one pixel wide: no area to draw
        simple = cv2.approxPolyDP(part.reshape(-1, 1, 2), epsilon, True).reshape(-1, 2) if epsilon > 0 else part
        if len(simple) < MIN_VERTICES:
            simple = _triangle(part)
        if len(simple) >= MIN_VERTICES:
            out.append(simple)
    return out


def _triangle(part: np.ndarray) -> np.ndarray:
    """The coarsest outline of a part Douglas-Peucker took down to a line: its two farthest points
    and the point farthest from the line between them, in contour order."""
    points = part.astype(np.float64)
    a = int(np.argmax(((points - points[0]) ** 2).sum(axis=1)))
    b = int(np.argmax(((points - points[a]) ** 2).sum(axis=1)))
    (ax, ay), (bx, by) = points[a], points[b]
    distance = np.abs((bx - ax) * (points[:, 1] - ay) - (by - ay) * (points[:, 0] - ax))
    c = int(np.argmax(distance))
    return part[sorted({a, b, c})] if len({a, b, c}) == 3 else part[:0]


def _within(parts: list[np.ndarray], budget: int) -> list[np.ndarray]:
    """The largest parts whose vertices fit ``budget`` (smaller parts give way first)."""
    kept, used = [], 0
    for part in parts:
        if used + len(part) <= budget:
            kept.append(part)
            used += len(part)
    return kept


def simplify(mask: Mask, *, vertices: int) -> list[np.ndarray]:
    """The mask's parts as polygons in frame pixels with at most ``vertices`` vertices in all.

    The tolerance is the smallest (to a twentieth of a pixel) that brings the total within the
    budget, found by bisection; the sub-pixel step of 0.5 px is always taken, as it only removes
    the contour's staircase. When the budget cannot hold every part, the smallest parts go.
    """
    if vertices < MIN_VERTICES:
        raise ValueError(f"vertices must be at least {MIN_VERTICES}, got {vertices}")
    # Each part kept needs MIN_VERTICES: the smaller parts past that many can never be sent, and a
    # ragged mask has thousands of specks the bisection would otherwise simplify again and again.
    parts = _contours(mask)[: vertices // MIN_VERTICES]
    if not parts:
        return []
    chosen = _simplify(parts, 0.5)
    if sum(len(p) for p in chosen) > vertices:
        height, width = mask.bitmap.shape
        low, high = 0.5, max(2.0, float(math.hypot(width, height)))
        best = _simplify(parts, high)
        while high - low > 0.05:
            middle = (low + high) / 2
            trial = _simplify(parts, middle)
            if sum(len(p) for p in trial) <= vertices:
                high, best = middle, trial
            else:
                low = middle
        chosen = best
    return _within(chosen, vertices)


def decimals(frame_size: tuple[int, int]) -> int:
    """Digits after the point that place a vertex within a quarter pixel of the frame."""
    return max(3, math.ceil(math.log10(4 * max(frame_size))))


def encode_polygons(mask: Mask, *, vertices: int) -> list[list[float]]:
    """The mask as ``[[x1, y1, x2, y2, ...], ...]`` in 0-1 frame coordinates, largest part first."""
    width, height = mask.frame_size
    places = decimals(mask.frame_size)
    out = []
    for part in simplify(mask, vertices=vertices):
        xy = np.round(part.astype(np.float64) / (width, height), places)
        out.append(xy.ravel().tolist())
    return out


def polygons_to_bitmap(polygons: list[list[float]], frame_size: tuple[int, int]) -> np.ndarray:
    """The frame-sized boolean bitmap of polygons in 0-1 frame coordinates (boundary included)."""
    import cv2

    width, height = frame_size
    canvas = np.zeros((height, width), dtype=np.uint8)
    points = [np.rint(np.asarray(p, dtype=np.float64).reshape(-1, 2) * (width, height)).astype(np.int32) for p in polygons if len(p) >= 2]
    if points:
        cv2.fillPoly(canvas, points, 1)
    return canvas.astype(bool)


# -- semantic maps ---------------------------------------------------------------------------------


def area_summary(segmentation: Segmentation, *, places: int = 4) -> dict[str, float]:
    """Label -> share of the frame (0-1, rounded to ``places``), largest first: the cheapest account
    of a semantic map (road 0.41, person 0.03)."""
    return {label: round(share, places) for label, share in segmentation.areas().items()}


def class_masks(segmentation: Segmentation, *, skip: tuple[str, ...] = ("background",)) -> list[tuple[int, str, Mask]]:
    """``(class id, label, mask)`` of each class present, largest first; classes named in ``skip``
    (the background, which the other classes' masks already imply) are left out."""
    counts = segmentation.pixels
    order = np.argsort(-counts, kind="stable")
    out = []
    for class_id in order:
        if not counts[class_id]:
            break
        label = segmentation.label(int(class_id))
        if label.lower() in skip:
            continue
        out.append((int(class_id), label, segmentation.mask(int(class_id))))
    return out
