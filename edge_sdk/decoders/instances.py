"""Instance segmentation, Ultralytics ``-seg`` layout: YOLO v8 candidates with mask coefficients, and prototypes.

Two outputs, in either order (the 4-D one is the prototypes unless ``proto_output`` says):
    head ``[1, 4+C+M, N]``: cx, cy, w, h, C class scores, M mask coefficients per candidate;
    protos ``[1, M, Hp, Wp]`` (ONNX, PyTorch) or ``[1, Hp, Wp, M]`` (Ultralytics' TFLite exports),
        Hp x Wp covering the model input (a quarter of its size in Ultralytics models); the axis
        holding M settles the layout.

Candidates go through the ``yolo`` decoder's score filter and NMS (:func:`edge_sdk.decoders.yolo.select`).
A kept candidate's mask is sigmoid(coefficients · protos), sampled bilinearly at each source-frame
pixel's centre (the upsampling Ultralytics does, at the frame's resolution), kept inside the
candidate's box (Ultralytics crops the mask to the box too) and thresholded at ``mask_threshold``.
Only the box's pixels are computed and stored (:class:`~edge_sdk.results.Mask`), never the frame.

Options: the ``yolo`` decoder's ``iou``, ``max_detections``, ``agnostic``, ``normalized``, and
    ``num_masks`` (int, default 32): M, the coefficients per candidate (the protos' channel count).
    ``proto_output`` (int): which output holds the protos; unset = the 4-D one.
    ``proto_layout`` (``nchw`` or ``nhwc``): only needed when both axes 1 and 3 equal M.
    ``mask_threshold`` (float, default 0.5): the sigmoid probability from which a pixel is the object's.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Literal

import numpy as np
from pydantic import Field

from edge_sdk.decoders import DecodeContext, parse_options
from edge_sdk.decoders.segmentation import model_centres
from edge_sdk.decoders.yolo import NmsOptions, detections, select
from edge_sdk.errors import ModelError
from edge_sdk.results import Detection, Mask


class InstanceOptions(NmsOptions):
    """The ``yolo-seg`` decoder's options in a bundle manifest."""

    num_masks: int = Field(default=32, ge=1, description="Mask coefficients per candidate (the protos' channels).")
    proto_output: int | None = Field(default=None, ge=0, description="Which output holds the protos; unset = the 4-D one.")
    proto_layout: Literal["nchw", "nhwc"] | None = Field(default=None, description="Protos layout when the shape cannot tell.")
    mask_threshold: float = Field(default=0.5, gt=0.0, lt=1.0, description="Sigmoid probability of an object pixel.")


def _outputs(outputs: list[np.ndarray], options: InstanceOptions) -> tuple[np.ndarray, np.ndarray]:
    """``[4+C+M, N]`` head and ``[M, Hp, Wp]`` protos."""
    if len(outputs) < 2:
        raise ModelError(f"yolo-seg decoder: needs the head [1, 4+C+M, N] and the protos [1, M, Hp, Wp], got {len(outputs)} output(s)")
    which = options.proto_output
    if which is None:
        which = next((i for i, o in enumerate(outputs[:2]) if np.ndim(o) == 4), None)
        if which is None:
            raise ModelError(f"yolo-seg decoder: no 4-D protos output among shapes {[list(np.shape(o)) for o in outputs[:2]]}")
    elif which > 1:
        raise ModelError(f"yolo-seg decoder: option proto_output={which} but the head and protos are outputs 0 and 1")
    protos, head = np.asarray(outputs[which]), np.asarray(outputs[1 - which])
    m = options.num_masks
    if protos.ndim != 4 or protos.shape[0] != 1 or m not in (protos.shape[1], protos.shape[3]):
        raise ModelError(f"yolo-seg decoder: protos must be [1, {m}, Hp, Wp] or [1, Hp, Wp, {m}], got {list(protos.shape)}")
    layout = options.proto_layout or ("nchw" if protos.shape[1] == m else "nhwc")
    protos = protos[0] if layout == "nchw" else np.moveaxis(protos[0], -1, 0)
    if protos.shape[0] != m:
        raise ModelError(f"yolo-seg decoder: {layout} protos {list(np.shape(outputs[which]))} do not have {m} channels")
    if head.ndim != 3 or head.shape[0] != 1 or head.shape[1] <= 4 + m:
        raise ModelError(f"yolo-seg decoder: the head must be [1, 4+C+{m}, N] with C >= 1, got {list(head.shape)}")
    return head[0].astype(np.float32, copy=False), protos.astype(np.float32, copy=False)


