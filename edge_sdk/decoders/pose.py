"""Pose and landmarks: keypoints per detected object, or one object's landmarks.

``decode`` reads Ultralytics ``-pose`` heads ``[1, 4+C+K·D, N]``: cx, cy, w, h, C class scores,
then per keypoint x, y (and, with D == 3, its visibility, which Ultralytics' exported head already
passes through a sigmoid: ``Pose.kpts_decode`` in export mode). Candidates go through the ``yolo``
decoder's score filter and NMS; keypoints are in model-input pixels, or 0-1 like the boxes when
the head is normalised (Ultralytics' TFLite exports), and come out in 0-1 source-frame coordinates.
With D == 2 a keypoint has no score of its own and gets 1.0.

Options: the ``yolo`` decoder's ``iou``, ``max_detections``, ``agnostic``, ``normalized``, and
    ``kpt_shape`` ([K, D], D 2 or 3): unset = [rest / 3, 3] (or [rest / 2, 2]) with C the label count (or 1).
    ``keypoint_names`` (list of K names): default COCO's 17 names when K == 17.
    ``skeleton`` ([[i, j], ...], 0-based): default COCO's 19 bones when K == 17.

``decode_landmarks`` reads a single-object landmark regressor (MediaPipe's hand or face landmarks,
a crop-and-regress model): one output ``[1, K·D]``, ``[1, K, D]`` or ``[1, 1, 1, K·D]`` with x, y
(and, with D == 3, a depth, which is ignored) per landmark, in model-input pixels or 0-1, and
optionally a presence score ``[1, 1]`` (a probability). It returns one detection of class 0 whose
box bounds the landmarks and whose score (and every landmark's) is the presence, 1.0 without one;
none when the presence is under the score threshold.

Options: ``num_keypoints`` (K), ``dims`` (D, 2 or 3): a flat output needs one of them;
    ``normalized`` (bool): 0-1 rather than pixels; unset = 0-1 when no value is above 1.5.
    ``landmarks_output`` (int, default 0), ``presence_output`` (int or null): which outputs.
    ``keypoint_names``, ``skeleton``: as above.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edge_sdk.decoders import DecodeContext, parse_options
from edge_sdk.decoders.yolo import NORMALIZED_LIMIT, NmsOptions, detections, select
from edge_sdk.errors import ConfigError, ModelError
from edge_sdk.results import BBox, Detection, Keypoint, Keypoints

COCO_KEYPOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
COCO_SKELETON = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
    (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)


class PoseOptions(NmsOptions):
    """The ``yolo-pose`` decoder's options in a bundle manifest."""

    kpt_shape: tuple[int, Literal[2, 3]] | None = Field(default=None, description="[K, D]: keypoints and values per keypoint.")
    keypoint_names: tuple[str, ...] | None = Field(default=None, description="One name per keypoint.")
    skeleton: tuple[tuple[int, int], ...] | None = Field(default=None, description="Bones as pairs of 0-based keypoint indices.")


