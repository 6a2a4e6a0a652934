"""Draw a frame's detections on a copy of it: for snapshots, the live view and the demo's PNGs.

With an ``Overlay``, a semantic map, and a tracking camera's zones, lines, counts and trails are
drawn under the boxes; instance masks are tinted in their detection's colour and keypoints drawn
as skeletons. It runs once per streamed frame, so every region and mask is blended inside its own
bounding rectangle rather than over the whole frame (a semantic map, which covers it, excepted).
"""

from __future__ import annotations

import colorsys
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from edge_sdk.results import Detection, Keypoints, Mask, Segmentation

# BGR colours, picked by class id so one class keeps its colour from frame to frame.
_PALETTE = ((0, 255, 0), (255, 128, 0), (0, 128, 255), (255, 0, 255), (0, 255, 255), (128, 0, 255), (255, 255, 0))
# Zones and lines, by their order in the config: orange, sky blue, violet, mint, coral.
_REGIONS = ((0, 165, 255), (255, 191, 0), (211, 0, 148), (154, 250, 0), (80, 127, 255))
_FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX
_ZONE_ALPHA, _OCCUPIED_ALPHA = 0.2, 0.35
_ARROW_PX = 28
_MASK_ALPHA, _SEGMENT_ALPHA = 0.45, 0.4
KEYPOINT_MIN_SCORE = 0.5  # a keypoint scored lower is taken as not seen: neither it nor its bones are drawn


@dataclass(frozen=True)
class Overlay:
    """What a camera draws besides its boxes: a semantic model's class map, and a tracking camera's
    named zones and lines with their counts, and each track's recent path. Points are normalised (0-1)."""

    zones: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    lines: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    trails: dict[int, list[tuple[float, float]]] = field(default_factory=dict)  # track id -> points, oldest first
    counts: dict | None = None  # Counts.to_json(): occupancy per zone, in/out per line
    line_in: dict[str, tuple[float, float]] = field(default_factory=dict)  # line -> unit normal towards 'in' (LineSettings.in_normal())
    segmentation: Segmentation | None = None  # a semantic-segmentation camera's newest class map, tinted by class


@lru_cache(maxsize=1024)
def track_colour(track_id: int) -> tuple[int, int, int]:
    """A BGR colour for a track id: the same for one id in every frame, and far apart for consecutive ids."""
    hue = (track_id * 0.618033988749895) % 1.0  # golden-ratio steps spread consecutive ids around the wheel
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return (round(b * 255), round(g * 255), round(r * 255))


