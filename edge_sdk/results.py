"""Results as values: boxes, masks, keypoints, detections and per-frame results, with the behaviour that belongs to them.

Every value is frozen and in source-frame terms: decoders map model-input coordinates back through
the letterbox or crop (:class:`~edge_sdk.preprocess.Placement`) before a value is made, so a user
never sees the model's input space.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace

import numpy as np

from edge_sdk import masks as wire
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


def _frozen(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array)
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class Mask:
    """One object's pixels in the source frame: a boolean bitmap over its box, placed at (x, y).

    Only the box's part of the frame is stored (an instance covers a small share of it); ``full()``
    gives the whole-frame bitmap. Equality is by pixels, so two masks of the same pixels are equal.
    """

    x: int  # left column of the bitmap in the source frame, pixels
    y: int  # top row
    bitmap: np.ndarray  # bool, h x w, read-only
    frame_size: tuple[int, int]  # (width, height) of the source frame

    def __post_init__(self) -> None:
        object.__setattr__(self, "bitmap", _frozen(np.asarray(self.bitmap, dtype=bool)))

    @classmethod
    def from_full(cls, full: np.ndarray) -> Mask:
        """The mask of a whole-frame boolean bitmap, cropped to the pixels it has."""
        full = np.asarray(full, dtype=bool)
        height, width = full.shape
        rows, cols = np.flatnonzero(full.any(axis=1)), np.flatnonzero(full.any(axis=0))
        if rows.size == 0:
            return cls(0, 0, np.zeros((0, 0), dtype=bool), (width, height))
        y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        return cls(x0, y0, full[y0:y1, x0:x1], (width, height))

    @property
    def area(self) -> int:
        """Pixels in the mask."""
        return int(np.count_nonzero(self.bitmap))

    def full(self) -> np.ndarray:
        """The mask as a bitmap of the whole frame (height x width)."""
        width, height = self.frame_size
        out = np.zeros((height, width), dtype=bool)
        h, w = self.bitmap.shape
        out[self.y : self.y + h, self.x : self.x + w] = self.bitmap
        return out

    def iou(self, other: Mask) -> float:
        a, b = self.full(), other.full()
        union = np.count_nonzero(a | b)
        return np.count_nonzero(a & b) / union if union else 0.0

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mask):
            return NotImplemented
        return self.frame_size == other.frame_size and np.array_equal(self.full(), other.full())

    __hash__ = None  # type: ignore[assignment]  # a mask is compared by pixels, not kept in sets


@dataclass(frozen=True)
class Keypoint:
    """One landmark: where (normalised source-frame coordinates, 0-1) and how sure (0-1)."""

    x: float
    y: float
    score: float
    name: str | None = None


@dataclass(frozen=True)
class Keypoints:
    """An object's landmarks in the model's order (a pose's joints, a hand's or a face's landmarks).

    ``skeleton`` lists the pairs of indices drawn as bones; names come from the bundle.
    """

    points: tuple[Keypoint, ...]
    skeleton: tuple[tuple[int, int], ...] = ()

    def __len__(self) -> int:
        return len(self.points)

    def array(self) -> np.ndarray:
        """K x 3: x, y (0-1) and score per point."""
        return np.array([(p.x, p.y, p.score) for p in self.points], dtype=np.float64).reshape(-1, 3)


@dataclass(frozen=True, eq=False)
class Segmentation:
    """A semantic segmentation of one frame: a class id per source-frame pixel.

    Held as the model gave it: ``grid``, class ids (uint8, or uint16 past 255 classes) at the
    output's resolution, and for each source-frame row and column the grid row or column it shows
    (``rows``, ``cols``; -1 where the model did not see the frame, under a crop: class 0 there).
    ``class_map``, the frame-sized map, is built only when asked for: the class areas and each
    class's mask are computed from the grid exactly, at a fraction of the cost on a camera frame.
    Without ``rows`` and ``cols`` the grid is the frame's own map. ``labels[i]`` names class i.
    """

    grid: np.ndarray
    labels: tuple[str, ...]
    rows: np.ndarray | None = None
    cols: np.ndarray | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "grid", _frozen(self.grid))
        if (self.rows is None) != (self.cols is None):
            raise ValueError("a segmentation's rows and cols are given together or not at all")
        if self.rows is not None:
            object.__setattr__(self, "rows", _frozen(np.asarray(self.rows, dtype=np.intp)))
            object.__setattr__(self, "cols", _frozen(np.asarray(self.cols, dtype=np.intp)))

    @functools.cached_property
    def class_map(self) -> np.ndarray:
        """The class id of every source-frame pixel (height x width), read-only."""
        if self.rows is None:
            return self.grid
        out = self._gather(slice(None), slice(None))
        out.setflags(write=False)
        return out

    def _gather(self, ys: slice, xs: slice) -> np.ndarray:
        rows, cols = self.rows[ys], self.cols[xs]
        out = self.grid.take(np.maximum(rows, 0), axis=0).take(np.maximum(cols, 0), axis=1)
        if (rows < 0).any():
            out[rows < 0, :] = 0
        if (cols < 0).any():
            out[:, cols < 0] = 0
        return out

    @property
    def frame_size(self) -> tuple[int, int]:
        if self.rows is not None:
            return len(self.cols), len(self.rows)
        height, width = self.grid.shape[:2]
        return width, height

    def label(self, class_id: int) -> str:
        return self.labels[class_id] if 0 <= class_id < len(self.labels) else str(class_id)

    @functools.cached_property
    def pixels(self) -> np.ndarray:
        """Source-frame pixels per class id (exact, counted on the grid with each cell's footprint)."""
        if self.rows is None:
            return np.bincount(self.grid.ravel(), minlength=len(self.labels))
        gh, gw = self.grid.shape[:2]
        per_row = np.bincount(self.rows[self.rows >= 0], minlength=gh)
        per_col = np.bincount(self.cols[self.cols >= 0], minlength=gw)
        footprint = np.outer(per_row, per_col).ravel()
        counts = np.bincount(self.grid.ravel(), weights=footprint, minlength=len(self.labels)).round().astype(np.int64)
        width, height = self.frame_size
        counts[0] += width * height - int(footprint.sum())  # what the model never saw is class 0
        return counts

    def areas(self) -> dict[str, float]:
        """Share of the frame (0-1) each class present covers, largest first."""
        counts = self.pixels
        width, height = self.frame_size
        total = max(1, width * height)
        order = np.argsort(-counts, kind="stable")
        return {self.label(int(c)): float(counts[c]) / total for c in order if counts[c]}

    def mask(self, class_id: int) -> Mask:
        """The pixels of one class, as a mask (built over the class's cells only)."""
        if self.rows is None or class_id == 0:  # class 0 also holds what the model did not see
            return Mask.from_full(self.class_map == class_id)
        cells = self.grid == class_id
        r = np.flatnonzero(cells.any(axis=1))
        c = np.flatnonzero(cells.any(axis=0))
        ys = np.flatnonzero((self.rows >= r[0]) & (self.rows <= r[-1])) if r.size else r
        xs = np.flatnonzero((self.cols >= c[0]) & (self.cols <= c[-1])) if c.size else c
        if ys.size == 0 or xs.size == 0:
            return Mask(0, 0, np.zeros((0, 0), dtype=bool), self.frame_size)
        y0, y1, x0, x1 = int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1
        return Mask(x0, y0, self._gather(slice(y0, y1), slice(x0, x1)) == class_id, self.frame_size)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Segmentation):
            return NotImplemented
        return self.labels == other.labels and np.array_equal(self.class_map, other.class_map)

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True)
class Detection:
    """One result: a class with a score, a box unless the model is a classifier, and, for an
    instance-segmentation or pose model, the object's mask or keypoints."""

    class_id: int
    label: str
    score: float
    box: BBox | None = None
    track_id: int | None = None  # the object's identity across frames, when the run tracks
    mask: Mask | None = None  # instance segmentation: the object's pixels
    keypoints: Keypoints | None = None  # pose: the object's landmarks

    def to_json(self, *, frame_size: tuple[int, int] | None = None, masks: str = "polygon", vertices: int | None = None,
                keypoints: bool = True) -> dict:
        """The detection as JSON: its mask in the ``masks`` format (``polygon`` within ``vertices``,
        ``rle``, or ``summary`` for none; :mod:`edge_sdk.masks`), its keypoints as ``[[x, y, score], ...]``
        unless ``keypoints`` is False (their names go once per message, :meth:`FrameResult.to_json`)."""
        out: dict = {"class_id": self.class_id, "label": self.label, "score": round(float(self.score), 5)}
        if self.track_id is not None:
            out["track_id"] = self.track_id
        if self.box is not None:
            out["box"] = [round(v, 5) for v in (self.box.x1, self.box.y1, self.box.x2, self.box.y2)]
            if frame_size is not None:
                out["box_px"] = list(self.box.to_pixels(*frame_size))
        if self.mask is not None:
            encoded = wire.encode(self.mask, masks=masks, vertices=vertices or wire.DEFAULT_VERTICES)
            if encoded is not None:
                out["mask"] = encoded
        if self.keypoints is not None and keypoints:
            out["keypoints"] = [[round(float(p.x), 5), round(float(p.y), 5), round(float(p.score), 4)] for p in self.keypoints.points]
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
    segmentation: Segmentation | None = None  # a semantic-segmentation model's class map of the frame

    def for_camera(self, camera: str) -> FrameResult:
        return replace(self, camera=camera)

    def to_json(self, *, masks: str = "polygon", vertices: int | None = None, keypoints: bool = True) -> dict:
        """The frame as JSON; ``masks``, ``vertices`` and ``keypoints`` as :meth:`Detection.to_json`.
        A pose model's keypoint names and skeleton are given once (``keypoint_names``, ``skeleton``):
        one model gives every detection the same layout. A semantic frame carries its class areas,
        and per-class masks unless ``masks`` is ``summary``."""
        return {
            **({"camera": self.camera} if self.camera is not None else {}),
            "frame": self.index,
            "ts": round(self.timestamp, 6),
            "width": self.frame_size[0],
            "height": self.frame_size[1],
            "detections": [d.to_json(frame_size=self.frame_size, masks=masks, vertices=vertices, keypoints=keypoints)
                           for d in self.detections],
            **(self._keypoint_layout() if keypoints else {}),
            **({"segmentation": self._segmentation_json(masks, vertices)} if self.segmentation is not None else {}),
            **({"events": [e.to_json() for e in self.events]} if self.events else {}),
            **({"counts": self.counts.to_json()} if self.counts is not None else {}),
            **({"final": True} if self.final else {}),
            "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()},
        }

    def _keypoint_layout(self) -> dict:
        posed = next((d.keypoints for d in self.detections if d.keypoints is not None), None)
        if posed is None:
            return {}
        out: dict = {}
        if any(p.name is not None for p in posed.points):
            out["keypoint_names"] = [p.name or str(i) for i, p in enumerate(posed.points)]
        if posed.skeleton:
            out["skeleton"] = [[int(a), int(b)] for a, b in posed.skeleton]
        return out

    def _segmentation_json(self, masks: str, vertices: int | None) -> dict:
        out: dict = {"areas": wire.area_summary(self.segmentation)}
        if wire.MaskFormat(masks) is not wire.MaskFormat.SUMMARY:
            budget = vertices or wire.DEFAULT_VERTICES
            out["masks"] = [{"class_id": class_id, "label": label, "mask": wire.encode(mask, masks=masks, vertices=budget)}
                            for class_id, label, mask in wire.class_masks(self.segmentation)]
        return out
