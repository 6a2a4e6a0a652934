"""Detection datasets in YOLO format, and their scores: mAP@0.5, mAP@0.5:0.95, precision and recall.

Predictions are made the way the device makes them: the model's raw head goes through the
runtime's own decoder (``edge_sdk.decoders``), so the score measures what a user gets. Average
precision is COCO's: per class, detections sorted by score are matched greedily to unmatched
ground truth at an IoU threshold, and precision is interpolated at 101 recall points.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_sdk.converters.data import ImageSet
from edge_sdk.decoders import DecodeContext, get_decoder
from edge_sdk.errors import ConversionError, DatasetError
from edge_sdk.geometry import iou_matrix  # noqa: F401 (part of this module's interface: the tests and callers import it here)
from edge_sdk.imagefolder import list_images, read_image
from edge_sdk.preprocess import Placement, Preprocessing, fit
from edge_sdk.report import Metrics
from edge_sdk.results import Mask, Segmentation

IOU_THRESHOLDS = np.round(np.arange(0.5, 0.96, 0.05), 2)
EVAL_SCORE_THRESHOLD = 0.001  # mAP needs the whole ranking, not just the confident boxes
OPERATING_THRESHOLD = 0.25  # precision and recall are reported where a run's default threshold cuts


@dataclass(frozen=True)
class DetectionSet(ImageSet):
    """Images fitted to the model, with their ground truth boxes in source pixels."""

    truth: tuple[np.ndarray, ...] = ()  # per image: k x 5 (class, x1, y1, x2, y2)
    placements: tuple[Placement, ...] = ()
    paths: tuple[Path, ...] = field(default=(), repr=False)
    spec: Preprocessing | None = None  # how the images were fitted, for mapping boxes back


def is_yolo_dataset(folder: str | Path) -> bool:
    """A YOLO-format dataset: ``images/`` and ``labels/`` side by side."""
    folder = Path(folder)
    return (folder / "images").is_dir() and (folder / "labels").is_dir()


def class_names_of(folder: str | Path) -> list[str] | None:
    """Class names from ``classes.txt`` or the ``names`` of ``data.yaml``, if the dataset has them."""
    folder = Path(folder)
    if (folder / "classes.txt").is_file():
        return [line.strip() for line in (folder / "classes.txt").read_text(encoding="utf-8").splitlines() if line.strip()]
    for name in ("data.yaml", "dataset.yaml"):
        if (folder / name).is_file():
            import yaml

            try:
                names = (yaml.safe_load((folder / name).read_text(encoding="utf-8")) or {}).get("names")
            except yaml.YAMLError as exc:
                raise DatasetError(f"{folder / name} is not valid YAML: {exc.__class__.__name__}") from exc
            if isinstance(names, dict):
                return [str(names[k]) for k in sorted(names)]
            if isinstance(names, list):
                return [str(n) for n in names]
    return None


def _label_path(folder: Path, image: Path) -> Path:
    relative = image.relative_to(folder / "images")
    return (folder / "labels" / relative).with_suffix(".txt")


def _read_labels(path: Path, *, width: int, height: int, num_classes: int) -> np.ndarray:
    if not path.is_file():
        return np.zeros((0, 5))  # YOLO's convention: no label file means no objects
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            class_id, cx, cy, w, h = int(parts[0]), *map(float, parts[1:5])
        except (ValueError, TypeError) as exc:
            raise DatasetError(f"{path}:{number}: expected 'class cx cy w h', got '{line.strip()}'") from exc
        if len(parts) != 5 or not 0 <= class_id < num_classes or not all(0 <= v <= 1 for v in (cx, cy, w, h)):
            raise DatasetError(f"{path}:{number}: expected 'class cx cy w h' with a class below {num_classes} and 0-1 box, got '{line.strip()}'")
        rows.append((class_id, (cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height))
    return np.asarray(rows, dtype=np.float64).reshape(-1, 5)


def read_yolo(folder: str | Path, spec: Preprocessing, *, what: str, class_names: list[str] | None,
              limit: int | None, parse: Callable[..., Any]) -> tuple[tuple[str, ...], np.ndarray, tuple, tuple, list]:
    """A YOLO-layout dataset's names, images fitted to the model, placements, paths and parsed labels.

    ``parse(label_path, width=, height=, num_classes=)`` reads one image's label file (which may be
    missing) with the image's source size; the detection, segmentation and pose loaders differ
    only there.
    """
    folder = Path(folder)
    if not is_yolo_dataset(folder):
        raise DatasetError(f"{what} {folder} is not a YOLO dataset (images/ and labels/ folders)")
    names = class_names or class_names_of(folder)
    if not names:
        raise DatasetError(f"{what} {folder} names no classes: add classes.txt or data.yaml, or pass --labels")
    paths = list_images(folder / "images", what=f"{what} images folder")
    if limit is not None:
        paths = paths[:limit]
    images, placements, labels = [], [], []
    for path in paths:
        frame = read_image(path)
        fitted, placement = fit(frame, spec)
        images.append(fitted[:, :, None] if fitted.ndim == 2 else fitted)
        placements.append(placement)
        labels.append(parse(_label_path(folder, path), width=frame.shape[1], height=frame.shape[0], num_classes=len(names)))
    return tuple(names), np.stack(images), tuple(placements), tuple(paths), labels


def load_yolo(folder: str | Path, spec: Preprocessing, *, what: str, class_names: list[str] | None = None,
              limit: int | None = None) -> DetectionSet:
    """A YOLO-format dataset fitted to the model; ``class_names`` default to the dataset's own."""
    names, images, placements, paths, truth = read_yolo(folder, spec, what=what, class_names=class_names,
                                                        limit=limit, parse=_read_labels)
    return DetectionSet(images, None, names, truth=tuple(truth), placements=placements, paths=paths, spec=spec)


