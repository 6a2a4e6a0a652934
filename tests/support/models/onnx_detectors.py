"""Real ONNX detectors for tests: the shipped shapes detector rewritten op by op, in every head layout users bring.

No exporter is installed here (and no torch), so each graph is written with onnx.helper from the
weights of ``converters/assets/shapes_detector.keras``: the same trunk (BatchNorm folded into the
convolutions, as Ultralytics' ``model.fuse()`` does before exporting) and the same head convolutions,
wired to a different output each time. So every file really detects the shapes, and a test can
score it on rendered scenes.

Every graph looks like a PyTorch / Ultralytics export: NCHW float32 input named ``images``
(``[1, 3, 160, 160]``, RGB in 0-1), opset 13. The Keras model pads its stride-2 convolutions the
TensorFlow way (all the extra row and column at the bottom and right), so the ONNX convolutions
get explicit asymmetric pads (``SAME_UPPER`` when the size is dynamic).

Box decoding (YOLOv5's, as in ``edge_sdk/samples/detector.py``), in input pixels with ``stride`` 8:
``cx = (col + 2·sigmoid - 0.5)·stride``, ``w = 4·anchor·sigmoid²`` with the anchor 32 px (0.2 of
the 160-pixel input). The score of a class is objectness × class probability wherever a layout has
no objectness column.

Layouts (N = 400 candidates at 160 x 160, C = 4 classes, K = ``max_detections``); boxes in input
pixels unless said otherwise:

* ``yolov8_onnx_of_shipped_detector``: ``output0`` [1, 4+C, N], cx, cy, w, h, class scores.
* ``yolov8_normalized_onnx``: ``output0`` [1, 4+C, N], cx, cy, w, h in 0-1, class scores.
* ``yolov5_onnx``: ``output0`` [1, N, 5+C], cx, cy, w, h (pixels or 0-1), objectness, class probabilities.
* ``end_to_end_onnx``: ``output0`` [1, K, 6], x1, y1, x2, y2, score, class (NMS inside, zero rows after the last).
* ``split_head_onnx``: ``boxes`` [1, N, 4] x1, y1, x2, y2 and ``scores`` [1, N, C].
* ``classifier_onnx``: ``output0`` [1, C], a presence score per class.
* ``custom_two_output_onnx``: ``features`` [1, 64, 20, 20] and ``objectness`` [1, 1, 20, 20], no head.

Each file carries Ultralytics-style metadata properties (``names`` as a dict literal, ``imgsz``,
``stride``, ``task``, ``batch``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_sdk.samples import detector, shapes

INPUT_NAME = "images"
OPSET = 13
IR_VERSION = 8  # what torch.onnx writes for opset 13..17; every runtime here reads it
SIZE = detector.INPUT_SIZE  # 160
STRIDE = detector.STRIDE  # 8
ANCHOR_PX = detector.ANCHOR * SIZE  # 32 px: the anchor is a share of the input in the Keras model
CLASSES = shapes.CLASSES
NUM_CLASSES = len(CLASSES)


# -- the shipped Keras model ------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def shipped_keras_model():
    """The shipped detector as Keras loads it (cached: loading takes a second or two)."""
    from edge_sdk.converters import _tf
    from edge_sdk.converters.assets import DETECTOR

    return _tf.keras3().saving.load_model(DETECTOR, compile=False)


def keras_head_as_v8(head: np.ndarray, *, size: int = SIZE) -> np.ndarray:
    """The Keras model's ``[B, N, 5+C]`` (0-1 boxes, objectness) as a v8 head ``[B, 4+C, N]`` in pixels.

    The reference the YOLOv8-layout ONNX file must reproduce.
    """
    head = np.asarray(head, np.float64)
    boxes = head[..., :4] * size
    scores = head[..., 4:5] * head[..., 5:]
    return np.concatenate([boxes, scores], axis=-1).transpose(0, 2, 1).astype(np.float32)


def to_nchw(batch: np.ndarray) -> np.ndarray:
    """An NHWC float batch (what the Keras model takes) as the NCHW batch the ONNX files take."""
    return np.ascontiguousarray(np.transpose(np.asarray(batch, np.float32), (0, 3, 1, 2)))


ENGINES = ("onnxruntime", "openvino")


def run_onnx(path: str | Path, batch_nchw: np.ndarray, *, engine: str = "onnxruntime") -> list[np.ndarray]:
    """All outputs of an ONNX file for one NCHW batch, in graph order, on the CPU.

    ``engine`` is onnxruntime (the reference ONNX runtime) or OpenVINO (what the converter reads
    ONNX files with), the latter at f32 precision so numbers compare on any host.
    """
    batch = np.asarray(batch_nchw, np.float32)
    key = (str(path), Path(path).stat().st_mtime_ns)  # a file rewritten in place is loaded afresh
    if engine == "onnxruntime":
        return _ort_session(key).run(None, {INPUT_NAME: batch})
    if engine == "openvino":
        compiled = _openvino_model(key)
        result = compiled(batch)
        return [np.asarray(result[compiled.output(i)]) for i in range(len(compiled.outputs))]
    raise ValueError(f"unknown engine {engine!r} (known: {', '.join(ENGINES)})")


@functools.lru_cache(maxsize=16)
def _ort_session(key: tuple[str, int]):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(key[0], options, providers=["CPUExecutionProvider"])


@functools.lru_cache(maxsize=16)
def _openvino_model(key: tuple[str, int]):
    import openvino as ov

    return ov.Core().compile_model(key[0], "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


# -- graph building ---------------------------------------------------------------------------------

@dataclass
class _Graph:
    """Nodes and initialisers of one graph under construction, with unique tensor names."""

    nodes: list = field(default_factory=list)
    inits: list = field(default_factory=list)
    count: int = 0

    def name(self, stem: str) -> str:
        self.count += 1
        return f"{stem}_{self.count}"

    def const(self, value, stem: str = "const", dtype=np.float32) -> str:
        from onnx import numpy_helper

        name = self.name(stem)
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], stem: str | None = None, *, outputs: int = 1, **attrs):
        from onnx import helper

        names = [self.name(stem or op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, **attrs))
        return names[0] if outputs == 1 else names


def _folded(conv_layer, bn_layer) -> tuple[np.ndarray, np.ndarray]:
    """OIHW weights and bias of a bias-free Keras convolution followed by its BatchNormalization."""
    (kernel,) = conv_layer.get_weights()
    gamma, beta, mean, variance = (np.asarray(w, np.float64) for w in bn_layer.get_weights())
    scale = gamma / np.sqrt(variance + bn_layer.epsilon)
    weight = np.transpose(np.asarray(kernel, np.float64), (3, 2, 0, 1)) * scale[:, None, None, None]
    return weight.astype(np.float32), (beta - mean * scale).astype(np.float32)


def _conv(g: _Graph, x: str, weight: np.ndarray, bias: np.ndarray, *, stride: int, size: int | None) -> str:
    """A Keras ``padding="same"`` convolution; ``size`` is the input side when it is fixed."""
    kernel = weight.shape[2]
    attrs: dict = {"kernel_shape": [kernel, kernel], "strides": [stride, stride]}
    if kernel > 1:
        if size is None:
            attrs["auto_pad"] = "SAME_UPPER"  # TensorFlow's "same": the odd pixel of padding goes at the end
        else:
            out = -(-size // stride)
            total = max((out - 1) * stride + kernel - size, 0)
            attrs["pads"] = [total // 2, total // 2, total - total // 2, total - total // 2]
    return g.op("Conv", [x, g.const(weight, "w"), g.const(bias, "b")], "conv", **attrs)


def _trunk(g: _Graph, model, *, size: int | None) -> str:
    """Everything up to the head convolutions: ``[B, 64, H/8, W/8]`` features from ``images``."""
    layers = {layer.name: layer for layer in model.layers}
    zero, six = g.const(0.0, "zero"), g.const(6.0, "six")
    side = size

    def block(x: str, index: int) -> str:
        nonlocal side
        suffix = "" if index == 0 else f"_{index}"
        conv = layers[f"conv2d{suffix}"]
        stride = conv.strides[0]
        weight, bias = _folded(conv, layers[f"batch_normalization{suffix}"])
        y = _conv(g, x, weight, bias, stride=stride, size=side)
        if side is not None:
            side = -(-side // stride)
        return g.op("Clip", [y, zero, six], "relu6")

    x = INPUT_NAME
    for i in range(4):
        x = block(x, i)
    fine, fine_side = block(x, 4), side
    x = block(block(fine, 5), 6)
    x = g.op("Resize", [x, "", g.const([1, 1, 2, 2], "scales")], "upsample", mode="nearest",
             coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    side = fine_side
    x = g.op("Concat", [fine, x], "concat", axis=1)
    return block(block(x, 7), 8)


def _head_conv(g: _Graph, model, x: str, name: str) -> str:
    kernel, bias = model.get_layer(name).get_weights()
    weight = np.transpose(kernel, (3, 2, 0, 1)).astype(np.float32)
    return g.op("Sigmoid", [g.op("Conv", [x, g.const(weight, name + "_w"), g.const(bias.astype(np.float32), name + "_b")],
                                 name, kernel_shape=[1, 1])], name + "_sigmoid")


def _grid_offsets(g: _Graph, features: str, *, side: int | None) -> str:
    """``[1, 2, h, w]`` cell column and row minus 0.5 (fixed constants, or computed from the feature shape)."""
    if side is not None:
        rows, cols = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
        return g.const(np.stack([cols, rows])[None] - 0.5, "grid")
    shape = g.op("Shape", [features], "shape")
    h = g.op("Gather", [shape, g.const(2, "i", np.int64)], "h", axis=0)
    w = g.op("Gather", [shape, g.const(3, "i", np.int64)], "w", axis=0)
    one = g.const(1, "one", np.int64)
    zero = g.const(0, "zero", np.int64)
    ys = g.op("Cast", [g.op("Range", [zero, h, one], "ys")], "ysf", to=1)  # [h]
    xs = g.op("Cast", [g.op("Range", [zero, w, one], "xs")], "xsf", to=1)  # [w]
    half = g.const(0.5, "half")
    hw = g.op("Concat", [g.op("Unsqueeze", [h, g.const([0], "ax", np.int64)]),
                         g.op("Unsqueeze", [w, g.const([0], "ax", np.int64)])], "hw", axis=0)
    col = g.op("Expand", [g.op("Unsqueeze", [xs, g.const([0], "ax", np.int64)]), hw], "col")  # [h, w]
    row = g.op("Expand", [g.op("Unsqueeze", [ys, g.const([1], "ax", np.int64)]), hw], "row")  # [h, w]
    stacked = g.op("Concat", [g.op("Unsqueeze", [col, g.const([0], "ax", np.int64)]),
                              g.op("Unsqueeze", [row, g.const([0], "ax", np.int64)])], "colrow", axis=0)
    return g.op("Unsqueeze", [g.op("Sub", [stacked, half], "grid"), g.const([0], "ax", np.int64)], "grid4")


@dataclass(frozen=True)
class _Head:
    """The decoded head maps, NCHW ``[B, k, h, w]``: centre and size in pixels, objectness, class probabilities."""

    xy: str
    wh: str
    objectness: str
    classes: str
    features: str


def _decoded_head(g: _Graph, *, size: int | None) -> _Head:
    model = shipped_keras_model()
    features = _trunk(g, model, size=size)
    side = None if size is None else size // STRIDE
    xy = _head_conv(g, model, features, "xy")
    wh = _head_conv(g, model, features, "wh")
    conf = _head_conv(g, model, features, "conf")
    centre = g.op("Mul", [g.op("Add", [g.op("Mul", [xy, g.const(2.0, "two")]), _grid_offsets(g, features, side=side)]),
                          g.const(float(STRIDE), "stride")], "xy_px")
    extent = g.op("Mul", [g.op("Mul", [wh, wh]), g.const(4.0 * ANCHOR_PX, "anchor")], "wh_px")
    objectness, classes = g.op("Split", [conf, g.const([1, NUM_CLASSES], "split", np.int64)], "conf_split",
                               outputs=2, axis=1)
    return _Head(centre, extent, objectness, classes, features)


def _flat(g: _Graph, x: str, channels: int) -> str:
    """``[B, k, h, w]`` -> ``[B, k, h*w]`` (candidate index row * w + col, as the Keras Reshape orders them)."""
    return g.op("Reshape", [x, g.const([0, channels, -1], "flat_shape", np.int64)], "flat")


def _class_scores(g: _Graph, head: _Head) -> str:
    return g.op("Mul", [head.objectness, head.classes], "scores")


def _xyxy(g: _Graph, head: _Head) -> str:
    """``[B, 4, h, w]`` corners x1, y1, x2, y2 in pixels."""
    half = g.op("Mul", [head.wh, g.const(0.5, "half")], "half_wh")
    return g.op("Concat", [g.op("Sub", [head.xy, half]), g.op("Add", [head.xy, half])], "xyxy", axis=1)


def _input_size(g: _Graph, *, size: int | None) -> str:
    """``[1, 4, 1]`` width, height, width, height of the input (for 0-1 boxes)."""
    if size is not None:
        return g.const(np.full((1, 4, 1), float(size)), "wh_in")
    shape = g.op("Shape", [INPUT_NAME], "in_shape")
    hw = g.op("Cast", [g.op("Slice", [shape, g.const([2], "s", np.int64), g.const([4], "e", np.int64)])], "hw_in", to=1)
    wh = g.op("Concat", [g.op("Slice", [hw, g.const([1], "s", np.int64), g.const([2], "e", np.int64)]),
                         g.op("Slice", [hw, g.const([0], "s", np.int64), g.const([1], "e", np.int64)])], "wh", axis=0)
    return g.op("Reshape", [g.op("Concat", [wh, wh], "whwh", axis=0), g.const([1, 4, 1], "sh", np.int64)], "wh_in")


def _save(g: _Graph, path: str | Path, outputs: list[tuple[str, str, list]], *, name: str,
          dynamic: bool = False, metadata: dict | None = None) -> Path:
    """Rename the last tensors to the public output names, check the graph and write it."""
    import onnx
    from onnx import TensorProto, helper

    for internal, public, _ in outputs:
        g.nodes.append(helper.make_node("Identity", [internal], [public]))
    in_shape = ["batch", 3, "height", "width"] if dynamic else [1, 3, SIZE, SIZE]
    graph = helper.make_graph(
        g.nodes, name,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info(public, TensorProto.FLOAT, shape) for _, public, shape in outputs],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edge-sdk tests",
                              ir_version=IR_VERSION)
    # Ultralytics writes its metadata as string properties (names as a Python dict literal, imgsz as a list).
    props = {"names": str(dict(enumerate(CLASSES))), "imgsz": str([SIZE, SIZE]), "stride": str(STRIDE),
             "task": "detect", "batch": "1", **(metadata or {})}
    helper.set_model_props(model, props)
    onnx.checker.check_model(model, full_check=True)
    path = Path(path)
    onnx.save(model, str(path))
    return path


# -- the layouts -----------------------------------------------------------------------------------

def yolov8_onnx_of_shipped_detector(path: str | Path, *, dynamic: bool = False) -> Path:
    """The shipped detector with a YOLOv8/v11 head: ``output0`` ``[1, 4+C, N]`` = ``[1, 8, 400]``.

    Rows 0-3 are cx, cy, w, h in input pixels (0-160), rows 4-7 one score per class
    (objectness × class probability; a v8 head has no objectness row). Candidate ``n`` is cell
    ``row * 20 + col``, as in the Keras model. ``dynamic=True`` makes batch, height and width
    symbolic (``images`` ``["batch", 3, "height", "width"]``, ``output0`` ``["batch", 8, "anchors"]``)
    as Ultralytics writes with ``dynamic=True``; the grid is then computed from the feature map's
    shape, so any side that is a multiple of 16 runs (N = (H/8)·(W/8)), with the anchor kept at
    32 px. The static file is fixed at ``[1, 3, 160, 160]``.
    """
    size = None if dynamic else SIZE
    g = _Graph()
    head = _decoded_head(g, size=size)
    rows = g.op("Concat", [head.xy, head.wh, _class_scores(g, head)], "v8", axis=1)
    out = ["batch", 4 + NUM_CLASSES, "anchors"] if dynamic else [1, 4 + NUM_CLASSES, (SIZE // STRIDE) ** 2]
    return _save(g, path, [(_flat(g, rows, 4 + NUM_CLASSES), "output0", out)], name="shapes_detector_v8", dynamic=dynamic)


def yolov8_normalized_onnx(path: str | Path) -> Path:
    """YOLOv8 layout with 0-1 boxes: ``output0`` ``[1, 4+C, N]`` = ``[1, 8, 400]``, cx, cy, w, h divided by 160.

    As some TFLite/ONNX re-exports of v8 models emit them; scores as in
    :func:`yolov8_onnx_of_shipped_detector`.
    """
    g = _Graph()
    head = _decoded_head(g, size=SIZE)
    boxes = g.op("Div", [_flat(g, g.op("Concat", [head.xy, head.wh], "xywh", axis=1), 4), _input_size(g, size=SIZE)], "xywh01")
    rows = g.op("Concat", [boxes, _flat(g, _class_scores(g, head), NUM_CLASSES)], "v8", axis=1)
    return _save(g, path, [(rows, "output0", [1, 4 + NUM_CLASSES, (SIZE // STRIDE) ** 2])], name="shapes_detector_v8_01")


def yolov5_onnx(path: str | Path, *, normalized: bool = False) -> Path:
    """YOLOv5 layout with objectness: ``output0`` ``[1, N, 5+C]`` = ``[1, 400, 9]``.

    Columns: cx, cy, w, h in input pixels (0-1 with ``normalized=True``, which is exactly the Keras
    model's own output), objectness, then C class probabilities (score = objectness × probability).
    """
    g = _Graph()
    head = _decoded_head(g, size=SIZE)
    boxes = _flat(g, g.op("Concat", [head.xy, head.wh], "xywh", axis=1), 4)
    if normalized:
        boxes = g.op("Div", [boxes, _input_size(g, size=SIZE)], "xywh01")
    rest = _flat(g, g.op("Concat", [head.objectness, head.classes], "conf", axis=1), 1 + NUM_CLASSES)
    rows = g.op("Transpose", [g.op("Concat", [boxes, rest], "v5t", axis=1)], "v5", perm=[0, 2, 1])
    return _save(g, path, [(rows, "output0", [1, (SIZE // STRIDE) ** 2, 5 + NUM_CLASSES])], name="shapes_detector_v5")


def end_to_end_onnx(path: str | Path, *, max_detections: int = 300, iou: float = 0.45,
                    score_threshold: float = 0.001) -> Path:
    """End-to-end (NMS inside): ``output0`` ``[1, K, 6]`` rows x1, y1, x2, y2 (input pixels), score, class.

    As Ultralytics writes with ``nms=True`` and as YOLOv10 / YOLO26 NMS-free exports lay it out
    (K = 300 there, Ultralytics' ``max_det``): K = ``max_detections`` rows sorted by score, the class
    index as a float, unused rows all zero. The suppression is ONNX's own ``NonMaxSuppression``
    (per class, at ``iou``, dropping scores below ``score_threshold``; Ultralytics' ``nms=True``
    keeps scores above its ``conf``, 0.25 by default, the low default here keeps the whole ranking
    for mAP), because the shipped detector, unlike a one-to-one YOLOv10 head, predicts each object
    from three cells.
    """
    g = _Graph()
    head = _decoded_head(g, size=SIZE)
    boxes = g.op("Transpose", [_flat(g, _xyxy(g, head), 4)], "boxes", perm=[0, 2, 1])  # [1, N, 4]
    scores = _flat(g, _class_scores(g, head), NUM_CLASSES)  # [1, C, N]
    k = g.const([max_detections], "k", np.int64)
    selected = g.op("NonMaxSuppression", [boxes, scores, k, g.const([iou], "iou"), g.const([score_threshold], "thr")],
                    "nms")  # [M, 3]: batch, class, box
    class_box = g.op("Slice", [selected, g.const([1], "s", np.int64), g.const([3], "e", np.int64),
                               g.const([1], "a", np.int64)], "class_box")  # [M, 2]
    squeeze0 = g.const([0], "ax", np.int64)
    picked_scores = g.op("GatherND", [g.op("Squeeze", [scores, squeeze0], "scores0"), class_box], "picked_scores")  # [M]
    box_column = g.op("Slice", [class_box, g.const([1], "s", np.int64), g.const([2], "e", np.int64),
                                g.const([1], "a", np.int64)], "box_column")
    box_index = g.op("Squeeze", [box_column, g.const([1], "ax", np.int64)], "box_index")  # [M]
    class_index = g.op("Slice", [class_box, g.const([0], "s", np.int64), g.const([1], "e", np.int64),
                                 g.const([1], "a", np.int64)], "class_index")  # [M, 1]
    picked_boxes = g.op("Gather", [g.op("Squeeze", [boxes, squeeze0], "boxes0"), box_index], "picked_boxes", axis=0)
    count = g.op("Slice", [g.op("Shape", [picked_scores]), g.const([0], "s", np.int64), g.const([1], "e", np.int64)], "m")
    top = g.op("Min", [count, k], "top")
    best, order = g.op("TopK", [picked_scores, top], "topk", outputs=2, axis=0, largest=1, sorted=1)
    rows = g.op("Concat", [
        g.op("Gather", [picked_boxes, order], "rows_boxes", axis=0),
        g.op("Unsqueeze", [best, g.const([1], "ax", np.int64)], "rows_scores"),
        g.op("Cast", [g.op("Gather", [class_index, order], "rows_class", axis=0)], "rows_classf", to=1),
    ], "rows", axis=1)  # [k, 6]
    missing = g.op("Sub", [k, top], "missing")
    pads = g.op("Concat", [g.const([0, 0], "p", np.int64), missing, g.const([0], "p", np.int64)], "pads", axis=0)
    padded = g.op("Pad", [rows, pads, g.const(0.0, "pad_value")], "padded")
    # A constant-shape Reshape, so shape inference (OpenVINO's too) sees [1, K, 6] and not [1, ?, 6].
    out = g.op("Reshape", [padded, g.const([1, max_detections, 6], "e2e_shape", np.int64)], "e2e")
    return _save(g, path, [(out, "output0", [1, max_detections, 6])], name="shapes_detector_end2end")


def split_head_onnx(path: str | Path) -> Path:
    """A split head, two outputs: ``boxes`` ``[1, N, 4]`` x1, y1, x2, y2 in input pixels and ``scores`` ``[1, N, C]``.

    Scores are objectness × class probability, as YOLO-NAS / PP-YOLOE style exports without NMS
    give them. With C = 4 both outputs are ``[1, 400, 4]``: only the names (and the pixel-sized
    values) tell the boxes from the scores.
    """
    g = _Graph()
    head = _decoded_head(g, size=SIZE)
    boxes = g.op("Transpose", [_flat(g, _xyxy(g, head), 4)], "boxes_t", perm=[0, 2, 1])
    scores = g.op("Transpose", [_flat(g, _class_scores(g, head), NUM_CLASSES)], "scores_t", perm=[0, 2, 1])
    n = (SIZE // STRIDE) ** 2
    return _save(g, path, [(boxes, "boxes", [1, n, 4]), (scores, "scores", [1, n, NUM_CLASSES])],
                 name="shapes_detector_split")


def classifier_onnx(path: str | Path) -> Path:
    """A classifier: ``output0`` ``[1, C]``, per class the best objectness × probability over the image.

    Made from the detector's maps by a global max pool, so on a scene with one shape the top class
    is that shape's. Scores are independent 0-1 presences (they do not sum to 1).
    """
    g = _Graph()
    head = _decoded_head(g, size=SIZE)
    pooled = g.op("GlobalMaxPool", [_class_scores(g, head)], "pooled")
    out = g.op("Flatten", [pooled], "probs", axis=1)
    return _save(g, path, [(out, "output0", [1, NUM_CLASSES])], name="shapes_classifier",
                 metadata={"task": "classify"})


def custom_two_output_onnx(path: str | Path) -> Path:
    """A model that matches no known head: ``features`` ``[1, 64, 20, 20]`` and ``objectness`` ``[1, 1, 20, 20]``."""
    g = _Graph()
    head = _decoded_head(g, size=SIZE)
    side = SIZE // STRIDE
    return _save(g, path, [(head.features, "features", [1, 64, side, side]),
                           (head.objectness, "objectness", [1, 1, side, side])],
                 name="shapes_custom", metadata={"task": "custom"})


LAYOUTS = {
    "v8": yolov8_onnx_of_shipped_detector,
    "v8-normalized": yolov8_normalized_onnx,
    "v5": yolov5_onnx,
    "end-to-end": end_to_end_onnx,
    "split": split_head_onnx,
    "classifier": classifier_onnx,
    "custom": custom_two_output_onnx,
}
