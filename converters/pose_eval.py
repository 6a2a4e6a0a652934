"""Pose datasets (YOLO pose format) and their scores: OKS keypoint mAP for poses, PCK for landmarks.

Labels are ``class cx cy w h`` then ``x y v`` (or ``x y``) per keypoint, 0-1; ``data.yaml`` gives
``kpt_shape: [K, 3]`` (or ``[K, 2]``). ``v`` 0 is not labelled, 1 hidden, 2 visible; with two
values per keypoint a point at (0, 0) is not labelled (YOLO's convention for a missing point).

Keypoint mAP is COCO's: object keypoint similarity OKS = mean over labelled points of
exp(-d² / (2 s² (2σ)²)), with s² the truth's area (here its box area: YOLO labels carry no mask;
Ultralytics scales that by 0.53, so its figure reads a little lower than ours on the same model)
and σ COCO's per-joint sigmas when K == 17, else a uniform 0.05. Detections are matched greedily
by score within a class at OKS 0.5 ... 0.95, at most 20 per image (COCO's keypoint maxDets);
an object with no labelled keypoint is ignored, as COCO does.

Landmarks (one object per image, a face's or a hand's points): PCK@0.1, the share of labelled
points the model places within 0.1 × the diagonal of the object's box of the truth, over the set.
The box diagonal, not a per-dataset reference length (inter-ocular distance, head segment), so
any landmark set scores the same way without extra labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_sdk.converters.detection_eval import (
    IOU_THRESHOLDS, DetectionSet, Objects, Ranked, detection_metrics, is_yolo_dataset, mean_ap, read_yolo,
)
from edge_sdk.errors import DatasetError
from edge_sdk.preprocess import Preprocessing
from edge_sdk.report import Metrics

# COCO's person keypoint sigmas (nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles).
COCO_SIGMAS = np.array([0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62,
                        1.07, 1.07, 0.87, 0.87, 0.89, 0.89]) / 10.0
UNIFORM_SIGMA = 0.05
MAX_POSES = 20  # COCO's maxDets for keypoint AP
PCK_THRESHOLD = 0.1


@dataclass(frozen=True)
class PoseSet(DetectionSet):
    """A detection set whose objects carry keypoints: per image k x K x 3 (x, y in source pixels, v)."""

    keypoints: tuple[np.ndarray, ...] = ()
    kpt_shape: tuple[int, int] = (0, 3)
    landmarks: bool = False  # one object per image, scored by PCK


def sigmas_for(count: int) -> np.ndarray:
    """COCO's sigmas for its 17 body keypoints, a uniform 0.05 for any other layout."""
    return COCO_SIGMAS if count == len(COCO_SIGMAS) else np.full(count, UNIFORM_SIGMA)


def kpt_shape_of(folder: str | Path) -> tuple[int, int]:
    """``kpt_shape`` from the dataset's ``data.yaml``: (K, 2 or 3)."""
    import yaml

    path = Path(folder) / "data.yaml"
    if not path.is_file():
        raise DatasetError(f"pose dataset {folder} has no data.yaml giving kpt_shape: [K, 3]")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise DatasetError(f"{path} is not valid YAML: {exc.__class__.__name__}") from exc
    shape = data.get("kpt_shape") if isinstance(data, dict) else None
    if shape is None:
        raise DatasetError(f"{path} lacks kpt_shape (e.g. kpt_shape: [17, 3]), needed to read pose labels")
    if not (isinstance(shape, list) and len(shape) == 2 and all(isinstance(v, int) for v in shape)
            and shape[0] >= 1 and shape[1] in (2, 3)):
        raise DatasetError(f"{path}: kpt_shape must be [K, 2] or [K, 3] with K >= 1, not {shape}")
    return shape[0], shape[1]