def annotate(frame: np.ndarray, detections: Iterable[Detection], overlay: Overlay | None = None) -> np.ndarray:
    """A BGR copy of ``frame`` with a box and a ``label score`` caption per detection.

    Detections without a box (a classifier's) are written as lines of text at the top left. A
    tracked detection is captioned ``#id label score`` in its track's colour. ``overlay`` adds zones
    (filled, with their occupancy), lines (with their in/out counts) and trails beneath the boxes.
    """
    import cv2

    image = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR) if frame.ndim == 2 else frame.copy()
    height, width = image.shape[:2]
    if overlay is not None:
        if overlay.segmentation is not None:
            draw_segmentation(image, overlay.segmentation)
        _draw_overlay(cv2, image, overlay)
    detections = list(detections)
    for detection in detections:
        if detection.mask is not None:
            draw_mask(image, detection.mask, _colour(detection))
    line = 0
    for detection in detections:
        colour = _colour(detection)
        if detection.track_id is None:
            caption = f"{detection.label} {detection.score:.2f}"
        else:
            caption = f"#{detection.track_id} {detection.label} {detection.score:.2f}"
        if detection.keypoints is not None:
            draw_skeleton(image, detection.keypoints, colour)
        if detection.box is None:
            line += 1
            cv2.putText(image, caption, (4, 14 * line), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
            continue
        x1, y1, x2, y2 = detection.box.to_pixels(width, height)
        cv2.rectangle(image, (x1, y1), (x2, y2), colour, 2)
        cv2.putText(image, caption, (x1, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
    return image


def _colour(detection: Detection) -> tuple[int, int, int]:
    if detection.track_id is None:
        return _PALETTE[detection.class_id % len(_PALETTE)]
    return track_colour(detection.track_id)


def draw_mask(image: np.ndarray, mask: Mask, colour, *, alpha: float = _MASK_ALPHA) -> None:
    """Tint ``mask``'s pixels of ``image`` (in place) towards ``colour``, inside the mask's box only."""
    height, width = image.shape[:2]
    if mask.frame_size != (width, height):
        # A frame drawn at another size than the one inferred (a resized snapshot): scale the mask.
        import cv2

        full = cv2.resize(mask.full().astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
        mask = Mask.from_full(full.astype(bool))
    h, w = mask.bitmap.shape
    if not h or not w:
        return
    region = image[mask.y : mask.y + h, mask.x : mask.x + w]
    bitmap = mask.bitmap[: region.shape[0], : region.shape[1]]
    pixels = region[bitmap].astype(np.float32)
    region[bitmap] = (pixels * (1 - alpha) + np.asarray(colour, np.float32) * alpha).astype(np.uint8)


def class_colour(class_id: int) -> tuple[int, int, int]:
    """A semantic class's BGR colour: the same for one class in every frame."""
    return track_colour(class_id + 1)


def draw_segmentation(image: np.ndarray, segmentation: Segmentation, *, alpha: float = _SEGMENT_ALPHA) -> None:
    """Tint every pixel of ``image`` (in place) by its class, leaving the background class untouched."""
    import cv2

    class_map = segmentation.class_map
    height, width = image.shape[:2]
    if class_map.shape[:2] != (height, width):
        class_map = cv2.resize(class_map, (width, height), interpolation=cv2.INTER_NEAREST)
    classes = int(class_map.max()) + 1
    lut = np.array([class_colour(c) for c in range(classes)], dtype=np.uint8)
    shown = np.array([segmentation.label(c).lower() != "background" for c in range(classes)])
    drawn = shown[class_map]
    tinted = cv2.addWeighted(lut[class_map], alpha, image, 1 - alpha, 0)
    image[drawn] = tinted[drawn]


def draw_skeleton(image: np.ndarray, keypoints: Keypoints, colour, *, min_score: float = KEYPOINT_MIN_SCORE) -> None:
    """Bones (``keypoints.skeleton``) as lines in ``colour`` and points as dots on ``image``, in
    place; a point scored under ``min_score`` is skipped, and so is every bone that ends at it."""
    import cv2

    height, width = image.shape[:2]
    points = keypoints.array()
    seen = points[:, 2] >= min_score
    xy = _pixels(points[:, :2], width, height)
    for a, b in keypoints.skeleton:
        if 0 <= a < len(points) and 0 <= b < len(points) and seen[a] and seen[b]:
            cv2.line(image, tuple(map(int, xy[a])), tuple(map(int, xy[b])), colour, 2, cv2.LINE_AA)
    for (x, y), visible in zip(xy.tolist(), seen):
        if visible:
            cv2.circle(image, (x, y), 3, (255, 255, 255), cv2.FILLED, cv2.LINE_AA)
            cv2.circle(image, (x, y), 3, colour, 1, cv2.LINE_AA)


def _pixels(points, width: int, height: int) -> np.ndarray:
    """Normalised points as an (n, 2) int32 array of pixels inside the frame."""
    array = np.asarray(points, dtype=np.float64).reshape(-1, 2) * (width, height)
    return np.clip(np.rint(array), 0, (width - 1, height - 1)).astype(np.int32)


def _draw_overlay(cv2, image: np.ndarray, overlay: Overlay) -> None:
    height, width = image.shape[:2]
    counts = overlay.counts or {}
    zone_counts, line_counts = counts.get("zones", {}), counts.get("lines", {})
    for index, (name, points) in enumerate(overlay.zones.items()):
        polygon = _pixels(points, width, height)
        if len(polygon) < 3:
            continue
        colour = _REGIONS[index % len(_REGIONS)]
        total = zone_counts.get(name, {}).get("total")
        _fill(cv2, image, polygon, colour, _OCCUPIED_ALPHA if total else _ZONE_ALPHA)
        cv2.polylines(image, [polygon], True, colour, 2, cv2.LINE_AA)
        x, y = polygon.min(axis=0)
        _caption(cv2, image, name if total is None else f"{name}: {total}", (int(x) + 4, int(y) + 16), colour)
    for index, (name, points) in enumerate(overlay.lines.items()):
        ends = _pixels(points, width, height)
        if len(ends) != 2:
            continue
        colour = _REGIONS[(index + len(overlay.zones)) % len(_REGIONS)]
        (ax, ay), (bx, by) = ends.tolist()
        cv2.line(image, (ax, ay), (bx, by), colour, 3, cv2.LINE_AA)
        middle = ((ax + bx) // 2, (ay + by) // 2)
        if name in overlay.line_in:
            _arrow(cv2, image, (ax, ay), (bx, by), overlay.line_in[name], middle, colour)
        tally = line_counts.get(name)
        text = name if tally is None else f"{name} in {tally.get('in', 0)} / out {tally.get('out', 0)}"
        # A quarter along the line rather than at its middle, where the arrow is.
        _caption(cv2, image, text, ((3 * ax + bx) // 4 + 6, (3 * ay + by) // 4 - 6), colour)
    for track_id, points in overlay.trails.items():
        path = _pixels(points, width, height)
        if len(path) < 2:
            continue
        colour = track_colour(track_id)
        half = len(path) // 2
        # The older half thin and dimmed, the newer half full: the path fades into the past.
        cv2.polylines(image, [path[: half + 1]], False, tuple(c // 2 for c in colour), 1, cv2.LINE_AA)
        cv2.polylines(image, [path[half:]], False, colour, 2, cv2.LINE_AA)


def _fill(cv2, image: np.ndarray, polygon: np.ndarray, colour, alpha: float) -> None:
    """Tint the inside of ``polygon``, blending only its bounding rectangle."""
    x0, y0 = polygon.min(axis=0)
    x1, y1 = polygon.max(axis=0) + 1
    region = image[y0:y1, x0:x1]
    tinted = region.copy()
    cv2.fillPoly(tinted, [polygon - (x0, y0)], colour)
    image[y0:y1, x0:x1] = cv2.addWeighted(tinted, alpha, region, 1 - alpha, 0)


def _arrow(cv2, image: np.ndarray, a, b, normal, middle, colour) -> None:
    """A short arrow from the line's middle towards the side an 'in' crossing ends on.

    ``normal`` is in normalised coordinates; on a non-square frame it is no longer perpendicular
    in pixels, so only its side is kept and the arrow follows the line's pixel normal."""
    height, width = image.shape[:2]
    dx, dy = b[0] - a[0], b[1] - a[1]
    length = float(np.hypot(dx, dy)) or 1.0
    nx, ny = -dy / length, dx / length
    if nx * normal[0] * width + ny * normal[1] * height < 0:
        nx, ny = -nx, -ny
    tip = (round(middle[0] + nx * _ARROW_PX), round(middle[1] + ny * _ARROW_PX))
    cv2.arrowedLine(image, middle, tip, colour, 2, cv2.LINE_AA, tipLength=0.35)


def _caption(cv2, image: np.ndarray, text: str, origin: tuple[int, int], colour) -> None:
    """``text`` on a dark box at ``origin`` (its baseline's left end), kept inside the frame."""
    height, width = image.shape[:2]
    (w, h), base = cv2.getTextSize(text, _FONT, 0.45, 1)
    x = min(max(0, origin[0]), max(0, width - w - 2))
    y = min(max(h + 2, origin[1]), height - base - 1)
    cv2.rectangle(image, (x - 1, y - h - 2), (x + w + 1, y + base), (0, 0, 0), cv2.FILLED)
    cv2.putText(image, text, (x, y), _FONT, 0.45, colour, 1, cv2.LINE_AA)


def jpeg(image: np.ndarray, *, quality: int = 80, max_bytes: int | None = None) -> bytes | None:
    """``image`` as JPEG bytes, or None when OpenCV cannot encode it. With ``max_bytes`` (a broker's
    message limit), a lower quality and then a smaller picture are tried until it fits."""
    import cv2

    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        return None
    if max_bytes is None or len(data) <= max_bytes:
        return data.tobytes()
    for q in (60, 40):
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, min(q, quality)])
        if ok and len(data) <= max_bytes:
            return data.tobytes()
    while min(image.shape[:2]) > 16:
        image = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 40])
        if ok and len(data) <= max_bytes:
            return data.tobytes()
    return None
