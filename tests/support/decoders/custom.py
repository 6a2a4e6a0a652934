"""Plugin decoders the tests name with ``--decoder plugin:support.decoders.custom:...``, as a user's own module would be."""

from __future__ import annotations

import numpy as np

from edge_sdk.decoders import DecodeContext
from edge_sdk.results import BBox, Detection


def objectness_peak(outputs: list[np.ndarray], context: DecodeContext) -> list[Detection]:
    """The custom two-output detector (features, objectness map): one box around the strongest cell."""
    objectness = np.asarray(outputs[1], dtype=np.float64).reshape(outputs[1].shape[-2:])
    row, col = np.unravel_index(int(np.argmax(objectness)), objectness.shape)
    score = float(objectness[row, col])
    if score < context.score_threshold:
        return []
    cell_h = context.preprocessing.height / objectness.shape[0]
    cell_w = context.preprocessing.width / objectness.shape[1]
    box = BBox.from_model_pixels(col * cell_w, row * cell_h, (col + 1) * cell_w, (row + 1) * cell_h, context.placement)
    return [Detection(class_id=0, label=context.label(0), score=score, box=box)]


def anchors_and_scores(outputs: list[np.ndarray], context: DecodeContext) -> list[Detection]:
    """A MediaPipe-style two-output model: regressors ``[1, N, 4+k]`` (a box x1, y1, x2, y2 in 0-1, then keypoints)
    and logits ``[1, N, 1]``."""
    regressors, logits = sorted(outputs, key=lambda o: -o.shape[-1])  # a .tflite lists them in either order
    boxes = np.asarray(regressors, dtype=np.float64)[0, :, :4]
    scores = 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)[0, :, 0]))
    keep = np.argsort(-scores)[:5]
    size = np.array([context.preprocessing.width, context.preprocessing.height] * 2, dtype=np.float64)
    return [
        Detection(class_id=0, label=context.label(0), score=float(scores[i]),
                  box=BBox.from_model_pixels(*(np.sort(boxes[i].reshape(2, 2), axis=0).ravel() * size), context.placement))
        for i in keep if scores[i] >= context.score_threshold
    ]
