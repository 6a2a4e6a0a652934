"""Results as values: boxes, detections and per-frame results, with the behaviour that belongs to them."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from edge_sdk.preprocess import Placement


@dataclass(frozen=True)
class BBox:
    """An axis-aligned box in normalised source-frame coordinates (0-1, x right, y down)."""

    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def width(self) -> float:
        return max(0.0, self.x2 - self.x1)

    @property
    def height(self) -> float:
        return max(0.0, self.y2 - self.y1)

    @property
    def area(self) -> float:
        return self.width * self.height

    @property
    def center(self) -> tuple[float, float]:
        return (self.x1 + self.x2) / 2, (self.y1 + self.y2) / 2

    def iou(self, other: BBox) -> float:
        ix = max(0.0, min(self.x2, other.x2) - max(self.x1, other.x1))
        iy = max(0.0, min(self.y2, other.y2) - max(self.y1, other.y1))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def clip(self) -> BBox:
        return BBox(*(min(1.0, max(0.0, v)) for v in (self.x1, self.y1, self.x2, self.y2)))

    def to_pixels(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(x1, y1, x2, y2) in pixels of a ``width`` x ``height`` frame."""
        return (round(self.x1 * width), round(self.y1 * height), round(self.x2 * width), round(self.y2 * height))

    @classmethod
    def from_model_pixels(cls, x1, y1, x2, y2, placement: Placement) -> BBox:
        """A box given in model-input pixels, mapped back through letterbox/crop to the source frame."""
        sx1, sy1 = placement.to_source(np.float64(x1), np.float64(y1))
        sx2, sy2 = placement.to_source(np.float64(x2), np.float64(y2))
        w, h = placement.source_width, placement.source_height
        return cls(float(sx1) / w, float(sy1) / h, float(sx2) / w, float(sy2) / h).clip()


@dataclass(frozen=True)
class Detection:
    """One result: a class with a score, and a box unless the model is a classifier."""

    class_id: int
    label: str
    score: float
    box: BBox | None = None
    track_id: int | None = None  # the object's identity across frames, when the run tracks

    def to_json(self, *, frame_size: tuple[int, int] | None = None) -> dict:
        out: dict = {"class_id": self.class_id, "label": self.label, "score": round(float(self.score), 5)}
        if self.track_id is not None:
            out["track_id"] = self.track_id
        if self.box is not None:
            out["box"] = [round(v, 5) for v in (self.box.x1, self.box.y1, self.box.x2, self.box.y2)]
            if frame_size is not None:
                out["box_px"] = list(self.box.to_pixels(*frame_size))
        return out


@dataclass(frozen=True)
class FrameResult:
    """Everything the pipeline learned from one frame."""

    index: int
    timestamp: float  # seconds since the epoch when the frame was captured
    frame_size: tuple[int, int]  # (width, height) of the source frame
    detections: tuple[Detection, ...]
    timings_ms: dict[str, float] = field(default_factory=dict)
    camera: str | None = None  # the id of the camera the frame came from
    events: tuple = ()  # what the camera's tracks did in this frame (edge_sdk.tracking.values.Event), when it tracks
    counts: object | None = None  # the camera's counts (edge_sdk.tracking.values.Counts) when this frame changed them
    final: bool = False  # no new frame: a tracking camera's last word when it stopped (the ends of its open tracks)

    def for_camera(self, camera: str) -> FrameResult:
        return replace(self, camera=camera)

    def to_json(self) -> dict:
        return {
            **({"camera": self.camera} if self.camera is not None else {}),
            "frame": self.index,
            "ts": round(self.timestamp, 6),
            "width": self.frame_size[0],
            "height": self.frame_size[1],
            "detections": [d.to_json(frame_size=self.frame_size) for d in self.detections],
            **({"events": [e.to_json() for e in self.events]} if self.events else {}),
            **({"counts": self.counts.to_json()} if self.counts is not None else {}),
            **({"final": True} if self.final else {}),
            "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()},
        }
