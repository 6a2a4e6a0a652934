"""Classification: top-k classes of a score vector, as box-less detections."""

from __future__ import annotations

import numpy as np

from edge_sdk.decoders import DecodeContext
from edge_sdk.results import Detection


def decode(outputs: list[np.ndarray], context: DecodeContext) -> list[Detection]:
    scores = np.asarray(outputs[0], dtype=np.float32).reshape(-1)
    top_k = int(context.options.get("top_k", 1))
    order = np.argsort(-scores)[:top_k]
    return [
        Detection(class_id=int(i), label=context.label(int(i)), score=float(scores[i]))
        for i in order
        if scores[i] >= context.score_threshold
    ]