def _bilinear(positions: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Neighbour indices and weight of the second, for sampling at ``positions`` (cell-centre units, edges held)."""
    p = np.clip(positions, 0.0, size - 1)
    i0 = np.floor(p).astype(np.intp)
    return i0, np.minimum(i0 + 1, size - 1), (p - i0).astype(np.float32)


def instance_mask(coefficients: np.ndarray, protos: np.ndarray, box: np.ndarray, context: DecodeContext,
                  *, threshold: float) -> Mask:
    """One candidate's mask in the source frame, over its box: ``box`` is x1, y1, x2, y2 in model-input pixels."""
    placement = context.placement
    width, height = context.preprocessing.width, context.preprocessing.height
    frame = (placement.source_width, placement.source_height)
    bx1, bx2 = np.clip(box[[0, 2]], 0, width)
    by1, by2 = np.clip(box[[1, 3]], 0, height)
    sx1, sy1 = placement.to_source(bx1, by1)
    sx2, sy2 = placement.to_source(bx2, by2)
    x0, x1 = max(0, math.floor(sx1)), min(frame[0], math.ceil(sx2))
    y0, y1 = max(0, math.floor(sy1)), min(frame[1], math.ceil(sy2))
    if x1 <= x0 or y1 <= y0:
        return Mask(0, 0, np.zeros((0, 0), dtype=bool), frame)
    mx = model_centres(placement, axis="x")[x0:x1]
    my = model_centres(placement, axis="y")[y0:y1]
    _, hp, wp = protos.shape
    # Bilinear with half-pixel centres, as torch's interpolate(align_corners=False) upsamples Ultralytics' masks.
    ix0, ix1, fx = _bilinear(mx * (wp / width) - 0.5, wp)
    iy0, iy1, fy = _bilinear(my * (hp / height) - 0.5, hp)
    c0, c1, r0, r1 = int(ix0.min()), int(ix1.max()) + 1, int(iy0.min()), int(iy1.max()) + 1
    window = protos[:, r0:r1, c0:c1]
    logits = (coefficients @ window.reshape(window.shape[0], -1)).reshape(r1 - r0, c1 - c0)
    rows = logits[iy0 - r0] * (1 - fy)[:, None] + logits[iy1 - r0] * fy[:, None]
    sampled = rows[:, ix0 - c0] * (1 - fx) + rows[:, ix1 - c0] * fx
    inside = ((my >= by1) & (my < by2))[:, None] & ((mx >= bx1) & (mx < bx2))[None, :]
    return Mask(x0, y0, (sampled > math.log(threshold / (1 - threshold))) & inside, frame)


def decode(outputs: list[np.ndarray], context: DecodeContext) -> list[Detection]:
    options = parse_options(InstanceOptions, context, decoder="yolo-seg")
    head, protos = _outputs(outputs, options)
    classes = head.shape[0] - 4 - options.num_masks
    selected = select(head[:4].T, head[4 : 4 + classes].T, options, context)
    coefficients = head[4 + classes :, selected.index].T
    return [
        replace(d, mask=instance_mask(coefficients[k], protos, selected.xyxy[k], context, threshold=options.mask_threshold))
        for k, d in enumerate(detections(selected, context))
    ]