class LandmarkOptions(BaseModel):
    """The ``landmarks`` decoder's options in a bundle manifest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_keypoints: int | None = Field(default=None, ge=1, description="K, the landmarks.")
    dims: Literal[2, 3] | None = Field(default=None, description="Values per landmark: x, y (and depth).")
    normalized: bool | None = Field(default=None, description="0-1 rather than model-input pixels; unset = from the values.")
    landmarks_output: int = Field(default=0, ge=0, description="Which output holds the landmarks.")
    presence_output: int | None = Field(default=None, ge=0, description="Which output holds the presence score, if any.")
    keypoint_names: tuple[str, ...] | None = Field(default=None, description="One name per landmark.")
    skeleton: tuple[tuple[int, int], ...] | None = Field(default=None, description="Bones as pairs of 0-based indices.")


def _naming(count: int, names, skeleton, decoder: str) -> tuple[tuple, tuple]:
    """Names (None each when unknown) and bones for ``count`` keypoints, checked against the count."""
    if names is None:
        names = COCO_KEYPOINTS if count == 17 else (None,) * count
    elif len(names) != count:
        raise ConfigError(f"{decoder} decoder option 'keypoint_names': {len(names)} names for {count} keypoints")
    if skeleton is None:
        skeleton = COCO_SKELETON if count == 17 else ()
    elif any(not (0 <= i < count and 0 <= j < count) for i, j in skeleton):
        raise ConfigError(f"{decoder} decoder option 'skeleton': a bone joins a keypoint outside 0-{count - 1}")
    return tuple(names), tuple(tuple(b) for b in skeleton)


def _to_frame(points: np.ndarray, context: DecodeContext, *, normalized: bool) -> np.ndarray:
    """``[..., 2]`` model-input pixels (or 0-1) -> 0-1 source-frame coordinates, clipped to the frame."""
    placement, spec = context.placement, context.preprocessing
    x, y = points[..., 0].astype(np.float64), points[..., 1].astype(np.float64)
    if normalized:
        x, y = x * spec.width, y * spec.height
    sx, sy = placement.to_source(x, y)
    return np.clip(np.stack([sx / placement.source_width, sy / placement.source_height], axis=-1), 0.0, 1.0)


def _keypoints(xy: np.ndarray, scores: np.ndarray, names: tuple, skeleton: tuple) -> Keypoints:
    return Keypoints(
        tuple(Keypoint(float(p[0]), float(p[1]), float(s), n) for p, s, n in zip(xy, scores, names)), skeleton
    )


def _kpt_shape(rows: int, options: PoseOptions, labels: int) -> tuple[int, int, int]:
    """(C, K, D) of a ``[rows, N]`` pose head."""
    if options.kpt_shape is not None:
        k, d = options.kpt_shape
        classes = rows - 4 - k * d
    else:
        classes = labels or 1
        rest = rows - 4 - classes
        d = 3 if rest % 3 == 0 else 2
        k = rest // d
    if classes < 1 or k < 1 or rows != 4 + classes + k * d:
        raise ModelError(f"yolo-pose decoder: a head of {rows} rows is not 4 + C + K*D with C >= 1 for kpt_shape "
                         f"{list(options.kpt_shape) if options.kpt_shape else 'unset'}")
    return classes, k, d


def decode(outputs: list[np.ndarray], context: DecodeContext) -> list[Detection]:
    options = parse_options(PoseOptions, context, decoder="yolo-pose")
    if not outputs:
        raise ModelError("yolo-pose decoder: the model has no outputs")
    head = np.asarray(outputs[0])
    if head.ndim != 3 or head.shape[0] != 1:
        raise ModelError(f"yolo-pose decoder: the head must be [1, 4+C+K*D, N], got {list(head.shape)}")
    head = head[0].astype(np.float32, copy=False)
    classes, k, d = _kpt_shape(head.shape[0], options, len(context.labels))
    names, skeleton = _naming(k, options.keypoint_names, options.skeleton, "yolo-pose")
    selected = select(head[:4].T, head[4 : 4 + classes].T, options, context)
    raw = head[4 + classes :, selected.index].T.reshape(-1, k, d)
    xy = _to_frame(raw[..., :2], context, normalized=selected.normalized)
    scores = raw[..., 2] if d == 3 else np.ones(raw.shape[:2], dtype=np.float32)
    return [
        Detection(det.class_id, det.label, det.score, det.box, keypoints=_keypoints(xy[i], scores[i], names, skeleton))
        for i, det in enumerate(detections(selected, context))
    ]


def _landmark_array(output: np.ndarray, options: LandmarkOptions) -> np.ndarray:
    """``[K, D]`` from any of the layouts landmark regressors write."""
    out = np.asarray(output, dtype=np.float64)
    if out.ndim == 3 and out.shape[0] == 1 and out.shape[2] in (2, 3):
        points = out[0]
        if options.dims is not None and points.shape[1] != options.dims:
            raise ModelError(f"landmarks decoder: output {list(out.shape)} has {points.shape[1]} values per landmark, option dims={options.dims}")
    elif out.size and out.shape[0] == 1 and all(n == 1 for n in out.shape[1:-1]):
        flat = out.reshape(-1)
        if options.num_keypoints is not None:
            d = flat.size // options.num_keypoints
            if d not in (2, 3) or d * options.num_keypoints != flat.size or (options.dims not in (None, d)):
                raise ModelError(f"landmarks decoder: output {list(out.shape)} does not hold {options.num_keypoints} landmarks "
                                 f"of {options.dims or '2 or 3'} values")
        elif options.dims is not None:
            d = options.dims
            if flat.size % d:
                raise ModelError(f"landmarks decoder: output {list(out.shape)} is not a whole number of {d}-value landmarks")
        else:
            raise ModelError(f"landmarks decoder: a flat output {list(out.shape)} needs option num_keypoints or dims")
        points = flat.reshape(-1, d)
    else:
        raise ModelError(f"landmarks decoder: the output must be [1, K*D], [1, K, D] or [1, 1, 1, K*D], got {list(out.shape)}")
    if options.num_keypoints is not None and len(points) != options.num_keypoints:
        raise ModelError(f"landmarks decoder: output {list(out.shape)} holds {len(points)} landmarks, option num_keypoints={options.num_keypoints}")
    return points


def decode_landmarks(outputs: list[np.ndarray], context: DecodeContext) -> list[Detection]:
    options = parse_options(LandmarkOptions, context, decoder="landmarks")
    for name in ("landmarks_output", "presence_output"):
        index = getattr(options, name)
        if index is not None and index >= len(outputs):
            raise ModelError(f"landmarks decoder: option {name}={index} but the model has {len(outputs)} output(s)")
    points = _landmark_array(outputs[options.landmarks_output], options)
    presence = 1.0
    if options.presence_output is not None:
        value = np.asarray(outputs[options.presence_output], dtype=np.float64)
        if value.size != 1:
            raise ModelError(f"landmarks decoder: the presence output must be [1, 1], got {list(value.shape)}")
        presence = float(np.clip(value.reshape(()), 0.0, 1.0))
    if presence < context.score_threshold or not np.all(np.isfinite(points[:, :2])):
        return []
    normalized = options.normalized
    if normalized is None:
        normalized = float(np.max(np.abs(points[:, :2]))) <= NORMALIZED_LIMIT
    xy = _to_frame(points[:, :2], context, normalized=normalized)
    names, skeleton = _naming(len(points), options.keypoint_names, options.skeleton, "landmarks")
    box = BBox(float(xy[:, 0].min()), float(xy[:, 1].min()), float(xy[:, 0].max()), float(xy[:, 1].max()))
    keypoints = _keypoints(xy, np.full(len(points), presence), names, skeleton)
    return [Detection(0, context.label(0), presence, box, keypoints=keypoints)]