def decode_head(outputs: list[np.ndarray], dataset: DetectionSet, index: int, *, decoder: str, options: dict,
                threshold: float = EVAL_SCORE_THRESHOLD) -> np.ndarray:
    """One image's detections through the runtime's decoder: k x 6 (class, x1, y1, x2, y2, score) in source pixels."""
    placement = dataset.placements[index]
    context = DecodeContext(labels=dataset.class_names, placement=placement, preprocessing=dataset.spec,
                            score_threshold=threshold, options=options)
    rows = []
    for d in get_decoder(decoder)(outputs, context):
        x1, y1, x2, y2 = d.box.x1 * placement.source_width, d.box.y1 * placement.source_height, \
            d.box.x2 * placement.source_width, d.box.y2 * placement.source_height
        rows.append((d.class_id, x1, y1, x2, y2, d.score))
    return np.asarray(rows, dtype=np.float64).reshape(-1, 6)


def predict_all(run: Callable[[np.ndarray], list[np.ndarray]], dataset: DetectionSet, *,
                decoder: str, options: dict, progress: Callable[[str, int, int], None] | None = None) -> list[np.ndarray]:
    """Detections for every image; ``run`` maps one normalised float batch of one to the model's outputs."""
    found = []
    for i, batch in enumerate(dataset.batches(dataset.spec, size=1)):
        found.append(decode_head(run(batch), dataset, i, decoder=decoder, options=options))
        if progress is not None:
            progress("evaluate", i + 1, len(dataset))
    return found


@dataclass(frozen=True, eq=False)
class Objects:
    """One image's decoded objects, best score first: boxes as detection rows (what the box metrics
    read), and each object's mask (instance segmentation) or keypoints (pose), in source pixels."""

    boxes: np.ndarray  # k x 6: class, x1, y1, x2, y2, score
    masks: tuple[Mask | None, ...] = ()
    keypoints: np.ndarray | None = None  # k x K x 3: x, y, score


