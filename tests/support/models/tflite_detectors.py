"""Tiny real TFLite detector models for the decoder tests, built with TensorFlow in the test process."""

from __future__ import annotations

import numpy as np

# The attribute string TF Object Detection API's TF2 exporter gives the fused op
# (research/object_detection/export_tflite_graph_lib_tf2.py, SSDModule.postprocess_implements_signature);
# the MLIR converter legalises a tf.function carrying it into TFLite_Detection_PostProcess.
POSTPROCESS_SIGNATURE = " ".join(
    [
        'name: "TFLite_Detection_PostProcess"',
        'attr { key: "max_detections" value { i: %(max_detections)d } }',
        'attr { key: "max_classes_per_detection" value { i: 1 } }',
        'attr { key: "use_regular_nms" value { b: false } }',
        'attr { key: "nms_score_threshold" value { f: %(score_threshold)f } }',
        'attr { key: "nms_iou_threshold" value { f: %(iou_threshold)f } }',
        'attr { key: "y_scale" value { f: %(y_scale)f } }',
        'attr { key: "x_scale" value { f: %(x_scale)f } }',
        'attr { key: "h_scale" value { f: %(h_scale)f } }',
        'attr { key: "w_scale" value { f: %(w_scale)f } }',
        'attr { key: "num_classes" value { i: %(num_classes)d } }',
    ]
)

SCALES = {"y_scale": 10.0, "x_scale": 10.0, "h_scale": 5.0, "w_scale": 5.0}


def _convert(module, function) -> bytes:
    from edge_sdk.converters import _tf

    tf = _tf.tensorflow()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()], module)
    converter.allow_custom_ops = True  # harmless for builtins; older converters filed the op as custom
    with _tf.quiet_native():
        return converter.convert()


def ssd_postprocess_model(
    *,
    encodings: np.ndarray,
    class_scores: np.ndarray,
    anchors: np.ndarray,
    width: int,
    height: int,
    max_detections: int = 10,
    score_threshold: float = 0.05,
    iou_threshold: float = 0.6,
    exporter_order: bool = True,
) -> bytes:
    """A .tflite model that ends in TFLite_Detection_PostProcess, fed planted SSD head values.

    ``encodings`` ``[N, 4]`` (ty, tx, th, tw), ``class_scores`` ``[N, 1+C]`` (background first) and
    ``anchors`` ``[N, 4]`` (ycenter, xcenter, h, w, normalised) as TF's exporters lay them out;
    decoded with :data:`SCALES`. The image input only feeds a zero so the graph keeps its input.
    ``exporter_order`` returns the outputs reversed as the TF2 exporter does, which gives the order
    TF2 and Model Maker models ship with (scores, boxes, count, classes); without it the converter
    emits yet another order (classes, count, boxes, scores).
    """
    from edge_sdk.converters import _tf

    tf = _tf.tensorflow()
    num_classes = class_scores.shape[-1] - 1
    signature = POSTPROCESS_SIGNATURE % dict(
        SCALES,
        max_detections=max_detections,
        score_threshold=score_threshold,
        iou_threshold=iou_threshold,
        num_classes=num_classes,
    )
    box_encodings = np.asarray(encodings, np.float32)[None]
    class_predictions = np.asarray(class_scores, np.float32)[None]
    anchor_values = np.asarray(anchors, np.float32)

    class Detector(tf.Module):
        @tf.function(experimental_implements=signature)
        def postprocess(self, box_encodings, class_predictions, anchors):
            zero = tf.constant(0.0)
            return zero, zero, zero, zero

        @tf.function(input_signature=[tf.TensorSpec([1, height, width, 3], tf.float32)])
        def infer(self, image):
            zero = tf.reduce_mean(image) * 0.0
            outputs = self.postprocess(
                tf.constant(box_encodings) + zero, tf.constant(class_predictions) + zero, tf.constant(anchor_values)
            )
            return outputs[::-1] if exporter_order else outputs

    module = Detector()
    return _convert(module, module.infer)


def constant_head_model(head: np.ndarray, *, width: int, height: int) -> bytes:
    """A .tflite model whose one output is ``head`` whatever image comes in."""
    from edge_sdk.converters import _tf

    tf = _tf.tensorflow()
    values = np.asarray(head, np.float32)

    class Head(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, height, width, 3], tf.float32)])
        def infer(self, image):
            return tf.constant(values) + tf.reduce_mean(image) * 0.0

    module = Head()
    return _convert(module, module.infer)
