"""Semantic segmentation: one output of per-pixel class scores -> a class id per source-frame pixel.

Three output forms are understood (batch of one):
    scores ``[1, H, W, C]`` (``nhwc``) or ``[1, C, H, W]`` (``nchw``): softmax probabilities or logits,
        the class is the argmax; with one channel (C == 1) the output is a foreground map,
        foreground where the sigmoid probability reaches ``threshold`` (logits: where the logit
        reaches the threshold's logit).
    class ids ``[1, H, W]``: already argmaxed inside the model (DeepLab exports, pycoral's
        ``segment`` example); ``activation`` ``argmax``.

The output grid covers the model input, so it is mapped back through the placement: each
source-frame pixel takes the class of the output cell its centre falls in. The result keeps the grid
and that mapping (:class:`~edge_sdk.results.Segmentation`); the frame-sized map is built only when
something asks for it, as the class areas and masks are exact on the grid. Under a ``crop``
placement the frame's parts the model never saw (outside the centred window) are class 0,
background, since nothing is known of them; under ``letterbox`` the pad cells are simply never
looked up. The argmax runs at the model's resolution and nothing frame-sized is built unless asked
for: a 640x480 frame costs under a tenth of a millisecond on a 64x64 output.

Options:
    ``layout`` (``nhwc`` or ``nchw``): which axis holds the classes; unset = the one whose other two
        axes have the input's aspect ratio (``nhwc`` when both do).
    ``activation`` (``softmax``, ``sigmoid``, ``logits`` or ``argmax``): what the values are; unset =
        ``argmax`` for a 3-D output, ``sigmoid`` for one channel, otherwise softmax (argmax is the
        same for softmax and logits).
    ``threshold`` (float, default 0.5): a one-channel map's foreground probability.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edge_sdk.decoders import DecodeContext, parse_options
from edge_sdk.errors import ModelError
from edge_sdk.preprocess import Placement
from edge_sdk.results import Segmentation

FOREGROUND_LABELS = ("background", "foreground")


class SegmentationOptions(BaseModel):
    """The ``segmentation`` decoder's options in a bundle manifest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    layout: Literal["nhwc", "nchw"] | None = Field(default=None, description="Class axis last (nhwc) or first (nchw).")
    activation: Literal["softmax", "sigmoid", "logits", "argmax"] | None = Field(
        default=None, description="What the output holds: probabilities, logits, or class ids (argmax)."
    )
    threshold: float = Field(default=0.5, gt=0.0, lt=1.0, description="One-channel output: foreground probability.")


def model_centres(placement: Placement, *, axis: str) -> np.ndarray:
    """Where each source-frame column (``axis='x'``) or row (``'y'``) centre lands in model-input pixels."""
    if axis == "x":
        return (np.arange(placement.source_width) + 0.5 - placement.crop_x) * placement.scale_x + placement.pad_x
    return (np.arange(placement.source_height) + 0.5 - placement.crop_y) * placement.scale_y + placement.pad_y


def _cells(centres: np.ndarray, *, cells: int, extent: int) -> tuple[np.ndarray, np.ndarray]:
    """The output cell each model-input coordinate falls in, and whether it is inside the input at all."""
    inside = (centres >= 0) & (centres < extent)
    index = np.clip(np.floor(centres * (cells / extent)).astype(np.intp), 0, cells - 1)
    return index, inside


def source_cells(grid_shape: tuple[int, int], placement: Placement, *, input_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """For each source-frame row and column, the row and column of a grid covering the model input
    (``h x w``) that it shows; -1 where the model did not see the frame."""
    width, height = input_size
    cols, inside_x = _cells(model_centres(placement, axis="x"), cells=grid_shape[1], extent=width)
    rows, inside_y = _cells(model_centres(placement, axis="y"), cells=grid_shape[0], extent=height)
    return np.where(inside_y, rows, -1), np.where(inside_x, cols, -1)


def _aspect_error(h: int, w: int, input_size: tuple[int, int]) -> float:
    width, height = input_size
    return abs(h / height - w / width)


def _scores(output: np.ndarray, options: SegmentationOptions, input_size: tuple[int, int]) -> np.ndarray:
    """The output as ``[H, W, C]`` scores, or ``[H, W]`` class ids for a 3-D output."""
    out = np.asarray(output)
    if out.ndim == 3 and out.shape[0] == 1:
        return out[0]
    if out.ndim != 4 or out.shape[0] != 1:
        raise ModelError(
            f"segmentation decoder: the output must be [1, H, W, C], [1, C, H, W] or [1, H, W], got {list(out.shape)}"
        )
    _, a, b, c = out.shape
    layout = options.layout
    if layout is None:
        layout = "nchw" if _aspect_error(b, c, input_size) < _aspect_error(a, b, input_size) else "nhwc"
    return out[0] if layout == "nhwc" else np.moveaxis(out[0], 0, -1)


def _class_grid(scores: np.ndarray, options: SegmentationOptions) -> tuple[np.ndarray, int]:
    """Class id per output cell, and how many classes the output distinguishes."""
    activation = options.activation
    if scores.ndim == 2 or activation == "argmax":
        ids = scores if scores.ndim == 2 else scores[..., 0]
        if ids.size and (not np.all(np.isfinite(ids)) or float(ids.min()) < 0):
            raise ModelError("segmentation decoder: an argmax output holds class ids, but it has negative or non-finite values")
        ids = ids.astype(np.int64)
        count = int(ids.max()) + 1 if ids.size else 1
        return ids.astype(np.uint8 if count <= 256 else np.uint16), count
    if scores.shape[-1] == 1:
        threshold = options.threshold
        if activation == "logits":
            threshold = math.log(threshold / (1.0 - threshold))
        return (scores[..., 0] >= threshold).astype(np.uint8), 2
    count = scores.shape[-1]
    return scores.argmax(axis=-1).astype(np.uint8 if count <= 256 else np.uint16), count


def decode(outputs: list[np.ndarray], context: DecodeContext) -> Segmentation:
    options = parse_options(SegmentationOptions, context, decoder="segmentation")
    if not outputs:
        raise ModelError("segmentation decoder: the model has no outputs")
    input_size = (context.preprocessing.width, context.preprocessing.height)
    scores = _scores(outputs[0], options, input_size)
    grid, count = _class_grid(scores, options)
    if scores.ndim == 3 and scores.shape[-1] == 1 and options.activation != "argmax":
        labels = tuple(context.labels) if len(context.labels) == 2 else FOREGROUND_LABELS
    else:
        labels = tuple(context.labels) or tuple(str(i) for i in range(count))
    rows, cols = source_cells(grid.shape[:2], context.placement, input_size=input_size)
    return Segmentation(grid, labels, rows=rows, cols=cols)
