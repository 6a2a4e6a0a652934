"""ONNX -> TensorFlow SavedModel through onnx2tf: real graphs, real onnx2tf, ONNX Runtime as the referee."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx2tf", reason='needs onnx2tf: pip install --no-deps onnx2tf==1.29.24')
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edge_sdk.converters.onnx_tf import tflite_output_order, to_saved_model  # noqa: E402
from edge_sdk.errors import ConversionError, ModelError  # noqa: E402
from support.digits import model_inputs  # noqa: E402


def _onnx_run(path: Path, nhwc: np.ndarray, *, names: list[str] | None = None) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    rows = [session.run(names, {name: np.transpose(x[None], (0, 3, 1, 2)).astype(np.float32)}) for x in nhwc]
    return [np.concatenate(outs) for outs in zip(*rows)]


def _saved_model_run(result, nhwc: np.ndarray) -> list[np.ndarray]:
    from edge_sdk.converters import _tf

    tf = _tf.tensorflow()
    signature = tf.saved_model.load(str(result.saved_model)).signatures["serving_default"]
    rows = [signature(**{result.input_name: tf.constant(x[None])}) for x in nhwc.astype(np.float32)]
    return [np.concatenate([row[out.key].numpy() for row in rows]) for out in result.outputs]


def _tflite(saved_model: Path, calib: np.ndarray | None) -> bytes:
    """Float (calib None) or full-integer int8 with int8 I/O, as the Edge TPU target wants it."""
    from edge_sdk.converters import _tf

    tf = _tf.tensorflow()
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    if calib is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([x[None].astype(np.float32)] for x in calib)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    with _tf.quiet_native():
        return converter.convert()


def _ops(content: bytes) -> list[str]:
    from edge_sdk.backends.litert import LiteRTEngine

    return [op["op_name"] for op in LiteRTEngine(content).ops() if op["op_name"] != "DELEGATE"]


def _close(got: np.ndarray, want: np.ndarray) -> None:
    # float32 evaluated in another order (NHWC kernels vs ONNX Runtime's NCHW ones)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(want).max())))


@pytest.fixture(scope="module")
def classifier(digits, tmp_path_factory):
    """The digits CNN as an NCHW ONNX graph, converted once; with images and ONNX Runtime's answers."""
    from support.models.onnx_classifier import train_small_cnn, write_onnx

    folder = tmp_path_factory.mktemp("onnx_tf")
    keras_model = train_small_cnn(digits, model_inputs)
    path = write_onnx(keras_model, folder / "digits.onnx")
    val = model_inputs(digits["images"][digits["val_idx"][:64]])
    calib = model_inputs(digits["images"][digits["train_idx"][:32]])
    result = to_saved_model(path, folder / "saved", calibration=calib)
    return {"path": path, "result": result, "val": val, "calib": calib, "labels": digits["labels"][digits["val_idx"][:64]]}


def test_classifier_matches_onnx_runtime(classifier):
    result, val = classifier["result"], classifier["val"]
    assert result.input_shape == (32, 32, 3)
    assert [(o.onnx_name, o.shape) for o in result.outputs] == [("probs", (1, 10))]
    assert (result.saved_model / "saved_model.pb").is_file()
    assert result.parameter_count == 8 * 3 * 3 * 3 + 8 + 15 * 15 * 8 * 10 + 10
    want = _onnx_run(classifier["path"], val)[0]
    got = _saved_model_run(result, val)[0]
    _close(got, want)
    assert (got.argmax(1) == classifier["labels"]).mean() > 0.8  # a trained model, not noise


def test_float_and_int8_tflite_have_no_transpose_or_flex(classifier):
    from edge_sdk.backends.litert import LiteRTEngine

    result, val = classifier["result"], classifier["val"]
    float_model = _tflite(result.saved_model, None)
    assert not [op for op in _ops(float_model) if op == "TRANSPOSE" or op.startswith("Flex")]
    engine = LiteRTEngine(float_model)
    got = np.concatenate([engine.run([x[None]])[0] for x in val[:8]])
    _close(got, _onnx_run(classifier["path"], val[:8])[0])

    int8_model = _tflite(result.saved_model, classifier["calib"])
    ops = _ops(int8_model)
    assert "CONV_2D" in ops
    assert not [op for op in ops if op == "TRANSPOSE" or op.startswith("Flex")], ops
    engine = LiteRTEngine(int8_model)
    spec = engine.input_specs()[0]
    assert spec["dtype"] == np.int8 and spec["shape"] == [1, 32, 32, 3]
    scale, zero = spec["quantization"]
    out_scale, out_zero = engine.output_specs()[0]["quantization"]
    q = np.clip(np.round(val[:32] / scale + zero), -128, 127).astype(np.int8)
    probs = np.concatenate([(engine.run([x[None]])[0].astype(np.float32) - out_zero) * out_scale for x in q])
    want = _onnx_run(classifier["path"], val[:32])[0]
    assert (probs.argmax(1) == want.argmax(1)).mean() >= 0.9