def decode_objects(outputs: list[np.ndarray], dataset: DetectionSet, index: int, *, decoder: str, options: dict,
                   keep: int, threshold: float = EVAL_SCORE_THRESHOLD) -> Objects:
    """One image's objects through the runtime's decoder, the ``keep`` best (COCO scores at most
    100 masks or 20 poses per image)."""
    placement = dataset.placements[index]
    context = DecodeContext(labels=dataset.class_names, placement=placement, preprocessing=dataset.spec,
                            score_threshold=threshold, options=options)
    found = get_decoder(decoder)(outputs, context)
    if isinstance(found, Segmentation):
        raise ConversionError(f"decoder {decoder} returned a segmentation map where objects were expected")
    found = sorted(found, key=lambda d: -d.score)[:keep]
    width, height = placement.source_width, placement.source_height
    points = [d.keypoints.array() * (width, height, 1) if d.keypoints is not None else None for d in found]
    sizes = {len(p) for p in points if p is not None}
    if len(sizes) > 1:
        raise ConversionError(f"decoder {decoder} returned objects with {sorted(sizes)} keypoints")
    rows = []
    for d, p in zip(found, points):
        if d.box is not None:
            box = (d.box.x1 * width, d.box.y1 * height, d.box.x2 * width, d.box.y2 * height)
        elif p is not None and len(p):  # a landmark model may give points only: their extent is the box
            box = (*p[:, :2].min(axis=0), *p[:, :2].max(axis=0))
        else:
            box = (0.0, 0.0, 0.0, 0.0)
        rows.append((d.class_id, *box, d.score))
    keypoints = None
    if sizes:
        (k,) = sizes
        keypoints = np.stack([p if p is not None else np.zeros((k, 3)) for p in points]).reshape(len(found), k, 3)
    return Objects(np.asarray(rows, dtype=np.float64).reshape(-1, 6), tuple(d.mask for d in found), keypoints)


def predict_objects(run: Callable[[np.ndarray], list[np.ndarray]], dataset: DetectionSet, *, decoder: str,
                    options: dict, keep: int, progress: Callable[[str, int, int], None] | None = None) -> list[Objects]:
    """Objects (boxes with masks or keypoints) for every image; ``run`` as for :func:`predict_all`."""
    found = []
    for i, batch in enumerate(dataset.batches(dataset.spec, size=1)):
        found.append(decode_objects(run(batch), dataset, i, decoder=decoder, options=options, keep=keep))
        if progress is not None:
            progress("evaluate", i + 1, len(dataset))
    return found


