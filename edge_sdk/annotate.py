"""Draw a frame's detections on a copy of it: for snapshots, the live view and the demo's PNGs."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from edge_sdk.results import Detection

# BGR colours, picked by class id so one class keeps its colour from frame to frame.
_PALETTE = ((0, 255, 0), (255, 128, 0), (0, 128, 255), (255, 0, 255), (0, 255, 255), (128, 0, 255), (255, 255, 0))


@dataclass(frozen=True)
class Overlay:
    """What a tracking camera draws besides its boxes: named zones and lines with their counts, and
    each track's recent path. Points are normalised (0-1)."""

    zones: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    lines: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    trails: dict[int, list[tuple[float, float]]] = field(default_factory=dict)  # track id -> points, oldest first
    counts: dict | None = None  # Counts.to_json(): occupancy per zone, in/out per line


def annotate(frame: np.ndarray, detections: Iterable[Detection], overlay: Overlay | None = None) -> np.ndarray:
    """A BGR copy of ``frame`` with a box and a ``label score`` caption per detection.

    Detections without a box (a classifier's) are written as lines of text at the top left.
    """
    import cv2

    image = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR) if frame.ndim == 2 else frame.copy()
    height, width = image.shape[:2]
    line = 0
    for detection in detections:
        colour = _PALETTE[detection.class_id % len(_PALETTE)]
        caption = f"{detection.label} {detection.score:.2f}"
        if detection.box is None:
            line += 1
            cv2.putText(image, caption, (4, 14 * line), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
            continue
        x1, y1, x2, y2 = detection.box.to_pixels(width, height)
        cv2.rectangle(image, (x1, y1), (x2, y2), colour, 2)
        cv2.putText(image, caption, (x1, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
    return image


def jpeg(image: np.ndarray, *, quality: int = 80) -> bytes | None:
    """``image`` as JPEG bytes, or None when OpenCV cannot encode it."""
    import cv2

    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return data.tobytes() if ok else None
