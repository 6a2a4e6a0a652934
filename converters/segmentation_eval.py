"""Segmentation datasets and their scores: mean IoU and pixel accuracy (semantic), mask mAP (instances).

Semantic: ``images/`` + ``masks/`` (one-channel PNG of the same stem, pixel = class id, 255 =
ignore) + ``classes.txt``. The scores are accumulated over the whole set in one pixel confusion
matrix: IoU per class is TP / (TP + FP + FN), averaged over the classes present in the truth or
the predictions; pixels labelled 255 count for neither.

Instances: a YOLO segmentation dataset (``labels/`` lines ``class x1 y1 ... xn yn``, 0-1), each
polygon rasterised at the image's own size. Mask mAP is COCO's (greedy matching by score within a
class, 101-point interpolation, at most 100 objects per image) with mask IoU in place of box IoU;
the box mAP of the same detections comes from :mod:`detection_eval`.

Truth stays in source pixels; the runtime's decoder maps predictions back there, as on the device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_sdk.converters.data import ImageSet
from edge_sdk.converters.detection_eval import (
    IOU_THRESHOLDS, DetectionSet, Objects, Ranked, class_names_of, detection_metrics, mean_ap, read_yolo,
)
from edge_sdk.decoders import DecodeContext, get_decoder
from edge_sdk.errors import ConversionError, DatasetError
from edge_sdk.imagefolder import list_images, read_image
from edge_sdk.preprocess import Placement, Preprocessing, fit
from edge_sdk.report import Metrics
from edge_sdk.results import Mask, Segmentation

IGNORE = 255  # the label-image value that marks pixels nobody scores (borders, unlabelled)
MAX_INSTANCES = 100  # COCO's maxDets for mask AP


@dataclass(frozen=True)
class SemanticSet(ImageSet):
    """Images fitted to the model, with their label images (class id per source pixel)."""

    truth: tuple[np.ndarray, ...] = ()  # per image: H x W uint8 in source pixels
    placements: tuple[Placement, ...] = ()
    paths: tuple[Path, ...] = field(default=(), repr=False)
    spec: Preprocessing | None = None


@dataclass(frozen=True)
class InstanceSet(DetectionSet):
    """A detection set whose objects also carry their masks (same order as ``truth``'s rows)."""

    masks: tuple[tuple[Mask, ...], ...] = ()


# -- semantic -----------------------------------------------------------------------------------

def is_semantic_dataset(folder: str | Path) -> bool:
    """A semantic-segmentation dataset: ``images/`` and ``masks/`` side by side."""
    folder = Path(folder)
    return (folder / "images").is_dir() and (folder / "masks").is_dir()


def _read_label_image(path: Path, *, shape: tuple[int, int], num_classes: int) -> np.ndarray:
    labels = read_image(path)
    if labels.ndim == 3:
        # A grey PNG saved as RGB is still one class per pixel; a coloured (or palette) one is not.
        if labels.shape[2] not in (3, 4) or np.any(labels[:, :, :3] != labels[:, :, :1]):
            raise DatasetError(f"label image {path} has colours; it must hold one class id per pixel (one-channel PNG)")
        labels = labels[:, :, 0]
    if labels.shape != shape:
        raise DatasetError(f"label image {path} is {labels.shape[1]}x{labels.shape[0]} but its image is "
                           f"{shape[1]}x{shape[0]}")
    wrong = np.unique(labels[(labels >= num_classes) & (labels != IGNORE)])
    if wrong.size:
        raise DatasetError(f"label image {path} holds class id {int(wrong[0])}, but there are {num_classes} classes "
                           f"(ids 0-{num_classes - 1}, {IGNORE} = ignore)")
    return np.ascontiguousarray(labels, dtype=np.uint8)


def load_semantic(folder: str | Path, spec: Preprocessing, *, what: str, class_names: list[str] | None = None,
                  limit: int | None = None) -> SemanticSet:
    """A semantic-segmentation dataset fitted to the model; ``class_names`` default to its ``classes.txt``."""
    folder = Path(folder)
    if not is_semantic_dataset(folder):
        raise DatasetError(f"{what} {folder} is not a segmentation dataset (images/ and masks/ folders)")
    names = class_names or class_names_of(folder)
    if not names:
        raise DatasetError(f"{what} {folder} names no classes: add classes.txt, or pass --labels")
    paths = list_images(folder / "images", what=f"{what} images folder")[:limit]
    images, truth, placements = [], [], []
    for path in paths:
        mask_path = (folder / "masks" / path.relative_to(folder / "images")).with_suffix(".png")
        if not mask_path.is_file():
            raise DatasetError(f"{what} {folder}: image {path.name} has no label image {mask_path}")
        frame = read_image(path)
        truth.append(_read_label_image(mask_path, shape=frame.shape[:2], num_classes=len(names)))
        fitted, placement = fit(frame, spec)
        images.append(fitted[:, :, None] if fitted.ndim == 2 else fitted)
        placements.append(placement)
    return SemanticSet(np.stack(images), None, tuple(names), truth=tuple(truth), placements=tuple(placements),
                       paths=tuple(paths), spec=spec)


def predict_semantic(run: Callable[[np.ndarray], list[np.ndarray]], dataset: SemanticSet, *, decoder: str,
                     options: dict, progress: Callable[[str, int, int], None] | None = None) -> list[np.ndarray]:
    """Every image's class map in source pixels, through the runtime's decoder."""
    decode = get_decoder(decoder)
    found = []
    for i, batch in enumerate(dataset.batches(dataset.spec, size=1)):
        context = DecodeContext(labels=dataset.class_names, placement=dataset.placements[i],
                                preprocessing=dataset.spec, options=options)
        result = decode(run(batch), context)
        if not isinstance(result, Segmentation):
            raise ConversionError(f"decoder {decoder} returned {type(result).__name__}, not a Segmentation")
        if result.class_map.shape[:2] != dataset.truth[i].shape:
            raise ConversionError(f"decoder {decoder} returned a {result.frame_size[0]}x{result.frame_size[1]} class map "
                                  f"for a {dataset.truth[i].shape[1]}x{dataset.truth[i].shape[0]} image")
        found.append(np.asarray(result.class_map))
        if progress is not None:
            progress("evaluate", i + 1, len(dataset))
    return found


def pixel_confusion(predicted: Sequence[np.ndarray], truth: Sequence[np.ndarray], classes: int) -> np.ndarray:
    """Pixels of true class r given class c (rows: truth), over every image; 255 in the truth is skipped.

    A predicted id at or past ``classes`` counts as wrong for every class (an extra column).
    """
    matrix = np.zeros((classes, classes + 1), dtype=np.int64)
    for p, t in zip(predicted, truth):
        scored = t != IGNORE
        got = np.minimum(p[scored].astype(np.int64), classes)
        matrix += np.bincount(t[scored].astype(np.int64) * (classes + 1) + got,
                              minlength=classes * (classes + 1)).reshape(classes, classes + 1)
    return matrix


def semantic_metrics(predicted: Sequence[np.ndarray], truth: Sequence[np.ndarray], classes: int) -> Metrics:
    """Mean IoU over the classes present in the truth or the predictions, and pixel accuracy."""
    matrix = pixel_confusion(predicted, truth, classes)
    tp = np.diag(matrix[:, :classes]).astype(np.float64)
    union = matrix.sum(axis=1) + matrix[:, :classes].sum(axis=0) - tp
    present = union > 0
    miou = float(np.mean(tp[present] / union[present])) if present.any() else 0.0
    return Metrics(miou=miou, pixel_accuracy=float(tp.sum() / max(1, matrix.sum())))


def pixel_agreement(reference: Sequence[np.ndarray], converted: Sequence[np.ndarray]) -> float:
    """Share of all pixels to which both models give the same class."""
    same = sum(int(np.count_nonzero(r == c)) for r, c in zip(reference, converted))
    total = sum(r.size for r in reference)
    return same / total if total else 1.0


# -- instances ----------------------------------------------------------------------------------

def rasterise(polygon: np.ndarray, *, width: int, height: int) -> Mask:
    """A polygon in 0-1 frame coordinates as the mask of the pixels whose centres it covers (even-odd rule).

    Scanlines through the pixel centres, not ``cv2.fillPoly``: OpenCV also fills the pixels its
    outline touches, a one-pixel rim that inflates a small object's area by a fifth.
    """
    points = np.asarray(polygon, dtype=np.float64) * (width, height)
    x0, y0 = points[:, 0], points[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    top, bottom = max(0, int(np.floor(y0.min()))), min(height, int(np.ceil(y0.max())))
    canvas = np.zeros((height, width + 1), dtype=np.int32)
    if bottom > top:
        centres = np.arange(top, bottom)[:, None] + 0.5
        crossing = (y0 <= centres) != (y1 <= centres)  # half-open: a vertex on the line counts once
        with np.errstate(divide="ignore", invalid="ignore"):
            xs = np.where(crossing, x0 + (centres - y0) * (x1 - x0) / (y1 - y0), np.inf)
        xs.sort(axis=1)
        for k in range(0, int(crossing.sum(axis=1).max()) - 1, 2):  # spans between pairs of crossings
            a, b = xs[:, k], xs[:, k + 1]
            rows = np.flatnonzero(np.isfinite(b))
            start = np.clip(np.ceil(a[rows] - 0.5), 0, width).astype(int)
            stop = np.clip(np.ceil(b[rows] - 0.5), 0, width).astype(int)
            np.add.at(canvas, (rows + top, start), 1)
            np.add.at(canvas, (rows + top, stop), -1)
    return Mask.from_full(np.cumsum(canvas, axis=1)[:, :width] > 0)


def _read_polygons(path: Path, *, width: int, height: int, num_classes: int) -> tuple[np.ndarray, tuple[Mask, ...]]:
    if not path.is_file():
        return np.zeros((0, 5)), ()
    rows, masks = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        expected = f"expected 'class x1 y1 x2 y2 ... xn yn' (at least 3 points, 0-1) with a class below {num_classes}"
        try:
            class_id, values = int(parts[0]), np.asarray(parts[1:], dtype=np.float64)
        except ValueError as exc:
            raise DatasetError(f"{path}:{number}: {expected}, got '{line.strip()}'") from exc
        if len(values) % 2 or len(values) < 6 or not 0 <= class_id < num_classes \
                or not np.all((values >= 0) & (values <= 1)):
            raise DatasetError(f"{path}:{number}: {expected}, got {len(values)} coordinates in '{line.strip()[:80]}'")
        polygon = values.reshape(-1, 2)
        x1, y1 = polygon.min(axis=0) * (width, height)
        x2, y2 = polygon.max(axis=0) * (width, height)
        rows.append((class_id, x1, y1, x2, y2))
        masks.append(rasterise(polygon, width=width, height=height))
    return np.asarray(rows, dtype=np.float64).reshape(-1, 5), tuple(masks)


def load_yolo_seg(folder: str | Path, spec: Preprocessing, *, what: str, class_names: list[str] | None = None,
                  limit: int | None = None) -> InstanceSet:
    """A YOLO segmentation dataset fitted to the model: boxes (the polygons' extents) and masks."""
    names, images, placements, paths, labels = read_yolo(folder, spec, what=what, class_names=class_names,
                                                         limit=limit, parse=_read_polygons)
    return InstanceSet(images, None, names, truth=tuple(b for b, _ in labels), placements=placements, paths=paths,
                       spec=spec, masks=tuple(m for _, m in labels))


def mask_iou_matrix(a: Sequence[Mask | None], b: Sequence[Mask]) -> np.ndarray:
    """IoU of every mask in ``a`` with every mask in ``b`` (a missing or empty mask overlaps nothing)."""
    out = np.zeros((len(a), len(b)))
    areas_b = [m.area for m in b]
    for i, m in enumerate(a):
        if m is None or m.area == 0:
            continue
        area = m.area
        mh, mw = m.bitmap.shape
        for j, n in enumerate(b):
            nh, nw = n.bitmap.shape
            x0, y0 = max(m.x, n.x), max(m.y, n.y)
            x1, y1 = min(m.x + mw, n.x + nw), min(m.y + mh, n.y + nh)
            inter = 0
            if x1 > x0 and y1 > y0:
                inter = int(np.count_nonzero(m.bitmap[y0 - m.y:y1 - m.y, x0 - m.x:x1 - m.x]
                                             & n.bitmap[y0 - n.y:y1 - n.y, x0 - n.x:x1 - n.x]))
            union = area + areas_b[j] - inter
            out[i, j] = inter / union if union else 0.0
    return out


def mask_groups(found: Sequence[Objects], truth: Sequence[np.ndarray], masks: Sequence[Sequence[Mask]]) -> dict[int, list[Ranked]]:
    """Per class, each image's detections ranked with their mask IoU to the truths of that class."""
    groups: dict[int, list[Ranked]] = {}
    for f, t, m in zip(found, truth, masks):
        for c in np.unique(np.concatenate([f.boxes[:, 0], t[:, 0]])).astype(int):
            mine = np.flatnonzero(f.boxes[:, 0] == c)
            mine = mine[np.argsort(-f.boxes[mine, 5], kind="stable")]
            theirs = np.flatnonzero(t[:, 0] == c)
            similarity = mask_iou_matrix([f.masks[i] if i < len(f.masks) else None for i in mine],
                                         [m[j] for j in theirs])
            groups.setdefault(int(c), []).append(Ranked(f.boxes[mine, 5], similarity, np.zeros(len(theirs), dtype=bool)))
    return groups


def instance_metrics(found: Sequence[Objects], dataset: InstanceSet, classes: int) -> Metrics:
    """Mask mAP@0.5 and @0.5:0.95, with the box mAP, precision and recall of the same detections."""
    per_threshold = mean_ap(mask_groups(found, dataset.truth, dataset.masks), IOU_THRESHOLDS)
    boxes = detection_metrics([f.boxes for f in found], dataset.truth, classes)
    return boxes.model_copy(update={"mask_map50": per_threshold[0], "mask_map50_95": float(np.mean(per_threshold))})
