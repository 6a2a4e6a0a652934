"""A real ONNX classifier for tests: a small Keras CNN trained on the digits, rewritten op by op in ONNX.

No exporter is installed here, so the graph is written with onnx.helper; the test that uses it
checks that the ONNX model and the Keras model agree before anything else.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def train_small_cnn(digits: dict, inputs_fn):
    from edge_sdk.converters import _tf

    keras = _tf.keras3()
    keras.utils.set_random_seed(1)
    inp = keras.Input((32, 32, 3))
    h = keras.layers.Conv2D(8, 3, activation="relu")(inp)
    h = keras.layers.MaxPooling2D()(h)
    out = keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(h))
    model = keras.Model(inp, out)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    x = inputs_fn(digits["images"][digits["train_idx"]])
    model.fit(x, digits["labels"][digits["train_idx"]], epochs=6, batch_size=32, verbose=0)
    return model


def write_onnx(model, path: Path) -> Path:
    """The Keras CNN above as an NCHW ONNX graph (the layout ONNX models usually have)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    conv, dense = model.layers[1], model.layers[4]
    kernel, bias = conv.get_weights()  # HWIO
    w_dense, b_dense = dense.get_weights()
    inits = [
        numpy_helper.from_array(np.transpose(kernel, (3, 2, 0, 1)).astype(np.float32), "conv_w"),
        numpy_helper.from_array(bias.astype(np.float32), "conv_b"),
        numpy_helper.from_array(w_dense.astype(np.float32), "fc_w"),
        numpy_helper.from_array(b_dense.astype(np.float32), "fc_b"),
        numpy_helper.from_array(np.array([1, -1], np.int64), "flat_shape"),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "conv_w", "conv_b"], ["conv"], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("MaxPool", ["relu"], ["pool"], kernel_shape=[2, 2], strides=[2, 2]),
        # Keras flattens NHWC; transpose back so the dense weights line up.
        helper.make_node("Transpose", ["pool"], ["nhwc"], perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", ["nhwc", "flat_shape"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "digits",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 10])],
        inits,
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(onnx_model)
    onnx.save(onnx_model, str(path))
    return path