def _parser(count: int, dims: int, landmarks: bool):
    width_of_line = 5 + count * dims

    def parse(path: Path, *, width: int, height: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
        if not path.is_file():
            return np.zeros((0, 5)), np.zeros((0, count, 3))
        boxes, points = [], []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            parts = line.split()
            if not parts:
                continue
            expected = (f"expected {width_of_line} values for kpt_shape [{count}, {dims}] "
                        f"(class cx cy w h, then {'x y v' if dims == 3 else 'x y'} per keypoint)")
            if len(parts) != width_of_line:
                raise DatasetError(f"{path}:{number}: {expected}, got {len(parts)}")
            try:
                class_id, values = int(parts[0]), np.asarray(parts[1:], dtype=np.float64)
            except ValueError as exc:
                raise DatasetError(f"{path}:{number}: {expected}, got '{line.strip()[:80]}'") from exc
            kpts = values[4:].reshape(count, dims)
            if not 0 <= class_id < num_classes or not np.all((values[:4] >= 0) & (values[:4] <= 1)) \
                    or not np.all((kpts[:, :2] >= 0) & (kpts[:, :2] <= 1)) or (dims == 3 and np.any(kpts[:, 2] < 0)):
                raise DatasetError(f"{path}:{number}: expected a class below {num_classes}, a 0-1 box and 0-1 "
                                   f"keypoints, got '{line.strip()[:80]}'")
            cx, cy, w, h = values[:4]
            boxes.append((class_id, (cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height))
            labelled = kpts[:, 2] if dims == 3 else np.where(np.all(kpts[:, :2] == 0, axis=1), 0.0, 2.0)
            points.append(np.column_stack([kpts[:, 0] * width, kpts[:, 1] * height, labelled]))
        if landmarks and len(boxes) > 1:
            raise DatasetError(f"{path}: a landmark model is scored on one object per image, this label has {len(boxes)}")
        return np.asarray(boxes, dtype=np.float64).reshape(-1, 5), np.asarray(points, dtype=np.float64).reshape(-1, count, 3)

    return parse


def load_pose(folder: str | Path, spec: Preprocessing, *, what: str, class_names: list[str] | None = None,
              landmarks: bool = False, limit: int | None = None) -> PoseSet:
    """A YOLO pose dataset fitted to the model: boxes and keypoints in source pixels."""
    if not is_yolo_dataset(folder):
        raise DatasetError(f"{what} {folder} is not a YOLO pose dataset (images/ and labels/ folders, data.yaml)")
    count, dims = kpt_shape_of(folder)
    names, images, placements, paths, labels = read_yolo(folder, spec, what=what, class_names=class_names,
                                                         limit=limit, parse=_parser(count, dims, landmarks))
    return PoseSet(images, None, names, truth=tuple(b for b, _ in labels), placements=placements, paths=paths,
                   spec=spec, keypoints=tuple(k for _, k in labels), kpt_shape=(count, dims), landmarks=landmarks)


def oks_matrix(found: np.ndarray, truth: np.ndarray, boxes: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """COCO's object keypoint similarity of each found pose (d x K x 2+) with each truth (g x K x 3).

    ``boxes`` are the truths' boxes (g x 4, x1 y1 x2 y2); their area is the object scale. A truth
    with no labelled point is compared, as COCO does, by how far the points fall outside its box
    grown by its own size on each side (it is ignored in the score; this only decides what it absorbs).
    """
    out = np.zeros((len(found), len(truth)))
    variances = (2 * sigmas) ** 2
    for j, (t, (x1, y1, x2, y2)) in enumerate(zip(truth, boxes)):
        w, h = x2 - x1, y2 - y1
        area = w * h + np.spacing(1)
        labelled = t[:, 2] > 0
        for i, f in enumerate(found):
            if labelled.any():
                dx, dy = f[:, 0] - t[:, 0], f[:, 1] - t[:, 1]
            else:
                dx = np.maximum(0, (x1 - w) - f[:, 0]) + np.maximum(0, f[:, 0] - (x2 + w))
                dy = np.maximum(0, (y1 - h) - f[:, 1]) + np.maximum(0, f[:, 1] - (y2 + h))
            e = (dx**2 + dy**2) / variances / area / 2
            if labelled.any():
                e = e[labelled]
            out[i, j] = float(np.mean(np.exp(-e)))
    return out


def keypoint_groups(found: Sequence[Objects], dataset: PoseSet) -> dict[int, list[Ranked]]:
    """Per class, each image's poses ranked with their OKS to the truths of that class."""
    sigmas = sigmas_for(dataset.kpt_shape[0])
    groups: dict[int, list[Ranked]] = {}
    for f, t, k in zip(found, dataset.truth, dataset.keypoints):
        for c in np.unique(np.concatenate([f.boxes[:, 0], t[:, 0]])).astype(int):
            mine = np.flatnonzero(f.boxes[:, 0] == c)
            mine = mine[np.argsort(-f.boxes[mine, 5], kind="stable")][:MAX_POSES]
            theirs = np.flatnonzero(t[:, 0] == c)
            points = f.keypoints[mine] if f.keypoints is not None else np.zeros((len(mine), len(sigmas), 3))
            similarity = oks_matrix(points, k[theirs], t[theirs, 1:5], sigmas)
            ignore = ~np.any(k[theirs, :, 2] > 0, axis=1)
            groups.setdefault(int(c), []).append(Ranked(f.boxes[mine, 5], similarity, ignore))
    return groups


def pose_metrics(found: Sequence[Objects], dataset: PoseSet, classes: int) -> Metrics:
    """Keypoint mAP@0.5 and @0.5:0.95 (OKS), with the box mAP, precision and recall of the same detections."""
    per_threshold = mean_ap(keypoint_groups(found, dataset), IOU_THRESHOLDS)
    boxes = detection_metrics([f.boxes[:MAX_POSES] for f in found], dataset.truth, classes)
    return boxes.model_copy(update={"kpt_map50": per_threshold[0], "kpt_map50_95": float(np.mean(per_threshold))})


def pck(found: Sequence[Objects], truth_boxes: Sequence[np.ndarray], truth_points: Sequence[np.ndarray], *,
        threshold: float = PCK_THRESHOLD) -> float:
    """Share of labelled truth points whose image's best-scoring object puts the point within
    ``threshold`` × the truth box's diagonal; an image without a prediction misses all its points."""
    hit = total = 0
    for f, boxes, points in zip(found, truth_boxes, truth_points):
        if len(boxes) == 0:
            continue
        labelled = points[0, :, 2] > 0
        total += int(labelled.sum())
        if f.keypoints is None or len(f.keypoints) == 0:
            continue
        best = f.keypoints[int(np.argmax(f.boxes[:, 5]))]
        radius = threshold * float(np.hypot(boxes[0, 3] - boxes[0, 1], boxes[0, 4] - boxes[0, 2]))
        distance = np.hypot(best[:, 0] - points[0, :, 0], best[:, 1] - points[0, :, 1])
        hit += int(np.count_nonzero(labelled & (distance <= radius)))
    return hit / total if total else 0.0


def landmark_metrics(found: Sequence[Objects], dataset: PoseSet) -> Metrics:
    """PCK@0.1 of the box diagonal over the set."""
    return Metrics(pck=pck(found, dataset.truth, dataset.keypoints), pck_threshold=PCK_THRESHOLD)


def metrics(found: Sequence[Objects], dataset: PoseSet, classes: int) -> Metrics:
    """The set's own figures: PCK for landmarks, keypoint and box mAP for poses."""
    return landmark_metrics(found, dataset) if dataset.landmarks else pose_metrics(found, dataset, classes)


def landmark_agreement(dataset: PoseSet, reference: Sequence[Objects], converted: Sequence[Objects]) -> float:
    """PCK@0.1 of the converted model's points against the reference model's (every point labelled)."""
    boxes, points = [], []
    for t, r in zip(dataset.truth, reference):
        if r.keypoints is None or len(r.keypoints) == 0 or len(t) == 0:
            boxes.append(np.zeros((0, 5)))
            points.append(np.zeros((0, dataset.kpt_shape[0], 3)))
            continue
        best = r.keypoints[int(np.argmax(r.boxes[:, 5]))]
        boxes.append(t[:1])
        points.append(np.column_stack([best[:, :2], np.full(len(best), 2.0)])[None])
    if not any(len(b) for b in boxes):
        return 1.0
    return pck(converted, boxes, points)
