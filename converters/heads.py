"""Which known head a model's outputs form, read off their shapes and, where shapes are ambiguous, values.

A head names the task and the runtime decoder that reads it, with the options that decoder needs.
The layouts recognised are the ones exporters write:

    classifier   ``[1, C]``
    yolo v5      ``[1, N, 5+C]``: cx, cy, w, h, objectness, class probabilities (YOLOv5, YOLOv7)
    yolo v8      ``[1, 4+C, N]``: cx, cy, w, h, class scores (YOLOv8, YOLO11)
    yolo e2e     ``[1, K, 6]``: x1, y1, x2, y2, score, class, NMS already done (YOLOv10, YOLO26)
    yolo split   boxes ``[1, N, 4]`` plus scores ``[1, N, C]`` (or both transposed)
    ssd          the four outputs of TFLite_Detection_PostProcess

Shapes alone cannot tell a one-class v5 head ``[1, N, 6]`` from an end-to-end one, nor pixel boxes
from 0-1 ones: :func:`settle` decides those from the model's outputs on real images, once, at
conversion, so the device never guesses per frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from edge_sdk.bundle import Task
from edge_sdk.errors import ModelError

Shape = tuple[int | None, ...]
NORMALIZED_LIMIT = 1.5  # a real pixel box always has a coordinate above this


@dataclass(frozen=True)
class Head:
    """A recognised head: the task, the runtime decoder and its options."""

    task: Task
    decoder: str
    num_classes: int | None  # None when the shapes do not say (e2e, ssd): the labels must
    options: dict = field(default_factory=dict)

    @property
    def layout(self) -> str:
        return str(self.options.get("layout", self.decoder))

    def describe(self) -> str:
        return f"{self.decoder} {self.layout}" if self.decoder == "yolo" else self.decoder


def _batch_of_one(shape: Shape) -> bool:
    return len(shape) >= 1 and shape[0] in (1, None)


def _split(shapes: Sequence[Shape]) -> Head | None:
    """Boxes ``[1, N, 4]`` and scores ``[1, N, C]``, in either order, or both with N last."""
    a, b = shapes
    if len(a) != 3 or len(b) != 3:
        return None
    for transposed, (box_axis, n_axis) in ((False, (2, 1)), (True, (1, 2))):
        if a[n_axis] != b[n_axis] or a[n_axis] is None:
            continue
        # With C == 4 both outputs fit the boxes' shape: the source's own order (boxes first) decides.
        for boxes, scores in ((0, 1), (1, 0)):
            if shapes[boxes][box_axis] == 4 and (shapes[scores][box_axis] or 0) >= 1:
                return Head(Task.DETECTION, "yolo", int(shapes[scores][box_axis]),
                            {"layout": "split", "boxes_output": boxes, "transposed": transposed})
    return None


def recognise(shapes: Sequence[Shape]) -> Head | None:
    """The head these output shapes form, or None when they match no known layout."""
    if not shapes or not all(_batch_of_one(s) for s in shapes):
        return None
    if len(shapes) == 1:
        (shape,) = shapes
        if len(shape) == 2 and (shape[1] or 0) >= 2:
            return Head(Task.CLASSIFICATION, "classification", int(shape[1]))
        if len(shape) != 3 or None in shape[1:]:
            return None
        rows, cols = int(shape[1]), int(shape[2])
        if cols == 6 and rows > cols:
            # [1, K, 6] is end-to-end or a one-class v5 head; settle() looks at the values.
            return Head(Task.DETECTION, "yolo", None, {"layout": "e2e"})
        if cols < rows and cols >= 6:
            return Head(Task.DETECTION, "yolo", cols - 5, {"layout": "v5"})
        if rows < cols and rows >= 5:
            return Head(Task.DETECTION, "yolo", rows - 4, {"layout": "v8"})
        return None
    if len(shapes) == 2:
        return _split(shapes)
    if len(shapes) == 4:
        ranks = sorted(len(s) for s in shapes)
        if ranks == [1, 2, 2, 3] and any(len(s) == 3 and s[2] == 4 for s in shapes):
            return Head(Task.DETECTION, "ssd", None, {})
    return None


def describe(shape: Shape) -> str:
    """``[1, ?, 640, 640]``: a shape as messages show it, ``?`` for a dynamic size."""
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def describe_shapes(shapes: Sequence[Shape]) -> str:
    return ", ".join(describe(s) for s in shapes)


def _is_e2e(rows: np.ndarray) -> bool:
    """``[K, 6]`` rows read as x1, y1, x2, y2, score, class: whole class ids and ordered corners."""
    live = rows[rows[:, 4] > 0.05]
    if len(live) == 0:
        return bool(np.all(rows[:, 5] == np.round(rows[:, 5])))
    whole = np.all(np.abs(live[:, 5] - np.round(live[:, 5])) < 1e-3) and np.all(live[:, 5] >= 0)
    ordered = np.all(live[:, 2] >= live[:, 0]) and np.all(live[:, 3] >= live[:, 1])
    return bool(whole and ordered)


def _split_boxes(outputs: list[np.ndarray], head: Head) -> tuple[np.ndarray, np.ndarray]:
    boxes, scores = outputs[head.options["boxes_output"]][0], outputs[1 - head.options["boxes_output"]][0]
    if head.options.get("transposed"):
        boxes, scores = boxes.T, scores.T
    return boxes, scores


def settle(head: Head, outputs: list[np.ndarray], *, labels: int | None) -> Head:
    """Decide what the shapes left open from the model's float outputs on real images.

    ``outputs`` are the outputs for a batch of images, in the source model's order; ``labels`` the
    number of class names the user gave, if any.
    """
    if head.decoder != "yolo":
        return replace(head, num_classes=head.num_classes or labels)
    layout = head.options["layout"]
    options = dict(head.options)
    if layout == "e2e":
        rows = np.concatenate(list(outputs[0]), axis=0).astype(np.float64)
        if not _is_e2e(rows):
            options["layout"] = "v5"
            return settle(replace(head, num_classes=1, options=options), outputs, labels=labels)
        boxes = rows[rows[:, 4] > 0.05][:, :4]
        classes = int(np.max(rows[rows[:, 4] > 0.05][:, 5], initial=-1)) + 1
        num_classes = labels or None
        if num_classes is None:
            raise ModelError(
                "the model ends in an end-to-end head [1, K, 6] whose class count its shape does not give; "
                "name the classes with --labels (or a --val dataset with classes.txt)"
            )
        if classes > num_classes:
            raise ModelError(f"the end-to-end head predicts class {classes - 1} but only {num_classes} labels were given")
    elif layout == "split":
        boxes, scores = _split_boxes(outputs, head)
        live = np.max(scores, axis=-1) > 0.05 if scores.size else np.zeros(0, bool)
        boxes = boxes[live] if np.any(live) else boxes
        # xyxy boxes always have x2 >= x1; centre-size boxes break that wherever w < cx.
        ordered = np.mean((boxes[:, 2] >= boxes[:, 0]) & (boxes[:, 3] >= boxes[:, 1])) if len(boxes) else 1.0
        options["box_format"] = "xyxy" if ordered >= 0.999 else "cxcywh"
        num_classes = head.num_classes
    else:
        head_rows = np.concatenate(list(outputs[0]), axis=0 if layout == "v5" else 1)
        boxes = head_rows[:, :4] if layout == "v5" else head_rows[:4, :].T
        num_classes = head.num_classes
    finite = np.asarray(boxes, dtype=np.float64)
    finite = finite[np.all(np.isfinite(finite), axis=1)] if finite.size else finite
    options["normalized"] = bool(finite.size == 0 or np.max(np.abs(finite)) <= NORMALIZED_LIMIT)
    return replace(head, num_classes=num_classes, options=options)
