"""Which known head a model's outputs form, read off their shapes and, where shapes are ambiguous, values.

A head names the task and the runtime decoder that reads it, with the options that decoder needs.
The layouts recognised are the ones exporters write:

    classifier   ``[1, C]``
    yolo v5      ``[1, N, 5+C]``: cx, cy, w, h, objectness, class probabilities (YOLOv5, YOLOv7)
    yolo v8      ``[1, 4+C, N]``: cx, cy, w, h, class scores (YOLOv8, YOLO11)
    yolo e2e     ``[1, K, 6]``: x1, y1, x2, y2, score, class, NMS already done (YOLOv10, YOLO26)
    yolo split   boxes ``[1, N, 4]`` plus scores ``[1, N, C]`` (or both transposed)
    ssd          the four outputs of TFLite_Detection_PostProcess
    yolo-seg     head ``[1, 4+C+M, N]`` plus protos ``[1, M, Hp, Wp]`` (or ``[1, Hp, Wp, M]``), either order
                 (Ultralytics ``-seg``)
    segmentation one ``[1, H, W, C]``/``[1, C, H, W]`` score map or ``[1, H, W]`` class map covering the
                 input at no less than 1/8 of its size (needs the input size)

A pose head ``[1, 4+C+K·D, N]`` has a v8 detector's shape and a landmark regressor ``[1, K·D]`` a
classifier's: :func:`as_pose` reads them as pose when the user (``--task pose``, ``--keypoints``)
or the model's metadata says so.

Shapes alone cannot tell a one-class v5 head ``[1, N, 6]`` from an end-to-end one, nor pixel boxes
from 0-1 ones: :func:`settle` decides those from the model's outputs on real images, once, at
conversion, so the device never guesses per frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from edge_sdk.bundle import Task
from edge_sdk.errors import ConfigError, ModelError

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


MIN_SHARE = 1 / 8  # a segmentation output covers the input at no less than this fraction of its size


def _semantic(shape: Shape, input_size: tuple[int, int]) -> Head | None:
    """A per-pixel score map ``[1, H, W, C]``/``[1, C, H, W]`` or class map ``[1, H, W]`` over the input."""
    width, height = input_size
    if None in shape[1:]:
        return None

    def covers(h: int, w: int) -> bool:
        # the same stride both ways (within a cell), and fine enough to be a map rather than a feature grid
        return h >= height * MIN_SHARE and w >= width * MIN_SHARE and h <= height and w <= width \
            and abs(h * width - w * height) <= max(width, height)

    if len(shape) == 3:
        return Head(Task.SEGMENTATION, "segmentation", None, {"activation": "argmax"}) if covers(*shape[1:]) else None
    if len(shape) != 4:
        return None
    a, b, c = (int(d) for d in shape[1:])  # the batch may be None (a Keras model's)
    if covers(a, b):  # NHWC first: a TFLite or Keras model's own layout
        return Head(Task.SEGMENTATION, "segmentation", max(c, 2), {"layout": "nhwc"})
    if covers(b, c):
        return Head(Task.SEGMENTATION, "segmentation", max(a, 2), {"layout": "nchw"})
    return None


def _instances(shapes: Sequence[Shape], input_size: tuple[int, int] | None) -> Head | None:
    """Ultralytics ``-seg``: head ``[1, 4+C+M, N]`` and protos whose channel count is M, either order.

    Which proto axis holds M is the one leaving two axes with the input's aspect ratio, else the
    one that is 32 (every Ultralytics model's M), else axis 1.
    """
    found = []
    for proto in (0, 1):
        protos, head = shapes[proto], shapes[1 - proto]
        if len(protos) != 4 or len(head) != 3 or None in head or None in protos:
            continue
        rows, n = int(head[1]), int(head[2])
        for layout, m, (h, w) in (("nchw", protos[1], protos[2:]), ("nhwc", protos[3], protos[1:3])):
            if rows < n and rows - 4 - m >= 1:
                aspect = input_size is not None and abs(h * input_size[0] - w * input_size[1]) <= max(input_size)
                found.append(((aspect, m == 32, layout == "nchw"), Head(
                    Task.INSTANCE_SEGMENTATION, "yolo-seg", rows - 4 - m,
                    {"num_masks": int(m), "proto_output": proto, "proto_layout": layout})))
    return max(found, key=lambda f: f[0])[1] if found else None


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


def recognise(shapes: Sequence[Shape], *, input_size: tuple[int, int] | None = None) -> Head | None:
    """The head these output shapes form, or None when they match no known layout.

    ``input_size`` (width, height) lets a single map covering the input read as semantic segmentation.
    """
    if not shapes or not all(_batch_of_one(s) for s in shapes):
        return None
    if len(shapes) == 1:
        (shape,) = shapes
        semantic = _semantic(shape, input_size) if input_size is not None and len(shape) in (3, 4) else None
        if semantic is not None:
            return semantic
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
        return _instances(shapes, input_size) or _split(shapes)
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
    if head.decoder == "segmentation":
        return _settle_semantic(head, outputs[0], labels=labels)
    if head.decoder in ("yolo-seg", "yolo-pose", "landmarks"):
        return replace(head, options={**head.options, "normalized": _normalized_points(head, outputs)})
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


def _normalized_points(head: Head, outputs: list[np.ndarray]) -> bool:
    """Whether a seg/pose head's boxes, or a regressor's landmarks, are 0-1 rather than pixels."""
    if head.decoder == "landmarks":
        d = head.options["dims"]
        points = np.asarray(outputs[head.options["landmarks_output"]], dtype=np.float64).reshape(-1, d)[:, :2]
    else:
        which = 1 - head.options["proto_output"] if head.decoder == "yolo-seg" else 0
        points = np.concatenate(list(outputs[which]), axis=1)[:4].T.astype(np.float64)
    finite = points[np.all(np.isfinite(points), axis=1)]
    return bool(finite.size == 0 or np.max(np.abs(finite)) <= NORMALIZED_LIMIT)


def _settle_semantic(head: Head, scores: np.ndarray, *, labels: int | None) -> Head:
    """A class map's class count (from the labels), a score map's activation (from its values)."""
    options = dict(head.options)
    if options.get("activation") == "argmax":
        if labels is None:
            raise ModelError("the model ends in a class-id map [1, H, W] whose class count its shape does not give; "
                             "name the classes with --labels")
        return replace(head, num_classes=labels)
    values = np.asarray(scores, dtype=np.float64)
    axis = -1 if options["layout"] == "nhwc" else 1
    probabilities = values.size > 0 and float(values.min()) >= 0.0 and float(values.max()) <= 1.0
    if values.shape[axis] == 1:
        options["activation"] = "sigmoid" if probabilities else "logits"
    else:
        sums_to_one = probabilities and bool(np.allclose(values.sum(axis=axis), 1.0, atol=1e-3))
        options["activation"] = "softmax" if sums_to_one else "logits"
    return replace(head, options=options)


def as_pose(found: Head | None, shapes: Sequence[Shape], *, keypoints: int | None, labels: int | None,
            kpt_shape: tuple[int, int] | None = None) -> Head:
    """The pose reading of outputs the user (``--task pose``) or the model's metadata calls pose.

    A v8-shaped head ``[1, 4+C+K·D, N]`` is Ultralytics pose: K·D follows from ``kpt_shape``, or
    ``keypoints`` (D = 3 when it fits, else 2), or the class count (``labels``, else 1) with
    D = 3 when it divides. Otherwise the first output holding ``keypoints`` x 2 or 3 values is a
    landmark regressor, and a one-value output its presence score.
    """
    if found is not None and found.decoder == "yolo" and found.layout == "v8":
        rows = found.num_classes + 4
        if kpt_shape is not None:
            k, d = kpt_shape
            fits = [(rows - 4 - k * d, k, d)]
        elif keypoints is not None:
            fits = [(rows - 4 - keypoints * d, keypoints, d) for d in (3, 2)]
        else:
            classes = labels or 1
            rest = rows - 4 - classes
            fits = [(classes, rest // d, d) for d in (3, 2) if rest % d == 0]
        fits = [(c, k, d) for c, k, d in fits if c >= 1 and k >= 1 and (labels is None or c == labels)]
        if not fits:
            want = f"{kpt_shape[0]}x{kpt_shape[1]}" if kpt_shape else f"{keypoints}" if keypoints else "its"
            raise ModelError(f"a [1, {rows}, N] head is not 4 + C + K*D for {want} keypoints"
                             + (f" and {labels} classes" if labels else ""))
        classes, k, d = fits[0]
        return Head(Task.POSE, "yolo-pose", classes, {"kpt_shape": [k, d]})
    if keypoints is None:
        raise ConfigError(f"--task pose on outputs {describe_shapes(shapes)} (a landmark regressor) needs --keypoints K")
    sizes = [int(np.prod([d or 0 for d in s[1:]])) for s in shapes]
    for index, size in enumerate(sizes):
        for d in (3, 2):
            if size == keypoints * d:
                presence = next((i for i, n in enumerate(sizes) if n == 1), None)
                return Head(Task.POSE, "landmarks", 1, {"num_keypoints": keypoints, "dims": d,
                                                          "landmarks_output": index, "presence_output": presence})
    raise ModelError(f"no output of {describe_shapes(shapes)} holds {keypoints} landmarks of 2 or 3 values")
