"""Moving a YOLO detector's grid decode out of a full-integer model and into the bundle's decoder.

On a target where every op must be int8 (the Edge TPU), a head that decodes boxes in the graph
puts box coordinates, grid offsets and scores on one shared int8 scale and loses most of its box
precision (mAP@0.5:0.95). The Edge TPU convention is that the ops after the last op the TPU maps
run on the host CPU anyway; so the int8 model ends at the sigmoid outputs of the head's last
convolutions (each a probability in 0-1, which int8 holds well) and the decoder applies the cheap
YOLOv5 grid decode on the host::

    cx = (col + 2·sx − 0.5) / g    cy = (row + 2·sy − 0.5) / g
    w  = anchor_w · (2·sw)²        h  = anchor_h · (2·sh)²        scores pass through

The split is found from the graph (the last weighted Keras layers, each ending in a sigmoid)
and accepted only when that decode of the float body reproduces the float model's output on real
images, so the bundle computes what the float graph computes.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

import numpy as np

from edge_sdk.converters import _tf
from edge_sdk.converters.models import SourceModel, static

_WEIGHTED = ("Conv2D", "Dense", "DepthwiseConv2D", "SeparableConv2D", "Conv2DTranspose")
TOLERANCE = 1e-4  # on 0-1 coordinates and probabilities: float rounding, not a different function
MAX_BRANCHES = 4


@dataclass(frozen=True)
class HostDecode:
    """A detector whose int8 body ends at its head's sigmoids, and the decoder options that finish it."""

    source: SourceModel  # the body: image -> [1, g, g, 5 + C] sigmoids
    options: dict  # yolo decoder options: grid, anchor_w, anchor_h
    branches: tuple[str, ...]  # the head layers whose sigmoid outputs the body concatenates


def _last_weighted(model) -> list[tuple]:
    """(layer, output tensor) of the weighted layers whose outputs reach the model output through
    unweighted layers only, walking this model's own graph (its layers may be shared with another)."""
    found, seen = [], set()
    stack = list(model.outputs)
    while stack:
        tensor = stack.pop()
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        history = tensor._keras_history
        layer = history.operation
        if type(layer).__name__ in _WEIGHTED:
            found.append((layer, tensor))
            continue
        if type(layer).__name__ != "InputLayer":
            stack.extend(layer._inbound_nodes[history.node_index].input_tensors)
    return found


def _integer_ops(model, keras):
    """``model`` with nearest-neighbour UpSampling2D layers as Resizing layers, sharing every other layer.

    Keras 3 builds UpSampling2D from repeat (TFLite TILE on 5-D tensors), which the Edge TPU does
    not map; a nearest resize by the same integer factor (RESIZE_NEAREST_NEIGHBOR) computes the
    same values. ``find`` checks that it does, against the original model's outputs.
    """
    def swap(layer):
        if type(layer).__name__ == "UpSampling2D" and getattr(layer, "interpolation", "") == "nearest":
            height, width = layer.input.shape[1:3]
            if height is not None and width is not None:
                fh, fw = layer.size
                return keras.layers.Resizing(height * fh, width * fw, interpolation="nearest", name=f"{layer.name}_resize")
        return layer  # the same layer: its weights are shared, not re-initialised

    if not any(type(layer).__name__ == "UpSampling2D" for layer in model.layers):
        return model
    return keras.models.clone_model(model, clone_function=swap)


def _grid_decode(body: np.ndarray, anchor_w: float, anchor_h: float) -> np.ndarray:
    """[n, g, g, 5 + C] sigmoids -> [n, g·g, 5 + C] head rows; the same code the yolo decoder runs."""
    from edge_sdk.decoders.yolo import grid_decode

    return np.stack([grid_decode(b, anchor_w=anchor_w, anchor_h=anchor_h) for b in body])


def find(source: SourceModel, images: np.ndarray) -> HostDecode | None:
    """The host-decode split of a Keras YOLOv5-layout detector, or None when it has none.

    ``images`` are a few normalised float inputs; the decode of the float body must reproduce
    the float model's output on them within TOLERANCE.
    """
    if not source.is_keras or source.task != "detection" or source.head_layout != "v5":
        return None
    keras = _tf.tf_keras() if source.kind == "tf-keras" else _tf.keras3()
    try:
        model = _integer_ops(source.model, keras)
        last = _last_weighted(model)
    except (AttributeError, ValueError, TypeError):  # a subclassed model has no layer graph to rewrite or read
        return None
    if not 1 <= len(last) <= MAX_BRANCHES or any(
        getattr(getattr(layer, "activation", None), "__name__", "") != "sigmoid" for layer, _ in last
    ):
        return None
    outputs = [tensor for _, tensor in last]
    if any(len(o.shape) != 4 for o in outputs) or sum(int(o.shape[-1]) for o in outputs) != 5 + source.num_classes:
        return None
    expected = source.predict(images)[0].astype(np.float64)
    probe = keras.Model(model.input, outputs)
    parts = [np.asarray(p, dtype=np.float64) for p in probe(images, training=False)]
    for order in itertools.permutations(range(len(last))):
        body = np.concatenate([parts[i] for i in order], axis=-1)
        # A YOLOv5 head: w = anchor·(2s)², so the anchor is the ratio at every candidate.
        s = 2.0 * body[..., 2:4].reshape(len(images), -1, 2)
        w, h = (np.median(expected[..., k] / np.maximum(s[..., k - 2] ** 2, 1e-12)) for k in (2, 3))
        if not (np.isfinite(w) and np.isfinite(h) and w > 0 and h > 0):
            continue
        if np.max(np.abs(_grid_decode(body, w, h) - expected)) <= TOLERANCE:
            names = tuple(last[i][0].name for i in order)
            image = keras.Input(batch_shape=(1, *source.input_shape), name="image")
            branches = keras.Model(model.input, [outputs[i] for i in order])(image)
            branches = list(branches) if isinstance(branches, (list, tuple)) else [branches]
            head = keras.layers.Concatenate(name="head_sigmoids")(branches) if len(branches) > 1 else branches[0]
            body_model = keras.Model(image, head, name=f"{source.name}_body")
            grid = int(body.shape[1])
            options = {"grid": grid, "anchor_w": round(float(w), 7), "anchor_h": round(float(h), 7)}
            body_source = replace(source, model=body_model, _batch_of_one=None, output_names=("head_sigmoids",),
                                  output_shapes=(static(body_model.outputs[0].shape),))
            return HostDecode(body_source, options, names)
    return None
