"""SSD: the four outputs of TFLite's ``TFLite_Detection_PostProcess`` op -> detections.

TF Object Detection API and Model Maker models end in this op, which has already decoded the
anchors and run NMS. Its outputs are boxes ``[1, N, 4]`` (ymin, xmin, ymax, xmax, normalised to
the model input), class ids ``[1, N]``, scores ``[1, N]`` and a count ``[1]``; only the first
``count`` rows are valid and the rest is uninitialised memory.

Exporters disagree on the order: a TF1 graph (``export_tflite_ssd_graph.py``) emits boxes,
classes, scores, count; a TF2 SavedModel (``export_tflite_graph_tf2.py``, Model Maker) emits
scores, boxes, count, classes. The roles are therefore found from shapes and values, unless the
``output_order`` option names them.

Options:
    ``label_offset`` (int, default 0): added to each class id before the label lookup. The op's
        ids are 0-based (it drops the background column), so use 1 when ``labels.txt`` starts
        with a background entry such as ``???``.
    ``output_order`` (str): the roles of the four outputs in order, comma-separated, e.g.
        ``"boxes,classes,scores,count"``. Needed only if the values cannot tell classes from
        scores, which the built-in rules already settle for both known exporters.
"""

from __future__ import annotations

import enum

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from edge_sdk.decoders import DecodeContext, parse_options
from edge_sdk.errors import ModelError
from edge_sdk.results import BBox, Detection


class Role(str, enum.Enum):
    """What one output of the post-processing op holds."""

    BOXES = "boxes"
    CLASSES = "classes"
    SCORES = "scores"
    COUNT = "count"


class SSDOptions(BaseModel):
    """The ``ssd`` decoder's options in a bundle manifest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    label_offset: int = Field(default=0, description="Added to each class id before the label lookup.")
    output_order: tuple[Role, Role, Role, Role] | None = Field(
        default=None, description="Roles of the four outputs in order; unset = found from shapes and values."
    )

    @field_validator("output_order", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            value = tuple(part.strip() for part in value.split(","))
        return value

    @field_validator("output_order")
    @classmethod
    def _each_once(cls, value: tuple[Role, ...] | None) -> tuple[Role, ...] | None:
        if value is not None and len(set(value)) != len(Role):
            raise ValueError("must name boxes, classes, scores and count once each")
        return value


def options_from(context: DecodeContext) -> SSDOptions:
    return parse_options(SSDOptions, context, decoder="ssd")


def _count(value: np.ndarray, capacity: int) -> int:
    count = float(np.asarray(value, dtype=np.float64).reshape(-1)[0])
    return int(min(max(count, 0.0), capacity)) if np.isfinite(count) else 0


def _could_be_classes(values: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(values) & (values >= 0) & (values == np.round(values))))


def _could_be_scores(values: np.ndarray) -> bool:
    return bool(np.all(np.isnan(values) | ((values >= 0) & (values <= 1))))


def _by_shape_and_value(arrays: list[np.ndarray]) -> dict[Role, np.ndarray]:
    # Boxes hold 4N values, count one, classes and scores N each; ties (N == 1) go to the flatter
    # tensor, as count is [1] while the others are [1, 1].
    ranked = sorted(range(4), key=lambda i: (arrays[i].size, arrays[i].ndim))
    count_at, first_at, second_at, boxes_at = ranked
    n = arrays[first_at].size
    if arrays[boxes_at].size != 4 * n or arrays[second_at].size != n or arrays[count_at].size != 1:
        shapes = ", ".join(str(list(a.shape)) for a in arrays)
        raise ModelError(
            f"ssd decoder: outputs {shapes} are not boxes [1,N,4], classes [1,N], scores [1,N] and count [1]"
        )
    k = _count(arrays[count_at], n)
    first, second = arrays[first_at].reshape(-1)[:k], arrays[second_at].reshape(-1)[:k]
    if (_could_be_classes(first) and not _could_be_scores(first)) or (
        _could_be_scores(second) and not _could_be_classes(second)
    ):
        classes_first = True
    elif (_could_be_classes(second) and not _could_be_scores(second)) or (
        _could_be_scores(first) and not _could_be_classes(first)
    ):
        classes_first = False
    else:
        # Values cannot tell (no detections, or every value 0 or 1): TF1 graphs put boxes first and
        # classes before scores, TF2 exports put scores first.
        classes_first = boxes_at == 0
    classes_at, scores_at = (first_at, second_at) if classes_first else (second_at, first_at)
    return {
        Role.BOXES: arrays[boxes_at],
        Role.CLASSES: arrays[classes_at],
        Role.SCORES: arrays[scores_at],
        Role.COUNT: arrays[count_at],
    }


def _roles(outputs: list[np.ndarray], order: tuple[Role, ...] | None) -> dict[Role, np.ndarray]:
    if len(outputs) != 4:
        raise ModelError(f"ssd decoder needs the 4 outputs of TFLite_Detection_PostProcess, got {len(outputs)}")
    arrays = [np.asarray(o, dtype=np.float64) for o in outputs]
    if order is None:
        return _by_shape_and_value(arrays)
    roles = dict(zip(order, arrays))
    n = roles[Role.SCORES].size
    if roles[Role.BOXES].size != 4 * n or roles[Role.CLASSES].size != n or roles[Role.COUNT].size != 1:
        shapes = ", ".join(f"{role.value} {list(a.shape)}" for role, a in zip(order, arrays))
        raise ModelError(f"ssd decoder: outputs {shapes} do not fit output_order")
    return roles


def decode(outputs: list[np.ndarray], context: DecodeContext) -> list[Detection]:
    options = options_from(context)
    roles = _roles(outputs, options.output_order)
    scores = roles[Role.SCORES].reshape(-1)
    k = _count(roles[Role.COUNT], scores.size)
    scores = scores[:k]
    boxes = roles[Role.BOXES].reshape(-1, 4)[:k]
    class_ids = np.rint(np.nan_to_num(roles[Role.CLASSES].reshape(-1)[:k])).astype(np.int64) + options.label_offset
    valid = np.isfinite(scores) & (scores >= context.score_threshold) & np.all(np.isfinite(boxes), axis=1)
    order = np.flatnonzero(valid)[np.argsort(-scores[valid], kind="stable")]
    width, height = context.preprocessing.width, context.preprocessing.height
    pixels = boxes[order] * np.array([height, width, height, width], dtype=np.float64)
    return [
        Detection(
            class_id=int(class_ids[i]),
            label=context.label(int(class_ids[i])),
            score=float(scores[i]),
            box=BBox.from_model_pixels(xmin, ymin, xmax, ymax, context.placement),
        )
        for i, (ymin, xmin, ymax, xmax) in zip(order, pixels)
    ]