def _save(graph, path: Path, *, opset: int) -> Path:
    """A graph made with onnx.helper, checked and written at ``opset``."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _detector(path: Path, *, classes: int = 2) -> Path:
    """A YOLOv8-like head: two strides, each [1, 4+C, h*w], concatenated to [1, 4+C, N], then a
    pooled-feature output and the NCHW feature map itself. Output names are not in sorted order."""
    rng = np.random.default_rng(3)
    k = 4 + classes

    def w(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    inits = [
        w("w1", 8, 3, 3, 3), w("b1", 8), w("w2", 16, 8, 3, 3), w("b2", 16),
        w("h1", k, 8, 1, 1), w("hb1", k), w("h2", k, 16, 1, 1), w("hb2", k),
        numpy_helper.from_array(np.array([1, k, -1], np.int64), "flat"),
        numpy_helper.from_array(np.array([4, classes], np.int64), "split"),
    ]
    conv = dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], name="stem", **conv),
        helper.make_node("Relu", ["c1"], ["p3"]),
        helper.make_node("Conv", ["p3", "w2", "b2"], ["c2"], name="down", **conv),
        helper.make_node("Relu", ["c2"], ["p4"]),
        helper.make_node("Conv", ["p3", "h1", "hb1"], ["o3"], kernel_shape=[1, 1]),
        helper.make_node("Conv", ["p4", "h2", "hb2"], ["o4"], kernel_shape=[1, 1]),
        helper.make_node("Reshape", ["o3", "flat"], ["f3"]),
        helper.make_node("Reshape", ["o4", "flat"], ["f4"]),
        helper.make_node("Concat", ["f3", "f4"], ["cat"], axis=2),
        helper.make_node("Split", ["cat", "split"], ["box", "cls"], axis=1),
        helper.make_node("Sigmoid", ["cls"], ["scores"]),
        helper.make_node("Concat", ["box", "scores"], ["z_head"], axis=1),
        helper.make_node("GlobalAveragePool", ["p4"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["a_pooled"]),
    ]
    graph = helper.make_graph(
        nodes, "detector",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [
            helper.make_tensor_value_info("z_head", TensorProto.FLOAT, ["batch", k, "anchors"]),
            helper.make_tensor_value_info("a_pooled", TensorProto.FLOAT, ["batch", 16]),
            helper.make_tensor_value_info("p4", TensorProto.FLOAT, ["batch", 16, "h4", "w4"]),
        ],
        inits,
    )
    return _save(graph, path, opset=13)


def test_two_outputs_keep_order_names_and_onnx_layout(tmp_path):
    path = _detector(tmp_path / "det.onnx")
    images = np.random.default_rng(4).random((6, 64, 48, 3)).astype(np.float32)
    result = to_saved_model(path, tmp_path / "saved", input_size=(64, 48), calibration=images[:4])
    assert result.input_shape == (64, 48, 3)
    anchors = 32 * 24 + 16 * 12
    names = ["z_head", "a_pooled", "p4"]
    assert [(o.onnx_name, o.shape) for o in result.outputs] == list(
        zip(names, [(1, 6, anchors), (1, 16), (1, 16, 16, 12)])
    )
    for got, want in zip(_saved_model_run(result, images), _onnx_run(path, images, names=names)):
        _close(got, want)

    float_model = _tflite(result.saved_model, None)
    from edge_sdk.backends.litert import LiteRTEngine

    engine = LiteRTEngine(float_model)
    order = tflite_output_order(float_model, result)
    outputs = engine.run([images[:1]])
    assert [list(outputs[i].shape) for i in order] == [[1, 6, anchors], [1, 16], [1, 16, 16, 12]]
    for i, want in zip(order, _onnx_run(path, images[:1], names=names)):
        _close(outputs[i], want)
    int8_ops = _ops(_tflite(result.saved_model, images[:4]))
    assert not [op for op in int8_ops if op.startswith("Flex")]
    assert int8_ops[int8_ops.index("CONV_2D") - 1] != "TRANSPOSE" and "TRANSPOSE" not in int8_ops[:2]


def test_dynamic_size_needs_input_size(tmp_path):
    path = _detector(tmp_path / "det.onnx")
    with pytest.raises(ModelError, match=r"dynamic input height/width.*--imgsz"):
        to_saved_model(path, tmp_path / "saved")
    assert not (tmp_path / "saved").exists()


def test_fixed_size_model_refuses_another_size(classifier, tmp_path):
    with pytest.raises(ModelError, match="fixed input size 32x32"):
        to_saved_model(classifier["path"], tmp_path / "saved", input_size=(64, 64))


def _castlike(path: Path, *, name: str) -> Path:
    """CastLike (opset 15) has no onnx2tf implementation."""
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["image"], ["r"], name="act"),
            helper.make_node("CastLike", ["r", "like"], ["y"], name=name),
        ],
        "castlike",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [1, 3, 8, 8])],
        [numpy_helper.from_array(np.zeros(1, np.float64), "like")],
    )
    return _save(graph, path, opset=15)


def test_unconvertible_op_names_op_and_node(tmp_path):
    path = _castlike(tmp_path / "castlike.onnx", name="/head/cast:0")
    with pytest.raises(ConversionError, match=r"op CastLike \(node '/head/cast:0'\)") as info:
        to_saved_model(path, tmp_path / "saved")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "saved").exists()
    path = _castlike(tmp_path / "unnamed.onnx", name="")
    with pytest.raises(ConversionError, match=r"op CastLike \(unnamed node #1\)"):
        to_saved_model(path, tmp_path / "saved")


def test_pytorch_style_names_keep_outputs_apart(tmp_path):
    """torch.onnx names tensors like '/backbone/relu' or 'x:0'; onnx2tf renames those, and its
    output lookup drops outputs when only some of the names need it."""
    rng = np.random.default_rng(9)

    def w(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["input.1", "w1", "b1"], ["/conv/out"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                         name="/backbone/conv/Conv"),
        helper.make_node("Relu", ["/conv/out"], ["/backbone/feat"], name="/backbone/act/Relu"),
        helper.make_node("GlobalAveragePool", ["/backbone/feat"], ["/pool"]),
        helper.make_node("Flatten", ["/pool"], ["/flat"]),
        helper.make_node("Gemm", ["/flat", "fc_w", "fc_b"], ["/head/logits:0"], name="/head/fc/Gemm"),
    ]
    graph = helper.make_graph(
        nodes, "torch_names",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 16, 20])],
        [
            helper.make_tensor_value_info("/head/logits:0", TensorProto.FLOAT, [1, 5]),
            helper.make_tensor_value_info("/backbone/feat", TensorProto.FLOAT, [1, 8, 16, 20]),
        ],
        [w("w1", 8, 3, 3, 3), w("b1", 8), w("fc_w", 8, 5), w("fc_b", 5)],
    )
    _save(graph, tmp_path / "torch.onnx", opset=13)
    images = rng.random((3, 16, 20, 3)).astype(np.float32)
    result = to_saved_model(tmp_path / "torch.onnx", tmp_path / "saved", calibration=images)
    names = ["/head/logits:0", "/backbone/feat"]
    assert [(o.onnx_name, o.shape) for o in result.outputs] == list(zip(names, [(1, 5), (1, 8, 16, 20)]))
    for got, want in zip(_saved_model_run(result, images), _onnx_run(tmp_path / "torch.onnx", images, names=names)):
        _close(got, want)


def test_old_opset_and_several_inputs_are_model_errors(tmp_path):
    node = helper.make_node("Add", ["a", "b"], ["y"])
    info = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, 8, 8]) for n in ("a", "b", "y")]
    graph = helper.make_graph([node], "two_inputs", info[:2], info[2:])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]), str(tmp_path / "old.onnx"))
    with pytest.raises(ModelError, match="opset 11; re-export it with opset 13"):
        to_saved_model(tmp_path / "old.onnx", tmp_path / "saved")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(tmp_path / "two.onnx"))
    with pytest.raises(ModelError, match="has 2 inputs; expected one image input"):
        to_saved_model(tmp_path / "two.onnx", tmp_path / "saved")
    nhwc = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "nhwc",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, 32, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 32, 3])],
    )
    onnx.save(helper.make_model(nhwc, opset_imports=[helper.make_opsetid("", 13)]), str(tmp_path / "nhwc.onnx"))
    with pytest.raises(ModelError, match="looks NHWC; expected NCHW"):
        to_saved_model(tmp_path / "nhwc.onnx", tmp_path / "saved")


def test_conversion_is_offline_and_quiet(tmp_path, monkeypatch, capfd):
    """No socket is opened (onnx2tf would fetch sample images for an RGB model) and nothing is printed."""
    attempts = []

    connect, connect_ex = socket.socket.connect, socket.socket.connect_ex
    create_connection, getaddrinfo = socket.create_connection, socket.getaddrinfo

    def loopback(address) -> bool:
        # Other threads of the test session (MQTT clients of earlier tests, reconnecting) talk to
        # brokers on loopback; the converter must reach nothing off this machine.
        host = address[0] if isinstance(address, tuple) else address
        return isinstance(host, str) and (host.startswith("127.") or host in ("::1", "localhost"))

    def refuse(self, address):
        if loopback(address):
            return connect(self, address)
        attempts.append(address)
        raise OSError("network disabled in this test")

    def refuse_ex(self, address):
        if loopback(address):
            return connect_ex(self, address)
        attempts.append(address)
        return 111

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse_ex)
    def refuse_create(address, *args, **kwargs):
        if loopback(address):
            return create_connection(address, *args, **kwargs)
        attempts.append(address)
        raise OSError("network disabled in this test")

    def refuse_lookup(host, *args, **kwargs):
        if loopback(host):
            return getaddrinfo(host, *args, **kwargs)
        attempts.append(host)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "create_connection", refuse_create)
    monkeypatch.setattr(socket, "getaddrinfo", refuse_lookup)
    path = _detector(tmp_path / "det.onnx")
    capfd.readouterr()
    images = np.random.default_rng(5).random((2, 32, 32, 3)).astype(np.float32)
    result = to_saved_model(path, tmp_path / "saved", input_size=(32, 32), calibration=images)
    monkeypatch.undo()
    assert attempts == []
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert result.max_rel_error is not None and result.max_rel_error < 1e-3


def test_numpy_global_generator_is_left_alone(tmp_path):
    """onnx2tf seeds NumPy's global generator when imported and while converting; callers' state stays."""
    import subprocess
    import sys

    script = (
        "import numpy as np, sys; from pathlib import Path; sys.path.insert(0, sys.argv[2]);"
        "from edge_sdk.converters.onnx_tf import to_saved_model;"
        "np.random.seed(123); first = np.random.rand(); np.random.seed(123);"
        "to_saved_model(Path(sys.argv[1]), Path(sys.argv[1]).with_suffix('.saved'), input_size=(32, 32));"
        "print(np.random.rand() == first)"
    )
    path = _detector(tmp_path / "det.onnx")
    out = subprocess.run([sys.executable, "-c", script, str(path), str(Path(__file__).parent)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "True"


def test_dynamic_batch_is_fixed_to_one(classifier, tmp_path):
    model = onnx.load(str(classifier["path"]))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    onnx.save(model, str(tmp_path / "batch.onnx"))
    result = to_saved_model(tmp_path / "batch.onnx", tmp_path / "saved", calibration=classifier["calib"][:4])
    assert result.input_shape == (32, 32, 3) and result.outputs[0].shape == (1, 10)
    _close(_saved_model_run(result, classifier["val"][:4])[0], _onnx_run(classifier["path"], classifier["val"][:4])[0])


def test_bad_inputs_are_model_errors(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        to_saved_model(tmp_path / "missing.onnx", tmp_path / "saved")
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf at all")
    with pytest.raises(ModelError, match="not a readable ONNX model"):
        to_saved_model(tmp_path / "junk.onnx", tmp_path / "saved")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("keep me")
    with pytest.raises(ConversionError, match="non-empty folder and not a SavedModel"):
        to_saved_model(tmp_path / "missing.onnx", tmp_path / "busy")
    assert (tmp_path / "busy" / "notes.txt").read_text() == "keep me"
    path = _detector(tmp_path / "det.onnx")
    with pytest.raises(ModelError, match="calibration images have shape"):
        to_saved_model(path, tmp_path / "saved", input_size=(32, 32), calibration=np.zeros((2, 3, 32, 32), np.float32))


def _yolov8_like(path: Path, *, reg_max: int = 16, classes: int = 3) -> Path:
    """The parts of an Ultralytics YOLOv8 export onnx2tf must get right: SiLU, nearest Resize, an FPN
    concat, and the DFL box decoding (reshape to [1, 4, reg_max, N], transpose, softmax, 1x1 conv)."""
    rng = np.random.default_rng(7)

    def w(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    def const(name, value):
        return numpy_helper.from_array(np.asarray(value), name)

    inits = [
        w("w1", 8, 3, 3, 3), w("b1", 8), w("w2", 16, 8, 3, 3), w("b2", 16), w("wf", 8, 24, 1, 1), w("bf", 8),
        w("wb", 4 * reg_max, 8, 1, 1), w("bb", 4 * reg_max), w("wc", classes, 8, 1, 1), w("bc", classes),
        const("dfl", np.arange(reg_max, dtype=np.float32).reshape(1, reg_max, 1, 1)),
        const("scales", np.array([1, 1, 2, 2], np.float32)),
        const("flat_box", np.array([1, 4 * reg_max, -1], np.int64)),
        const("dfl_shape", np.array([1, 4, reg_max, -1], np.int64)),
        const("box_shape", np.array([1, 4, -1], np.int64)),
        const("cls_shape", np.array([1, classes, -1], np.int64)),
    ]
    down = dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    nodes = [
        helper.make_node("Conv", ["images", "w1", "b1"], ["c1"], **down),
        helper.make_node("Sigmoid", ["c1"], ["g1"]), helper.make_node("Mul", ["c1", "g1"], ["p3"]),
        helper.make_node("Conv", ["p3", "w2", "b2"], ["c2"], **down),
        helper.make_node("Sigmoid", ["c2"], ["g2"]), helper.make_node("Mul", ["c2", "g2"], ["p4"]),
        helper.make_node("Resize", ["p4", "", "scales"], ["up"], mode="nearest"),
        helper.make_node("Concat", ["up", "p3"], ["fpn"], axis=1),
        helper.make_node("Conv", ["fpn", "wf", "bf"], ["f"], kernel_shape=[1, 1]),
        helper.make_node("Conv", ["f", "wb", "bb"], ["box"], kernel_shape=[1, 1]),
        helper.make_node("Conv", ["f", "wc", "bc"], ["cls"], kernel_shape=[1, 1]),
        helper.make_node("Reshape", ["box", "flat_box"], ["box3"]),
        helper.make_node("Reshape", ["box3", "dfl_shape"], ["box4"]),
        helper.make_node("Transpose", ["box4"], ["boxt"], perm=[0, 2, 1, 3]),
        helper.make_node("Softmax", ["boxt"], ["boxp"], axis=1),
        helper.make_node("Conv", ["boxp", "dfl"], ["boxd"], kernel_shape=[1, 1], name="dfl_conv"),
        helper.make_node("Reshape", ["boxd", "box_shape"], ["boxes"]),
        helper.make_node("Reshape", ["cls", "cls_shape"], ["cls3"]),
        helper.make_node("Sigmoid", ["cls3"], ["scores"]),
        helper.make_node("Concat", ["boxes", "scores"], ["output0"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "yolov8_like",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 4 + classes, "anchors"])],
        inits,
    )
    return _save(graph, path, opset=17)


def test_yolov8_like_head_keeps_its_layout(tmp_path):
    path = _yolov8_like(tmp_path / "yolo.onnx")
    images = np.random.default_rng(8).random((4, 64, 64, 3)).astype(np.float32)
    result = to_saved_model(path, tmp_path / "saved", calibration=images)
    assert [(o.onnx_name, o.shape) for o in result.outputs] == [("output0", (1, 7, 32 * 32))]
    _close(_saved_model_run(result, images)[0], _onnx_run(path, images)[0])
    ops = _ops(_tflite(result.saved_model, images))
    assert not [op for op in ops if op.startswith("Flex")], ops
    assert ops.index("CONV_2D") < ops.index("TRANSPOSE")  # transposes only in the head, none in front
    assert ops[:ops.index("CONV_2D") + 1].count("TRANSPOSE") == 0
