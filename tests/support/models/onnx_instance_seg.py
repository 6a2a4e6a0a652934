"""A real Ultralytics-layout instance segmentation ONNX, written with onnx.helper from two real networks.

No torch here, so no YOLOv8-seg export: the graph joins the shipped shapes detector (boxes and class
scores, exactly as ``onnx_detectors.yolov8_onnx_of_shipped_detector``) and a trained shapes segmenter
(``edge_sdk.samples.segmenter``) into the two outputs a YOLOv8/YOLO11 ``-seg`` export has:

* ``output0`` ``[1, 4+C+32, N]`` = ``[1, 40, 400]``: cx, cy, w, h (input pixels), C class scores, 32
  mask coefficients per candidate;
* ``output1`` ``[1, 32, H/4, W/4]`` = ``[1, 32, 40, 40]``: mask prototypes.

Prototypes: channels 0..C-1 are the segmenter's probability of each shape class (it runs on the
input pooled to half size, the scale it was trained at, and its 1/4 map is upsampled to H/4),
channel C its probability of any shape (1 - background), channels C+1..30 are zero and channel 31
is one. Coefficients: ``GAIN/2`` x a sharp softmax of the candidate's class scores on the class
channels, ``GAIN/2`` on the any-shape channel, ``-GAIN/2`` on channel 31. So a candidate's mask
``sigmoid(coefficients · prototypes)``, cropped to its box, is where the mean of "this class" and
"some shape" is over one half: a real instance mask, made the way a YOLO-seg head makes it, that a
pixel the segmenter is unsure of the class of (but sure is a shape) still joins.

NCHW input ``images`` ``[1, 3, 160, 160]`` RGB in 0-1, opset 13, Ultralytics metadata with ``task: segment``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_sdk.samples import segmenter
from support.models import onnx_detectors as od

NUM_MASKS = 32
GAIN = 20.0  # mask logit = GAIN·((p_class + p_shape)/2 - 0.5): the 0.5 mask threshold falls at a mean of 0.5
SHARPNESS = 30.0  # class scores -> coefficient weights: a near one-hot on the candidate's best class
PROTO_SIDE = od.SIZE // 4  # 40
NUM_CANDIDATES = (od.SIZE // od.STRIDE) ** 2  # 400


def _segmenter_probs(g, model) -> str:
    """``[1, 1+C, 20, 20]`` class probabilities of the segmenter run on the input pooled to 80 x 80."""
    zero, six = g.const(0.0, "zero"), g.const(6.0, "six")
    side = od.SIZE // 2
    x = g.op("AveragePool", [od.INPUT_NAME], "half", kernel_shape=[2, 2], strides=[2, 2])

    def block(x: str, name: str, stride: int) -> str:
        nonlocal side
        weight, bias = od._folded(model.get_layer(name), model.get_layer(name + "_bn"))
        y = od._conv(g, x, weight, bias, stride=stride, size=side)
        side = -(-side // stride)
        return g.op("Clip", [y, zero, six], name)

    skip = skip_side = None
    for name, _, stride in segmenter.ENCODER:
        x = block(x, name, stride)
        if name == segmenter.SKIP:
            skip, skip_side = x, side
    x = g.op("Resize", [x, "", g.const([1, 1, 2, 2], "scales")], "up", mode="linear",
             coordinate_transformation_mode="half_pixel")  # Keras' bilinear UpSampling2D
    side = skip_side
    x = g.op("Concat", [skip, x], "merge", axis=1)
    x = block(x, segmenter.DECODE[0], segmenter.DECODE[2])
    kernel, bias = model.get_layer("logits").get_weights()
    logits = g.op("Conv", [x, g.const(np.transpose(kernel, (3, 2, 0, 1)), "logits_w"), g.const(bias, "logits_b")],
                  "logits", kernel_shape=[1, 1])
    return g.op("Softmax", [logits], "probs", axis=1)


def _prototypes(g, probs: str) -> str:
    """``[1, 32, 40, 40]``: the shape classes' probabilities at H/4, any shape's, zeros, and a channel of ones."""
    up = g.op("Resize", [probs, "", g.const([1, 1, 2, 2], "scales")], "probs_up", mode="linear",
              coordinate_transformation_mode="half_pixel")
    background, shapes_only = g.op("Split", [up, g.const([1, od.NUM_CLASSES], "split", np.int64)], "probs_split",
                                   outputs=2, axis=1)
    any_shape = g.op("Sub", [g.const(1.0, "one"), background], "any_shape")
    zeros = g.const(np.zeros((1, NUM_MASKS - od.NUM_CLASSES - 2, PROTO_SIDE, PROTO_SIDE)), "proto_zeros")
    ones = g.const(np.ones((1, 1, PROTO_SIDE, PROTO_SIDE)), "proto_ones")
    return g.op("Concat", [shapes_only, any_shape, zeros, ones], "protos", axis=1)


def _coefficients(g, scores: str) -> str:
    """``[1, 32, N]`` from the ``[1, C, N]`` class scores: GAIN/2 x softmax(SHARPNESS x scores), GAIN/2, zeros, -GAIN/2."""
    weights = g.op("Softmax", [g.op("Mul", [scores, g.const(SHARPNESS, "sharp")])], "class_weights", axis=1)
    scaled = g.op("Mul", [weights, g.const(GAIN / 2, "gain")], "coeff_classes")
    rest = np.zeros((1, NUM_MASKS - od.NUM_CLASSES, NUM_CANDIDATES))
    rest[0, 0], rest[0, -1] = GAIN / 2, -GAIN / 2
    return g.op("Concat", [scaled, g.const(rest, "coeff_rest")], "coefficients", axis=1)


def yolov8_seg_onnx(path: str | Path, segmenter_model) -> Path:
    """Write the instance segmentation ONNX of the shipped detector and ``segmenter_model`` (a trained
    ``edge_sdk.samples.segmenter`` Keras model) to ``path``."""
    g = od._Graph()
    head = od._decoded_head(g, size=od.SIZE)
    boxes = od._flat(g, g.op("Concat", [head.xy, head.wh], "xywh", axis=1), 4)
    scores = od._flat(g, od._class_scores(g, head), od.NUM_CLASSES)
    rows = g.op("Concat", [boxes, scores, _coefficients(g, scores)], "seg_rows", axis=1)
    protos = _prototypes(g, _segmenter_probs(g, segmenter_model))
    return od._save(g, path, [(rows, "output0", [1, 4 + od.NUM_CLASSES + NUM_MASKS, NUM_CANDIDATES]),
                              (protos, "output1", [1, NUM_MASKS, PROTO_SIDE, PROTO_SIDE])],
                    name="shapes_yolov8_seg", metadata={"task": "segment"})


def reference_outputs(batch_nhwc: np.ndarray, segmenter_model) -> tuple[np.ndarray, np.ndarray]:
    """What the ONNX file must output for an NHWC batch, from the Keras models and numpy:
    the detector's v8 rows and the segmenter's shape-class and any-shape probabilities at H/4."""
    import cv2

    from edge_sdk.converters import _tf

    keras = _tf.keras3()
    batch = np.asarray(batch_nhwc, np.float32)
    v8 = od.keras_head_as_v8(od.shipped_keras_model()(batch, training=False))
    open_model = segmenter.build(size=None)
    open_model.set_weights(segmenter_model.get_weights())
    probs = keras.Model(open_model.input, open_model.get_layer("probs").output)
    half = batch.reshape(len(batch), od.SIZE // 2, 2, od.SIZE // 2, 2, 3).mean(axis=(2, 4))
    maps = np.asarray(probs(half, training=False))  # [B, 20, 20, 1+C]
    up = np.stack([cv2.resize(m, (PROTO_SIDE, PROTO_SIDE), interpolation=cv2.INTER_LINEAR) for m in maps])
    protos = np.concatenate([up[..., 1:], 1.0 - up[..., :1]], axis=-1)
    return v8, np.transpose(protos, (0, 3, 1, 2))
