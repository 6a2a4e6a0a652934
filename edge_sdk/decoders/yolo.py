"""YOLO: a raw detection head -> score filter -> class-aware NMS -> detections.

Four head layouts are understood (batch of one):
    ``v8`` ``[1, 4+C, N]``: cx, cy, w, h, then one score per class (YOLOv8 and later, no objectness).
    ``v5`` ``[1, N, 5+C]``: cx, cy, w, h, objectness, then one probability per class; a candidate's
        score is objectness x class probability.
    ``e2e`` ``[1, K, 6]``: x1, y1, x2, y2, score, class, with NMS done inside the model (NMS-free
        YOLOv10 and YOLO26 exports); only the score threshold and ``max_detections`` apply.
    ``split`` boxes ``[1, N, 4]`` and scores ``[1, N, C]`` as two outputs (``boxes_output`` says
        which is first; ``transposed`` when both put N last), boxes as ``box_format``.
Boxes are in model-input pixels, or normalised to 0-1 as some TFLite exports emit them. The first
output is the head, but for ``split``.

Options:
    ``iou`` (float, default 0.45): boxes of one class overlapping a better one by more are dropped.
    ``max_detections`` (int, default 100): at most this many detections per frame.
    ``agnostic`` (bool, default false): let boxes of different classes suppress each other too.
    ``normalized`` (bool): boxes are 0-1 rather than pixels; unset = normalised when no surviving
        candidate has a coordinate above 1.5 (a real pixel box is never that small).
    ``layout`` (``v8`` or ``v5``): unset = the layout whose attribute count matches the labels
        (4+C rows, or 5+C columns), else the one whose attribute axis is the shorter.
    ``grid`` (int), ``anchor_w``, ``anchor_h`` (float, 0-1): the head is a v5 head's sigmoids before
        its grid decode, ``[1, grid, grid, 5+C]`` (or ``[1, grid·grid, 5+C]``, rows in row-major
        cell order); the decoder applies YOLOv5's decode: cx = (col + 2·s − 0.5) / grid,
        cy likewise with the row, w = anchor_w · (2·s)², h = anchor_h · (2·s)², scores as they are.
        Boxes come out 0-1. Converters set this for full-integer targets (Edge TPU), whose int8
        model ends at the sigmoids so boxes and scores keep their precision.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edge_sdk.decoders import DecodeContext, parse_options
from edge_sdk.decoders.nms import nms
from edge_sdk.errors import ConfigError, ModelError
from edge_sdk.results import BBox, Detection

NORMALIZED_LIMIT = 1.5


class Layout(str, enum.Enum):
    """How a YOLO head lays out its candidates."""

    V8 = "v8"
    V5 = "v5"
    E2E = "e2e"
    SPLIT = "split"


BoxFormat = Literal["xyxy", "cxcywh"] | None


class NmsOptions(BaseModel):
    """The options every YOLO-family decoder takes (detection, instance segmentation, pose)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    iou: float = Field(default=0.45, ge=0.0, le=1.0, description="IoU above which a weaker box is suppressed.")
    max_detections: int = Field(default=100, ge=1, description="Most detections kept per frame.")
    agnostic: bool = Field(default=False, description="Suppress across classes too.")
    normalized: bool | None = Field(default=None, description="Boxes are 0-1; unset = detected from the values.")


class YoloOptions(NmsOptions):
    """The ``yolo`` decoder's options in a bundle manifest."""

    layout: Layout | None = Field(default=None, description="Head layout v8, v5, e2e or split; unset = v8 or v5 from the shape.")
    box_format: BoxFormat = Field(default=None, description="split: boxes as xyxy or cxcywh.")
    boxes_output: int = Field(default=0, ge=0, le=1, description="split: which of the two outputs holds the boxes.")
    transposed: bool = Field(default=False, description="split: boxes [1, 4, N] and scores [1, C, N].")
    grid: int | None = Field(default=None, ge=1, description="The head is a v5 head's sigmoids on a grid x grid; decode them here.")
    anchor_w: float | None = Field(default=None, gt=0.0, description="With grid: box width (0-1) at sigmoid 0.5, times (2s)².")
    anchor_h: float | None = Field(default=None, gt=0.0, description="With grid: box height (0-1) at sigmoid 0.5, times (2s)².")


def options_from(context: DecodeContext) -> YoloOptions:
    return parse_options(YoloOptions, context, decoder="yolo")


