"""The models users bring: ONNX in every head layout, .tflite files from elsewhere, several outputs, plugin decoders.

Every ONNX file is the shipped detector rewritten op by op (tests/support/models/onnx_detectors.py), so each layout
really detects the rendered shapes and is scored on scenes with known truth.
"""

from __future__ import annotations

import numpy as np
import pytest

from edge_sdk.backends import in_manifest_order, open_engine
from edge_sdk.bundle import open_bundle
from edge_sdk.converters import convert
from edge_sdk.errors import ConfigError, ModelError
from edge_sdk.samples import shapes
from support.models import onnx_detectors


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    return {
        "val": shapes.write_yolo(root / "val", 40, seed=5150, photos=shapes.HELD_OUT_PHOTOS),
        "calib": shapes.write_yolo(root / "calib", 60, seed=5151, photos=shapes.HELD_OUT_PHOTOS) / "images",
    }


@pytest.mark.parametrize("layout, decoder_layout, normalized", [
    ("v8", "v8", False), ("v8-normalized", "v8", True), ("v5", "v5", False), ("end-to-end", "e2e", False),
    ("split", "split", False),
])
def test_each_onnx_head_is_recognised_and_scores_as_in_float(layout, decoder_layout, normalized, scenes, tmp_path):
    path = onnx_detectors.LAYOUTS[layout](tmp_path / f"{layout}.onnx")
    result = convert(path, profile="intel-cpu", precision="fp16", out=tmp_path / "b", val=scenes["val"])
    manifest = open_bundle(tmp_path / "b").manifest
    assert manifest.task.value == "detection" and manifest.decoder.kind == "yolo"
    assert manifest.decoder.options["layout"] == decoder_layout
    assert manifest.decoder.options["normalized"] is normalized
    assert manifest.num_classes == len(shapes.CLASSES) and manifest.inference_precision.value == "f32"
    assert manifest.preprocessing.layout == "NCHW"
    accuracy = result.report.accuracy
    assert accuracy.reference.map50 > 0.9
    assert abs(accuracy.reference.map50 - accuracy.converted.map50) < 0.01
    assert result.report.head == f"yolo {decoder_layout}"


def test_split_head_outputs_keep_the_source_order_with_their_names(scenes, tmp_path):
    path = onnx_detectors.split_head_onnx(tmp_path / "split.onnx")
    convert(path, profile="intel-cpu", precision="fp16", out=tmp_path / "b", val=scenes["val"])
    bundle = open_bundle(tmp_path / "b")
    assert [o.name for o in bundle.manifest.outputs] == ["boxes", "scores"]
    assert bundle.manifest.decoder.options["box_format"] == "xyxy"
    engine = open_engine(bundle)
    assert [s["name"] for s in engine.output_specs()] == ["boxes", "scores"]


def test_the_runtime_restores_the_manifest_order_of_reordered_outputs(scenes, tmp_path):
    path = onnx_detectors.split_head_onnx(tmp_path / "split.onnx")
    convert(path, profile="intel-cpu", precision="fp16", out=tmp_path / "b")
    bundle = open_bundle(tmp_path / "b")
    engine = open_engine(bundle)
    x = np.random.default_rng(0).random((1, 3, 160, 160), dtype=np.float32)
    straight = engine.run([x])

    class Reversed:  # a compiler that lists the same outputs the other way round
        def input_specs(self):
            return engine.input_specs()

        def output_specs(self):
            return engine.output_specs()[::-1]

        def run(self, inputs):
            return engine.run(inputs)[::-1]

    restored = in_manifest_order(Reversed(), bundle.manifest)
    assert [s["name"] for s in restored.output_specs()] == ["boxes", "scores"]
    for a, b in zip(restored.run([x]), straight):
        np.testing.assert_array_equal(a, b)


def test_int8_onnx_detector_for_openvino_keeps_map50(scenes, tmp_path):
    path = onnx_detectors.yolov8_onnx_of_shipped_detector(tmp_path / "v8.onnx")
    result = convert(path, profile="intel-cpu", out=tmp_path / "b", val=scenes["val"], calib=scenes["calib"],
                     min_calib=20)
    accuracy = result.report.accuracy
    assert result.report.quantization is not None
    assert accuracy.reference.map50 - accuracy.converted.map50 <= 0.01


def test_dynamic_onnx_needs_imgsz_then_converts(scenes, tmp_path):
    path = onnx_detectors.yolov8_onnx_of_shipped_detector(tmp_path / "dyn.onnx", dynamic=True)
    with pytest.raises(ModelError, match="dynamic input size.*--imgsz"):
        convert(path, profile="intel-cpu", precision="fp16", out=tmp_path / "a")
    assert not (tmp_path / "a").exists()
    with pytest.raises(ModelError, match="fixed input size"):
        convert(onnx_detectors.yolov8_onnx_of_shipped_detector(tmp_path / "fixed.onnx"), profile="intel-cpu",
                precision="fp16", out=tmp_path / "a", imgsz=320)
    result = convert(path, profile="intel-cpu", precision="fp16", out=tmp_path / "b", imgsz=160, val=scenes["val"])
    manifest = open_bundle(tmp_path / "b").manifest
    assert manifest.inputs[0].shape == [1, 3, 160, 160]
    assert manifest.outputs[0].shape == [1, 8, 400]
    assert result.report.accuracy.reference.map50 > 0.9


