"""Decoders: raw model outputs -> :class:`~edge_sdk.results.Detection` values.

A decoder is a function ``decode(outputs, context) -> list[Detection]``; a semantic-segmentation
decoder returns one :class:`~edge_sdk.results.Segmentation` instead. Instance-segmentation and
pose decoders return detections carrying a ``mask`` or ``keypoints``. Built-in ones are named in
an explicit registry and imported only when a bundle uses them; ``plugin:module:function`` names
any importable function with the same signature.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
from pydantic import BaseModel, ValidationError

from edge_sdk.errors import ConfigError
from edge_sdk.preprocess import Placement, Preprocessing
from edge_sdk.results import Detection, Segmentation


@dataclass(frozen=True)
class DecodeContext:
    """What a decoder knows besides the outputs."""

    labels: tuple[str, ...]
    placement: Placement  # where the source frame sits in the model input
    preprocessing: Preprocessing
    score_threshold: float = 0.25
    options: dict = field(default_factory=dict)  # the manifest decoder's options

    def label(self, class_id: int) -> str:
        return self.labels[class_id] if 0 <= class_id < len(self.labels) else str(class_id)


Decoder = Callable[[list[np.ndarray], DecodeContext], "list[Detection] | Segmentation"]
_Options = TypeVar("_Options", bound=BaseModel)


def parse_options(model: type[_Options], context: DecodeContext, *, decoder: str) -> _Options:
    """The manifest's decoder options validated as ``model``; ConfigError naming the option.

    Decoders call this on every frame; the options never change within a run, so each distinct
    set is validated once.
    """
    try:
        items = tuple(sorted((key, _frozen(value)) for key, value in context.options.items()))
        hash(items)
    except TypeError:  # an option value that cannot be frozen (a mapping): validate it every time
        return _parse_options.__wrapped__(model, tuple(sorted(context.options.items())), decoder)
    return _parse_options(model, items, decoder)


def _frozen(value):
    """Lists (as JSON gives ``kpt_shape`` or ``skeleton``) as tuples, so a set of options can be cached."""
    return tuple(_frozen(v) for v in value) if isinstance(value, list) else value


@functools.lru_cache(maxsize=64)
def _parse_options(model: type[_Options], items: tuple, decoder: str) -> _Options:
    try:
        return model.model_validate(dict(items))
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"][:1]) or "options"
        raise ConfigError(f"{decoder} decoder option '{where}': {error['msg']}") from exc


# name -> "module:function"
REGISTRY: dict[str, str] = {
    "classification": "edge_sdk.decoders.classification:decode",
    "ssd": "edge_sdk.decoders.ssd:decode",
    "yolo": "edge_sdk.decoders.yolo:decode",
    "segmentation": "edge_sdk.decoders.segmentation:decode",
    "yolo-seg": "edge_sdk.decoders.instances:decode",
    "yolo-pose": "edge_sdk.decoders.pose:decode",
    "landmarks": "edge_sdk.decoders.pose:decode_landmarks",
}


def get_decoder(kind: str) -> Decoder:
    """The decode function for a manifest decoder kind (a registry name or ``plugin:module:function``)."""
    if kind.startswith("plugin:"):
        _, module_name, function_name = kind.split(":", 2)
        what = f"plugin decoder {module_name}:{function_name}"
    elif kind in REGISTRY:
        module_name, _, function_name = REGISTRY[kind].partition(":")
        what = f"decoder {kind}"
    else:
        raise ConfigError(f"unknown decoder '{kind}' (known: {', '.join(sorted(REGISTRY))}, or plugin:module:function)")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{what} cannot be imported: {exc}") from exc
    if not callable(function):
        raise ConfigError(f"{what} is not callable")
    return function
