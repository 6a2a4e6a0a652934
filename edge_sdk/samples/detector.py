"""The small object detector edge-sdk ships: architecture, training targets and loss.

The network ends in a standard YOLO head, ``[1, N, 5 + C]`` rows of cx, cy, w, h (0-1),
objectness and per-class probabilities, the layout the runtime's ``yolo`` decoder reads from
third-party exports. The grid decoding is inside the graph, built from stock Keras layers only
(a per-position affine map is a ``Normalization`` layer with fixed mean and variance), so the
saved ``.keras`` file loads anywhere without custom code and converts to TFLite and OpenVINO.

Boxes follow YOLOv5's parametrisation: centre = cell + 2·sigmoid − 0.5, size = (2·sigmoid)² ·
anchor; each object is assigned to its own cell and the two neighbouring cells nearest its centre.

TensorFlow is imported (through ``edge_sdk.converters._tf``) only when a model or loss is built;
the trained weights ship in ``edge_sdk.converters.assets`` and ``examples/train_detector.py``
trains them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edge_sdk.samples.shapes import Box

INPUT_SIZE = 160
STRIDE = 8
ANCHOR = 0.2  # box side (as a share of the image) at sigmoid 0.5; sizes reach 4x this
DECODER_OPTIONS = {"layout": "v5", "normalized": True}  # what the bundle's yolo decoder is told


def grid(size: int = INPUT_SIZE) -> int:
    return size // STRIDE


def build(num_classes: int, *, size: int = INPUT_SIZE, seed: int = 0):
    """An untrained detector (about 170k parameters) for ``size`` x ``size`` RGB images in [0, 1]."""
    from edge_sdk.converters import _tf

    keras = _tf.keras3()
    L = keras.layers
    keras.utils.set_random_seed(seed)
    g = grid(size)

    def conv(x, filters, stride=1, kernel=3):
        x = L.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False)(x)
        x = L.BatchNormalization()(x)
        return L.ReLU(max_value=6.0)(x)

    image = keras.Input((size, size, 3), name="image")
    x = conv(image, 16, 2)        # /2
    x = conv(x, 32, 2)            # /4
    x = conv(x, 32)
    x = conv(x, 64, 2)            # /8
    fine = conv(x, 64)
    x = conv(fine, 96, 2)         # /16: wider context for the larger shapes
    x = conv(x, 96)
    x = L.UpSampling2D(2)(x)
    x = L.Concatenate()([fine, x])
    x = conv(x, 64, kernel=1)
    x = conv(x, 64)
    xy = L.Conv2D(2, 1, activation="sigmoid", name="xy")(x)
    wh = L.Conv2D(2, 1, activation="sigmoid", name="wh")(x)
    wh = L.Multiply(name="wh_squared")([wh, wh])
    conf = L.Conv2D(1 + num_classes, 1, activation="sigmoid", name="conf")(x)
    head = L.Concatenate(name="raw_head")([xy, wh, conf])
    mean, variance = _decode_affine(g, num_classes)
    decoded = L.Normalization(axis=(1, 2, 3), mean=mean, variance=variance, name="decode")(head)
    out = L.Reshape((g * g, 5 + num_classes), name="detections")(decoded)
    return keras.Model(image, out, name="shapes_detector")


def _decode_affine(g: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance that make ``(x - mean) / sqrt(variance)`` the YOLO decoding of sigmoids.

    cx = (col + 2s - 0.5) / g is ``a·s + b`` with a = 2/g, b = (col - 0.5)/g; w = 4·ANCHOR·s² is
    a·(s²) with a = 4·ANCHOR; the scores pass through (a = 1, b = 0).
    """
    channels = 5 + num_classes
    scale = np.ones((g, g, channels), dtype=np.float64)
    offset = np.zeros((g, g, channels), dtype=np.float64)
    rows, cols = np.meshgrid(np.arange(g), np.arange(g), indexing="ij")
    scale[:, :, 0:2] = 2.0 / g
    offset[:, :, 0] = (cols - 0.5) / g
    offset[:, :, 1] = (rows - 0.5) / g
    scale[:, :, 2:4] = 4.0 * ANCHOR
    variance = 1.0 / scale**2
    mean = -offset / scale
    return mean.astype(np.float32), variance.astype(np.float32)


def targets(boxes: list[Box], *, num_classes: int, width: int, height: int, size: int = INPUT_SIZE) -> np.ndarray:
    """The training target of one image: ``[g*g, 5 + C]`` with objectness 1 where an object is assigned."""
    g = grid(size)
    target = np.zeros((g, g, 5 + num_classes), dtype=np.float32)
    area = np.full((g, g), np.inf)
    for box in boxes:
        cx, cy = (box.x1 + box.x2) / 2 / width, (box.y1 + box.y2) / 2 / height
        w, h = (box.x2 - box.x1) / width, (box.y2 - box.y1) / height
        col, row = min(g - 1, int(cx * g)), min(g - 1, int(cy * g))
        fx, fy = cx * g - col, cy * g - row
        cells = [(row, col), (row, col + (1 if fx > 0.5 else -1)), (row + (1 if fy > 0.5 else -1), col)]
        for r, c in cells:
            if 0 <= r < g and 0 <= c < g and w * h < area[r, c]:  # the smaller object keeps a shared cell
                area[r, c] = w * h
                target[r, c, :5] = (cx, cy, w, h, 1.0)
                target[r, c, 5:] = 0.0
                target[r, c, 5 + box.class_id] = 1.0
    return target.reshape(g * g, 5 + num_classes)


def loss_function(num_classes: int) -> Callable:
    """Objectness BCE everywhere; (1 - IoU) + L1 on boxes and class BCE where an object is assigned."""
    from edge_sdk.converters import _tf

    ops = _tf.keras3().ops

    def bce(truth, prob):
        prob = ops.clip(prob, 1e-6, 1 - 1e-6)
        return -(truth * ops.log(prob) + (1 - truth) * ops.log(1 - prob))

    def loss(y_true, y_pred):
        positive = y_true[..., 4]
        count = ops.maximum(ops.sum(positive), 1.0)
        p_xy, p_wh = y_pred[..., 0:2], y_pred[..., 2:4]
        t_xy, t_wh = y_true[..., 0:2], y_true[..., 2:4]
        p1, p2 = p_xy - p_wh / 2, p_xy + p_wh / 2
        t1, t2 = t_xy - t_wh / 2, t_xy + t_wh / 2
        inter = ops.prod(ops.maximum(ops.minimum(p2, t2) - ops.maximum(p1, t1), 0.0), axis=-1)
        union = ops.prod(p_wh, axis=-1) + ops.prod(t_wh, axis=-1) - inter
        iou = inter / ops.maximum(union, 1e-9)
        box = ops.sum(positive * ((1 - iou) + 4.0 * ops.sum(ops.abs(y_pred[..., :4] - y_true[..., :4]), axis=-1))) / count
        # Objectness learns the IoU it achieves (as YOLOv5 does), so scores rank boxes by quality.
        obj_truth = positive * ops.stop_gradient(ops.clip(iou, 0.0, 1.0))
        objectness = ops.mean(ops.sum(bce(obj_truth, y_pred[..., 4]), axis=-1)) / 20.0
        classes = ops.sum(positive[..., None] * bce(y_true[..., 5:], y_pred[..., 5:])) / count
        return 5.0 * box + objectness + classes

    return loss