def test_outputs_matching_no_head_need_a_decoder_which_then_scores_them(scenes, tmp_path):
    path = onnx_detectors.custom_two_output_onnx(tmp_path / "custom.onnx")
    with pytest.raises(ModelError, match=r"match no known head.*--decoder plugin:module:function"):
        convert(path, profile="intel-cpu", precision="fp16", out=tmp_path / "a")
    with pytest.raises(ConfigError, match="cannot be imported"):
        convert(path, profile="intel-cpu", precision="fp16", out=tmp_path / "a", decoder="plugin:no_such_module:f")
    assert not (tmp_path / "a").exists()

    result = convert(path, profile="intel-cpu", out=tmp_path / "b", calib=scenes["calib"], min_calib=20,
                     val=scenes["val"] / "images", decoder="plugin:support.decoders.custom:objectness_peak")
    manifest = open_bundle(tmp_path / "b").manifest
    assert manifest.task.value == "custom" and manifest.decoder.kind == "plugin:support.decoders.custom:objectness_peak"
    assert [o.name for o in manifest.outputs] == ["features", "objectness"]
    fidelity = {f.name: f for f in result.report.fidelity}
    assert set(fidelity) == {"features", "objectness"}
    for f in fidelity.values():  # int8 costs something, but the outputs still follow the float model
        assert 10.0 < f.sqnr_db < 999.0 and 0.95 < f.cosine <= 1.0


def test_a_plugin_decoder_scores_a_detection_dataset(scenes, tmp_path):
    """A plugin's detections are scored like a built-in decoder's when --val is a YOLO dataset."""
    path = onnx_detectors.yolov8_onnx_of_shipped_detector(tmp_path / "v8.onnx")
    result = convert(path, profile="intel-cpu", precision="fp16", out=tmp_path / "b", val=scenes["val"],
                     decoder="plugin:edge_sdk.decoders.yolo:decode")
    assert result.report.accuracy.reference.map50 > 0.9
    assert open_bundle(tmp_path / "b").manifest.decoder.kind == "plugin:edge_sdk.decoders.yolo:decode"


def test_task_that_contradicts_the_outputs_is_refused(tmp_path):
    path = onnx_detectors.classifier_onnx(tmp_path / "cls.onnx")
    with pytest.raises(ConfigError, match="--task detection contradicts"):
        convert(path, profile="intel-cpu", precision="fp16", out=tmp_path / "a", task="detection")


def _two_output_tflite(tmp_path):
    """A float .tflite with two outputs laid out as MediaPipe's face detector's: regressors [1, N, 16] (a box and
    six keypoints) and logits [1, N, 1]."""
    from edge_sdk.converters import _tf

    keras = _tf.keras3()
    keras.utils.set_random_seed(3)
    image = keras.Input((64, 64, 3), batch_size=1)
    x = keras.layers.Conv2D(8, 3, strides=4, padding="same", activation="relu")(image)
    boxes = keras.layers.Reshape((256, 16), name="regressors")(keras.layers.Conv2D(16, 1, activation="sigmoid")(x))
    logits = keras.layers.Reshape((256, 1), name="classificators")(keras.layers.Conv2D(1, 1)(x))
    model = keras.Model(image, [boxes, logits])
    converter = _tf.tensorflow().lite.TFLiteConverter.from_keras_model(model)
    with _tf.quiet_native():
        content = converter.convert()
    path = tmp_path / "face_like.tflite"
    path.write_bytes(content)
    return path, model


def test_a_two_output_float_tflite_is_packaged_as_given_with_its_plugin(scenes, tmp_path):
    path, model = _two_output_tflite(tmp_path)
    with pytest.raises(ModelError, match="match no known head"):
        convert(path, profile="rpi5", out=tmp_path / "a")
    result = convert(path, profile="rpi5", out=tmp_path / "b", val=scenes["val"] / "images",
                     decoder="plugin:support.decoders.custom:anchors_and_scores")
    bundle = open_bundle(tmp_path / "b")
    assert bundle.manifest.precision.value == "fp32" and bundle.manifest.task.value == "custom"
    assert (tmp_path / "b" / "model.tflite").read_bytes() == path.read_bytes()
    # A .tflite's own output order is the source's order (this one lists the logits first).
    from edge_sdk.backends.litert import LiteRTEngine

    own = [s["name"] for s in LiteRTEngine(path).output_specs()]
    assert [o.name for o in bundle.manifest.outputs] == own
    assert sorted(o.shape for o in bundle.manifest.outputs) == [[1, 256, 1], [1, 256, 16]]
    assert all(f.sqnr_db == 999.0 and f.cosine == pytest.approx(1.0) for f in result.report.fidelity)

    # The runtime gives the plugin the outputs in the manifest's order, with the Keras model's values.
    engine = open_engine(bundle)
    x = np.random.default_rng(1).random((1, 64, 64, 3), dtype=np.float32)
    want = {np.asarray(w).shape[-1]: np.asarray(w) for w in model(x)}
    for got in engine.run([x]):
        np.testing.assert_allclose(got, want[got.shape[-1]], atol=1e-5)


