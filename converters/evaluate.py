"""Accuracy of the reference and the converted model on the same validation images."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from edge_sdk.bundle import Decoder
from edge_sdk.converters import detection_eval, pose_eval, segmentation_eval
from edge_sdk.converters.data import ImageSet
from edge_sdk.converters.detection_eval import DetectionSet
from edge_sdk.converters.pose_eval import PoseSet
from edge_sdk.converters.segmentation_eval import InstanceSet, SemanticSet
from edge_sdk.converters.models import SourceModel
from edge_sdk.errors import ConversionError
from edge_sdk.preprocess import Preprocessing, dequantize, quantize
from edge_sdk.report import Metrics, OutputFidelity

ProgressFn = Callable[[str, int, int], None]


def engine_runner(engine, order: list[int] | None = None) -> Callable[[np.ndarray], list[np.ndarray]]:
    """A float batch of one -> the engine's float outputs, quantizing and dequantizing as the device does.

    ``order`` lists, for each of the source model's outputs, which engine output holds it.
    """
    (inp,) = engine.input_specs()
    outs = engine.output_specs()
    integer_in = inp["quantization"] is not None and inp["dtype"] != np.float32

    def run(batch: np.ndarray) -> list[np.ndarray]:
        if integer_in:
            scale, zero_point = inp["quantization"]
            batch = quantize(batch, scale=scale, zero_point=zero_point, dtype=inp["dtype"])
        raw = engine.run([batch])
        floats = [
            dequantize(r, scale=o["quantization"][0], zero_point=o["quantization"][1])
            if o["quantization"] is not None and o["dtype"] != np.float32 else r
            for r, o in zip(raw, outs)
        ]
        return floats if order is None else [floats[i] for i in order]

    return run


def match_outputs(reference: list[np.ndarray], converted: list[np.ndarray]) -> list[int]:
    """For each reference output, the index of the converted output that holds it.

    Compilers reorder outputs (TFLite sorts a SavedModel's signature keys, OpenVINO keeps the
    graph's order); shapes settle most cases, and values settle outputs of equal shape.
    """
    if len(reference) != len(converted):
        raise ConversionError(f"the converted model has {len(converted)} outputs, the source {len(reference)}")
    order: list[int] = []
    for ref in reference:
        candidates = [j for j, out in enumerate(converted) if j not in order and out.size == ref.size]
        if not candidates:
            raise ConversionError(f"no output of the converted model has the source output's shape {list(ref.shape)}")
        scale = float(np.std(ref)) or 1.0
        errors = [float(np.mean(np.abs(converted[j].reshape(ref.shape) - ref))) / scale for j in candidates]
        order.append(candidates[int(np.argmin(errors))])
    return order


def _predict(run, val: ImageSet, decoder: Decoder, progress: ProgressFn | None = None):
    """A task set's predictions through the runtime's decoder: class maps, objects or detection rows per image."""
    if isinstance(val, SemanticSet):
        return segmentation_eval.predict_semantic(run, val, decoder=decoder.kind, options=decoder.options, progress=progress)
    if isinstance(val, (InstanceSet, PoseSet)):
        keep = segmentation_eval.MAX_INSTANCES if isinstance(val, InstanceSet) else pose_eval.MAX_POSES
        return detection_eval.predict_objects(run, val, decoder=decoder.kind, options=decoder.options, keep=keep,
                                              progress=progress)
    return detection_eval.predict_all(run, val, decoder=decoder.kind, options=decoder.options, progress=progress)


def reference_predictions(source: SourceModel, val: ImageSet, spec: Preprocessing, *, decoder: Decoder | None = None):
    """The float model's predictions: top-1 classes, or per image a detector's boxes, a segmenter's class
    map, an instance or pose model's objects (None for a custom model)."""
    if isinstance(val, (DetectionSet, SemanticSet)):
        return _predict(source.predict, val, decoder)
    if val.labels is None:
        return None
    return np.concatenate([np.argmax(source.predict(batch)[0], axis=-1) for batch in val.batches(spec, size=64)])


def engine_predictions(engine, val: ImageSet, spec: Preprocessing, *, decoder: Decoder | None = None,
                       progress: ProgressFn | None = None, order: list[int] | None = None):
    """A compiled model's predictions in its runtime engine, one image at a time as on the device."""
    run = engine_runner(engine, order)
    if isinstance(val, (DetectionSet, SemanticSet)):
        return _predict(run, val, decoder, progress)
    if val.labels is None:
        return None
    predictions = np.empty(len(val), dtype=np.int64)
    for i, batch in enumerate(val.batches(spec, size=1)):
        predictions[i] = int(np.argmax(run(batch)[0][0]))
        if progress is not None:
            progress("evaluate", i + 1, len(val))
    return predictions


def fidelity(reference: list[list[np.ndarray]], converted: list[list[np.ndarray]], names: list[str]) -> list[OutputFidelity]:
    """Per output, over a set of images: SQNR in dB and cosine similarity of converted against reference.

    What a user sees of int8's cost when no task metric applies (a custom model with a plugin decoder).
    """
    found = []
    for k, name in enumerate(names):
        ref = np.concatenate([np.ravel(outs[k]) for outs in reference]).astype(np.float64)
        got = np.concatenate([np.ravel(outs[k]) for outs in converted]).astype(np.float64)
        noise = float(np.sum((got - ref) ** 2))
        signal = float(np.sum(ref**2))
        sqnr = float("inf") if noise == 0 else 10.0 * np.log10(max(signal, 1e-30) / noise)
        norms = float(np.linalg.norm(ref) * np.linalg.norm(got))
        cosine = float(np.dot(ref, got) / norms) if norms > 0 else float(np.array_equal(ref, got))
        found.append(OutputFidelity(name=name, sqnr_db=round(min(sqnr, 999.0), 2), cosine=round(cosine, 6)))
    return found


def score(val: ImageSet, predictions, classes: int) -> Metrics | None:
    """Metrics of ``predictions`` on ``val``, by the kind of set: classification, detection, semantic
    segmentation, instances or pose."""
    if isinstance(val, SemanticSet):
        return segmentation_eval.semantic_metrics(predictions, val.truth, classes)
    if isinstance(val, InstanceSet):
        return segmentation_eval.instance_metrics(predictions, val, classes)
    if isinstance(val, PoseSet):
        return pose_eval.metrics(predictions, val, classes)
    if isinstance(val, DetectionSet):
        return detection_eval.detection_metrics(predictions, val.truth, classes)
    if predictions is None:
        return None
    return metrics(val.labels, predictions, classes)


def agreement(val: ImageSet, reference, converted) -> float:
    """How often the converted model says what the reference says (see ``Accuracy.agreement``): same
    top-1 class, same pixel class (semantic), the reference's boxes found again (detection, instances,
    poses), the reference's landmarks within PCK@0.1 (landmarks)."""
    if isinstance(val, SemanticSet):
        return segmentation_eval.pixel_agreement(reference, converted)
    if isinstance(val, PoseSet) and val.landmarks:
        return pose_eval.landmark_agreement(val, reference, converted)
    if isinstance(val, (InstanceSet, PoseSet)):
        return detection_eval.agreement([r.boxes for r in reference], [c.boxes for c in converted])
    if isinstance(val, DetectionSet):
        return detection_eval.agreement(reference, converted)
    return float(np.mean(reference == converted))


def confusion_of(val: ImageSet, predictions, classes: int) -> np.ndarray | None:
    """The confusion matrix a report draws: images (classifier) or pixels (semantic segmentation); else None."""
    if isinstance(val, SemanticSet):
        return segmentation_eval.pixel_confusion(predictions, val.truth, classes)[:, :classes]
    if isinstance(val, DetectionSet) or val.labels is None or predictions is None:
        return None
    return confusion(val.labels, predictions, classes)


def confusion(truth: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (truth, predicted), 1)
    return matrix


def metrics(truth: np.ndarray, predicted: np.ndarray, classes: int) -> Metrics:
    """Top-1 and macro precision/recall/F1 (a class never predicted has precision 0)."""
    matrix = confusion(truth, predicted, classes)
    tp = np.diag(matrix).astype(np.float64)
    predicted_count = matrix.sum(axis=0)
    actual_count = matrix.sum(axis=1)
    precision = np.divide(tp, predicted_count, out=np.zeros_like(tp), where=predicted_count > 0)
    recall = np.divide(tp, actual_count, out=np.zeros_like(tp), where=actual_count > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    present = actual_count > 0  # classes absent from the validation set do not count
    return Metrics(
        top1=float(tp.sum() / max(1, len(truth))),
        macro_precision=float(precision[present].mean()),
        macro_recall=float(recall[present].mean()),
        macro_f1=float(f1[present].mean()),
    )


def _compact(count: int) -> str:
    """A count short enough for a cell: 987, 12k, 3.4M (a segmenter's matrix counts pixels)."""
    if count < 1000:
        return str(count)
    if count < 999_500:
        return f"{count / 1000:.0f}k" if count >= 10_000 else f"{count / 1000:.1f}k"
    return f"{count / 1_000_000:.1f}M"


def confusion_png(matrix: np.ndarray, class_names: list[str], *, title: str) -> bytes:
    """A readable confusion-matrix image (rows: truth, columns: prediction), drawn with OpenCV."""
    n = matrix.shape[0]
    cell = max(24, min(48, 720 // max(1, n)))
    label_w = 12 + 8 * min(16, max((len(c) for c in class_names), default=1))
    top = 56
    width, height = label_w + n * cell + 16, top + label_w + n * cell + 16
    # wide enough for the title and the legend, which a matrix of few classes would cut
    width = max(width, 16 + max(cv2.getTextSize(title[:80], cv2.FONT_HERSHEY_SIMPLEX, 0.55, 1)[0][0],
                                cv2.getTextSize("rows: true class, columns: predicted", cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)[0][0]))
    image = np.full((height, width, 3), 255, dtype=np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(image, title[:80], (8, 22), font, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(image, "rows: true class, columns: predicted", (8, 44), font, 0.4, (80, 80, 80), 1, cv2.LINE_AA)
    row_totals = np.maximum(1, matrix.sum(axis=1, keepdims=True))
    share = matrix / row_totals
    x0, y0 = label_w, top + label_w
    for r in range(n):
        for c in range(n):
            intensity = int(255 - 200 * share[r, c])
            if r != c and matrix[r, c]:
                intensity = min(intensity, 170)  # a single confusion must stay visible
            colour = (255, intensity, intensity) if r == c else (intensity, intensity, 255)
            p1 = (x0 + c * cell, y0 + r * cell)
            cv2.rectangle(image, p1, (p1[0] + cell - 1, p1[1] + cell - 1), colour, -1)
            if matrix[r, c] and cell >= 24:
                text = _compact(int(matrix[r, c]))
                ink = (255, 255, 255) if share[r, c] > 0.5 else (0, 0, 0)
                cv2.putText(image, text, (p1[0] + 3, p1[1] + cell // 2 + 4), font, 0.35, ink, 1, cv2.LINE_AA)
    for i, name in enumerate(class_names):
        short = name[:16]
        cv2.putText(image, short, (4, y0 + i * cell + cell // 2 + 4), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        # Column labels are drawn rotated: write horizontally into a strip, then rotate it.
        strip = np.full((cell, label_w - 4, 3), 255, dtype=np.uint8)
        cv2.putText(strip, short, (2, cell // 2 + 4), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        rotated = cv2.rotate(strip, cv2.ROTATE_90_COUNTERCLOCKWISE)
        image[top : top + rotated.shape[0], x0 + i * cell : x0 + i * cell + rotated.shape[1]] = rotated
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise RuntimeError("OpenCV could not encode the confusion matrix")
    return encoded.tobytes()