def greedy_match(similarity: np.ndarray, threshold: float, ignore: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """COCO's matching of one image's detections of one class (rows, best score first) to its truths (columns).

    Each detection takes the most similar truth still free at ``similarity >= threshold`` (the later
    one on a tie, as pycocotools); a truth marked ``ignore`` is taken only when no counted truth is
    left to match, and the detection that takes it is neither a hit nor a miss. Returns the hit and
    the dropped flags of the detections.
    """
    count, truths = similarity.shape
    ignore = np.zeros(truths, dtype=bool) if ignore is None else ignore
    taken = np.zeros(truths, dtype=bool)
    hits = np.zeros(count, dtype=bool)
    dropped = np.zeros(count, dtype=bool)
    threshold = min(threshold, 1 - 1e-10)
    for i in range(count if truths else 0):
        for group in (~ignore, ignore):
            free = group & ~taken & (similarity[i] >= threshold)
            if free.any():
                candidates = np.where(free, similarity[i], -1.0)
                j = truths - 1 - int(np.argmax(candidates[::-1]))
                taken[j] = True
                hits[i], dropped[i] = not ignore[j], bool(ignore[j])
                break
    return hits, dropped


def ranked_ap(scores: Sequence[np.ndarray], hits: Sequence[np.ndarray], positives: int) -> float | None:
    """COCO 101-point AP of detections pooled over images (scores and hit flags per image); None without truth."""
    if positives == 0:
        return None
    scores, hits = np.concatenate([np.zeros(0), *scores]), np.concatenate([np.zeros(0, dtype=bool), *hits])
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(hits[order])
    fp = np.cumsum(~hits[order])
    recall = tp / positives
    precision = tp / np.maximum(tp + fp, 1)
    envelope = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    index = np.searchsorted(recall, np.linspace(0, 1, 101), side="left")
    return float(np.mean([envelope[i] if i < len(envelope) else 0.0 for i in index]))


def _matches(found: np.ndarray, truth: np.ndarray, class_id: int, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Scores and true-positive flags of one image's detections of one class, matched greedily by score."""
    mine = found[found[:, 0] == class_id]
    mine = mine[np.argsort(-mine[:, 5], kind="stable")]
    gt = truth[truth[:, 0] == class_id][:, 1:5]
    hits, _ = greedy_match(iou_matrix(mine[:, 1:5], gt), threshold)
    return mine[:, 5], hits


def average_precision(found: Sequence[np.ndarray], truth: Sequence[np.ndarray], class_id: int, threshold: float) -> float | None:
    """COCO 101-point AP of one class at one IoU threshold; None when the class has no ground truth."""
    positives = sum(int(np.sum(t[:, 0] == class_id)) for t in truth)
    if positives == 0:
        return None
    scores, hits = zip(*(_matches(f, t, class_id, threshold) for f, t in zip(found, truth)))
    return ranked_ap(scores, hits, positives)


@dataclass(frozen=True)
class Ranked:
    """One image's detections of one class, best score first, and how similar each is to each truth
    of that class (mask IoU, keypoint OKS): what :func:`mean_ap` needs besides the threshold."""

    scores: np.ndarray  # d
    similarity: np.ndarray  # d x g
    ignore: np.ndarray  # g bool: truths that count neither as positives nor against a detection


def mean_ap(groups: dict[int, list[Ranked]], thresholds: Sequence[float] = IOU_THRESHOLDS) -> list[float]:
    """mAP at each threshold: the mean over classes with counted truth of COCO's AP; 0 when no class has any."""
    per_threshold = []
    for threshold in thresholds:
        aps = []
        for ranked in groups.values():
            positives = sum(int(np.sum(~r.ignore)) for r in ranked)
            scores, hits = [], []
            for r in ranked:
                hit, dropped = greedy_match(r.similarity, float(threshold), r.ignore)
                scores.append(r.scores[~dropped])
                hits.append(hit[~dropped])
            ap = ranked_ap(scores, hits, positives)
            if ap is not None:
                aps.append(ap)
        per_threshold.append(float(np.mean(aps)) if aps else 0.0)
    return per_threshold


def precision_recall(found: Sequence[np.ndarray], truth: Sequence[np.ndarray], *, score: float = OPERATING_THRESHOLD,
                     iou: float = 0.5) -> tuple[float, float]:
    """Micro precision and recall of detections scoring at least ``score``, matched at ``iou`` within their class."""
    tp = fp = positives = 0
    for f, t in zip(found, truth):
        kept = f[f[:, 5] >= score]
        positives += len(t)
        for class_id in np.unique(np.concatenate([kept[:, 0], t[:, 0]])).astype(int):
            _, hits = _matches(kept, t, class_id, iou)
            tp += int(hits.sum())
            fp += int((~hits).sum())
    return tp / max(1, tp + fp), tp / max(1, positives)


def detection_metrics(found: Sequence[np.ndarray], truth: Sequence[np.ndarray], num_classes: int) -> Metrics:
    """mAP@0.5, mAP@0.5:0.95 (mean over classes present in the ground truth), precision and recall at 0.25."""
    per_threshold = []
    for threshold in IOU_THRESHOLDS:
        aps = [average_precision(found, truth, c, float(threshold)) for c in range(num_classes)]
        aps = [ap for ap in aps if ap is not None]
        per_threshold.append(float(np.mean(aps)) if aps else 0.0)
    precision, recall = precision_recall(found, truth)
    return Metrics(map50=per_threshold[0], map50_95=float(np.mean(per_threshold)), precision=precision, recall=recall)


def agreement(reference: Sequence[np.ndarray], converted: Sequence[np.ndarray], *, score: float = OPERATING_THRESHOLD) -> float:
    """Share of the reference model's confident detections that the converted model also makes (same class, IoU ≥ 0.5)."""
    as_truth = [r[r[:, 5] >= score][:, :5] for r in reference]
    total = sum(len(t) for t in as_truth)
    if total == 0:
        return 1.0
    _, recall = precision_recall(converted, as_truth, score=score)
    return recall