def test_dynamic_onnx_converts_for_tflite_with_nhwc_input_and_no_loss(scenes, tmp_path):
    """The PyTorch/Ultralytics path into LiteRT: NCHW ONNX -> onnx2tf -> an NHWC .tflite."""
    path = onnx_detectors.yolov8_onnx_of_shipped_detector(tmp_path / "dyn.onnx", dynamic=True)
    result = convert(path, profile="rpi5", precision="fp32", out=tmp_path / "b", imgsz=160, val=scenes["val"])
    manifest = open_bundle(tmp_path / "b").manifest
    assert manifest.preprocessing.layout == "NHWC" and manifest.inputs[0].shape == [1, 160, 160, 3]
    assert manifest.outputs[0].shape == [1, 8, 400] and manifest.decoder.options["layout"] == "v8"
    accuracy = result.report.accuracy
    assert accuracy.reference.map50 > 0.9
    assert abs(accuracy.reference.map50_95 - accuracy.converted.map50_95) < 0.005


def test_split_onnx_for_tflite_keeps_boxes_and_scores_apart_in_the_source_order(scenes, tmp_path):
    path = onnx_detectors.split_head_onnx(tmp_path / "split.onnx")
    result = convert(path, profile="rpi5", precision="fp32", out=tmp_path / "b", val=scenes["val"])
    bundle = open_bundle(tmp_path / "b")
    assert bundle.manifest.decoder.options["layout"] == "split"
    assert bundle.manifest.decoder.options["boxes_output"] == 0
    # Both outputs are [1, 400, 4] (four classes): only values tell them apart, and the bundle must
    # hand the decoder the boxes first whatever order LiteRT lists them in.
    engine = open_engine(bundle)
    x = np.random.default_rng(2).random((1, 160, 160, 3), dtype=np.float32)
    boxes, scores = engine.run([x])
    assert boxes.max() > 2.0 and scores.max() <= 1.0  # pixel boxes, probabilities
    accuracy = result.report.accuracy
    assert abs(accuracy.reference.map50_95 - accuracy.converted.map50_95) < 0.005


def test_a_full_integer_tflite_from_elsewhere_goes_to_the_edge_tpu_as_given(digits, keras3_model, tmp_path):
    from edge_sdk.converters import models, tflite
    from edge_sdk.converters.data import load_calibration
    from edge_sdk.preprocess import Preprocessing
    from edge_sdk.profiles import IODtype, Precision

    spec = Preprocessing(width=32, height=32, channels=3)
    made = tflite.convert(models.load_model(keras3_model), precision=Precision.INT8, spec=spec,
                          calib=load_calibration(digits["calib"], spec, limit=100, minimum=50),
                          quant=tflite.QuantSettings(strict=True, io_dtype=IODtype.UINT8))
    path = tmp_path / "zoo_int8.tflite"
    path.write_bytes(made.content)
    result = convert(path, profile="coral-usb", compile=False, out=tmp_path / "b", val=digits["val"])
    bundle = open_bundle(tmp_path / "b")
    assert bundle.manifest.precision.value == "int8" and bundle.manifest.target.value == "edgetpu"
    assert (tmp_path / "b" / "model.tflite").read_bytes() == made.content
    assert result.report.edgetpu.precheck_passed
    assert result.report.accuracy.remedy_used == "as-given" and result.report.accuracy.converted.top1 > 0.9


def test_an_ssd_tflite_with_its_postprocess_op_is_recognised_and_needs_its_labels(tmp_path):
    from support.models.tflite_detectors import ssd_postprocess_model
    from test_decoders import SSD_ANCHORS, SSD_ENCODINGS, SSD_LABELS, SSD_SCORES

    path = tmp_path / "ssd.tflite"
    path.write_bytes(ssd_postprocess_model(encodings=SSD_ENCODINGS, class_scores=SSD_SCORES, anchors=SSD_ANCHORS,
                                           width=64, height=48))
    with pytest.raises(ModelError, match="ssd head whose class count.*--labels"):
        convert(path, profile="rpi5", out=tmp_path / "a")
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(SSD_LABELS) + "\n")
    result = convert(path, profile="rpi5", out=tmp_path / "b", labels=labels)
    manifest = open_bundle(tmp_path / "b").manifest
    assert manifest.decoder.kind == "ssd" and manifest.task.value == "detection"
    assert manifest.num_classes == len(SSD_LABELS) and manifest.precision.value == "fp32"
    assert result.report.head == "ssd" and result.report.source_format == "tflite"
