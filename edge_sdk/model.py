"""A bundle's engine with the preprocessing, decoding and filters that belong to it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from edge_sdk.bundle import Bundle
from edge_sdk.decoders import get_decoder
from edge_sdk.geometry import inside
from edge_sdk.preprocess import Normalization, Placement, Preprocessing, fit, normalize, quantize
from edge_sdk.results import Detection


class InputAdapter:
    """Frame -> the exact tensor the engine takes, built once per engine.

    When the model's input quantization undoes the [0, 1] scaling (scale 1/255), pixels go into
    the model as they are, shifted by the zero point: no float copy of the frame is ever made.
    """

    def __init__(self, spec: Preprocessing, input_spec: dict) -> None:
        self.spec = spec
        self.dtype = np.dtype(input_spec["dtype"])
        self.quant = input_spec["quantization"] if self.dtype != np.float32 else None
        self.direct = (
            self.quant is not None
            and spec.normalization is Normalization.UNIT
            and spec.layout == "NHWC"
            and abs(self.quant[0] * 255.0 - 1.0) < 1e-4
        )

    def __call__(self, frame: np.ndarray) -> tuple[np.ndarray, Placement]:
        image, placement = fit(frame, self.spec)
        if image.ndim == 2:
            image = image[:, :, None]
        if self.direct:
            info = np.iinfo(self.dtype)
            shifted = image.astype(np.int16) + int(self.quant[1])
            return np.clip(shifted, info.min, info.max).astype(self.dtype)[None], placement
        x = normalize(image, self.spec)
        if self.quant is not None:
            x = quantize(x, scale=self.quant[0], zero_point=self.quant[1], dtype=self.dtype)
        return x, placement


class Filters(Protocol):
    """What a camera's settings say about which detections to report."""

    threshold: float
    labels: list[str] | None
    polygons: list[list[tuple[float, float]]] | None  # the zones that filter (a list of polygons without names)
    min_area: float


def keep(detection: Detection, config: Filters) -> bool:
    """A camera's filters: score, label allow-list, zones and minimum area."""
    if detection.score < config.threshold:
        return False
    if config.labels is not None and detection.label not in config.labels:
        return False
    if detection.box is not None:
        if detection.box.area < config.min_area:
            return False
        if config.polygons and not any(inside(detection.box.center, zone) for zone in config.polygons):
            return False
    return True


@dataclass(frozen=True)
class Model:
    """A bundle's engine with the preprocessing and decoding that belong to it; swapped as one."""

    bundle: Bundle
    engine: object
    adapter: InputAdapter
    outputs: list
    decode: Callable
    labels: tuple[str, ...]

    @classmethod
    def build(cls, bundle: Bundle, engine) -> Model:
        manifest = bundle.manifest
        return cls(
            bundle=bundle, engine=engine, adapter=InputAdapter(manifest.preprocessing, engine.input_specs()[0]),
            outputs=engine.output_specs(), decode=get_decoder(manifest.decoder.kind), labels=tuple(bundle.labels()),
        )