def guess_layout(shape: tuple[int, int], num_classes: int) -> Layout:
    """The layout of a ``[rows, cols]`` head, using the label count when it settles the question."""
    rows, cols = shape
    if num_classes:
        v8, v5 = rows == 4 + num_classes, cols == 5 + num_classes
        if v8 != v5:
            return Layout.V8 if v8 else Layout.V5
    return Layout.V8 if rows < cols else Layout.V5


def _candidates(head: np.ndarray, layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """``[N, 4]`` cx, cy, w, h and ``[N, C]`` class scores."""
    rows = head.T if layout is Layout.V8 else head
    first_class = 4 if layout is Layout.V8 else 5
    if rows.shape[1] <= first_class:
        raise ModelError(
            f"yolo decoder: a {layout.value} head needs more than {first_class} values per candidate, "
            f"got shape {list(head.shape)}"
        )
    scores = rows[:, first_class:]
    if layout is Layout.V5:
        scores = scores * rows[:, 4:5]
    return rows[:, :4], scores


def _unbatched(output: np.ndarray, what: str) -> np.ndarray:
    head = np.asarray(output, dtype=np.float32)
    if head.ndim == 3 and head.shape[0] == 1:
        head = head[0]
    if head.ndim != 2:
        raise ModelError(f"yolo decoder: {what}, got {list(np.shape(output))}")
    return head


def _split_candidates(outputs: list[np.ndarray], options: YoloOptions) -> tuple[np.ndarray, np.ndarray]:
    """``[N, 4]`` cx, cy, w, h and ``[N, C]`` scores from a split head's two outputs."""
    if len(outputs) < 2:
        raise ModelError(f"yolo decoder: a split head needs boxes and scores outputs, got {len(outputs)} output(s)")
    which = options.boxes_output
    boxes = _unbatched(outputs[which], "split boxes must be [1, N, 4]")
    scores = _unbatched(outputs[1 - which], "split scores must be [1, N, C]")
    if options.transposed:
        boxes, scores = boxes.T, scores.T
    if boxes.shape[1] != 4 or boxes.shape[0] != scores.shape[0]:
        raise ModelError(f"yolo decoder: split boxes {list(boxes.shape)} and scores {list(scores.shape)} do not pair up")
    if options.box_format == "xyxy":
        boxes = np.concatenate([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], axis=1)
    return boxes, scores


def _end_to_end(head: np.ndarray, options: YoloOptions, context: DecodeContext) -> list[Detection]:
    if head.shape[1] != 6:
        raise ModelError(f"yolo decoder: an e2e head must be [1, K, 6], got {list(head.shape)}")
    keep = (head[:, 4] >= context.score_threshold) & np.all(np.isfinite(head), axis=1)
    rows = head[keep].astype(np.float64)
    rows = rows[np.argsort(-rows[:, 4], kind="stable")][: options.max_detections]
    normalized = options.normalized
    if normalized is None:
        normalized = bool(rows.size) and float(np.max(np.abs(rows[:, :4]))) <= NORMALIZED_LIMIT
    if normalized:
        width, height = context.preprocessing.width, context.preprocessing.height
        rows[:, :4] *= np.array([width, height, width, height], dtype=np.float64)
    return [
        Detection(class_id=int(r[5]), label=context.label(int(r[5])), score=float(r[4]),
                  box=BBox.from_model_pixels(*r[:4], context.placement))
        for r in rows
    ]


def grid_decode(sigmoids: np.ndarray, *, anchor_w: float, anchor_h: float) -> np.ndarray:
    """YOLOv5's grid decode of one image's head sigmoids ``[g, g, 5+C]`` (or ``[g·g, 5+C]``) -> ``[g·g, 5+C]``.

    cx = (col + 2·sx − 0.5) / g, cy = (row + 2·sy − 0.5) / g, w = anchor_w·(2·sw)², h = anchor_h·(2·sh)²
    (0-1 boxes); objectness and class probabilities pass through.
    """
    s = np.asarray(sigmoids, dtype=np.float64)
    if s.ndim == 3:
        s = s.reshape(-1, s.shape[-1])
    g = int(round(np.sqrt(s.shape[0])))
    if s.ndim != 2 or g * g != s.shape[0] or s.shape[1] < 5:
        raise ModelError(f"yolo decoder: grid decoding needs [g, g, 5+C] or [g*g, 5+C] sigmoids, got {list(np.shape(sigmoids))}")
    rows, cols = np.divmod(np.arange(g * g), g)
    out = s.copy()
    out[:, 0] = (cols + 2.0 * s[:, 0] - 0.5) / g
    out[:, 1] = (rows + 2.0 * s[:, 1] - 0.5) / g
    out[:, 2] = anchor_w * (2.0 * s[:, 2]) ** 2
    out[:, 3] = anchor_h * (2.0 * s[:, 3]) ** 2
    return out


def _host_decoded(head: np.ndarray, options: YoloOptions) -> np.ndarray:
    """A v5 head's raw sigmoids on a grid (the Edge TPU's int8 model ends there), grid-decoded here."""
    if head.shape[0] == 1 and head.ndim in (3, 4):
        head = head[0]
    cells = head.shape[0] * head.shape[1] if head.ndim == 3 else head.shape[0] if head.ndim == 2 else -1
    if cells != options.grid**2:
        raise ModelError(f"yolo decoder: option grid={options.grid} does not match the head shape {list(head.shape)}")
    if options.anchor_w is None or options.anchor_h is None:
        raise ConfigError("yolo decoder option 'grid' needs 'anchor_w' and 'anchor_h'")
    return grid_decode(head, anchor_w=options.anchor_w, anchor_h=options.anchor_h).astype(np.float32)


@dataclass(frozen=True)
class Selected:
    """The candidates NMS kept, best first: their row in the head, box and class."""

    index: np.ndarray  # [K] each kept candidate's position among the head's N candidates
    xyxy: np.ndarray  # [K, 4] x1, y1, x2, y2 in model-input pixels
    scores: np.ndarray  # [K]
    class_ids: np.ndarray  # [K]
    normalized: bool  # the head's coordinates were 0-1 (keypoints of the same head are too)


def select(xywh: np.ndarray, class_scores: np.ndarray, options: NmsOptions, context: DecodeContext) -> Selected:
    """Score filter, pixel units and NMS over ``[N, 4]`` cx, cy, w, h and ``[N, C]`` class scores.

    Shared by the detection, instance-segmentation and pose decoders: they read the kept
    candidates' mask coefficients or keypoints through ``index``.
    """
    # fmax skips NaN, and filtering before the argmax keeps the full-size work to one reduction.
    best = np.fmax.reduce(class_scores, axis=1)
    valid = (best >= context.score_threshold) & np.all(np.isfinite(xywh), axis=1)
    index = np.flatnonzero(valid)
    survivors = class_scores[index]
    class_ids = np.argmax(np.where(np.isnan(survivors), -np.inf, survivors), axis=1)
    xywh, scores = xywh[index].astype(np.float64), best[index].astype(np.float64)
    normalized = options.normalized
    if normalized is None:
        normalized = bool(xywh.size) and float(np.max(np.abs(xywh))) <= NORMALIZED_LIMIT
    if normalized:
        width, height = context.preprocessing.width, context.preprocessing.height
        xywh = xywh * np.array([width, height, width, height], dtype=np.float64)
    half = xywh[:, 2:] / 2
    xyxy = np.concatenate([xywh[:, :2] - half, xywh[:, :2] + half], axis=1)
    keep = nms(
        xyxy,
        scores,
        iou_threshold=options.iou,
        max_detections=options.max_detections,
        classes=None if options.agnostic else class_ids,
    )
    return Selected(index[keep], xyxy[keep], scores[keep], class_ids[keep], bool(normalized))


def detections(selected: Selected, context: DecodeContext) -> list[Detection]:
    """The kept candidates as detections with their boxes in the source frame."""
    return [
        Detection(
            class_id=int(selected.class_ids[k]),
            label=context.label(int(selected.class_ids[k])),
            score=float(selected.scores[k]),
            box=BBox.from_model_pixels(*selected.xyxy[k], context.placement),
        )
        for k in range(len(selected.index))
    ]


def decode(outputs: list[np.ndarray], context: DecodeContext) -> list[Detection]:
    options = options_from(context)
    if not outputs:
        raise ModelError("yolo decoder: the model has no outputs")
    if options.grid is not None:
        head = _host_decoded(np.asarray(outputs[0], dtype=np.float32), options)
        options = options.model_copy(update={"layout": Layout.V5, "normalized": True})
        outputs = [head]
    if options.layout is Layout.SPLIT:
        xywh, class_scores = _split_candidates(outputs, options)
    else:
        head = _unbatched(outputs[0], "the head must be [1, 4+C, N], [1, N, 5+C] or [1, K, 6]")
        if options.layout is Layout.E2E:
            return _end_to_end(head, options, context)
        layout = options.layout or guess_layout(head.shape, len(context.labels))
        xywh, class_scores = _candidates(head, layout)
    return detections(select(xywh, class_scores, options, context), context)
