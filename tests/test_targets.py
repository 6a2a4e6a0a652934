"""One behavioural template every target passes: convert -> inspect -> load in its engine -> agree.

Each subclass names a profile (and so a target) and how to open its engine here; the template
checks the bundle end to end against the float Keras model on the validation images.
"""

from __future__ import annotations

import numpy as np
import pytest

from edge_sdk.backends import open_engine
from edge_sdk.bundle import open_bundle
from edge_sdk.cli import main
from edge_sdk.converters import convert, evaluate, models
from edge_sdk.converters.data import load_labelled
from support.digits import model_inputs

pytestmark = pytest.mark.slow


class TargetTemplate:
    profile: str
    precision: str | None = None
    engine_options: dict = {}
    convert_options: dict = {}
    min_agreement = 0.97
    model_fixture = "keras3_model"

    def _convert(self, model, digits, out):
        return convert(model, profile=self.profile, out=out, calib=digits["calib"], val=digits["val"],
                       precision=self.precision, **self.convert_options)

    def test_convert_inspect_run_and_agree_with_the_reference(self, digits, tmp_path, request, capsys):
        model = request.getfixturevalue(self.model_fixture)
        out = tmp_path / "bundle"
        result = self._convert(model, digits, out)
        assert main(["inspect", str(out)]) == 0
        assert "every file matches its sha256" in capsys.readouterr().out

        bundle = open_bundle(out)
        assert bundle.manifest.target.value == self.target
        engine = open_engine(bundle, **self.engine_options)
        val = load_labelled(digits["val"], bundle.manifest.preprocessing, what="val")
        converted = evaluate.engine_predictions(engine, val, bundle.manifest.preprocessing)
        reference = np.argmax(models.load_model(model).predict(_inputs_for(bundle, val))[0], axis=-1)
        agreement = float(np.mean(converted == reference))
        assert agreement >= self.min_agreement
        # What the report claims is what the engine does.
        assert abs(result.report.accuracy.agreement - agreement) < 1e-9
        assert result.report.accuracy.drop_points <= 1.0
        self.check_report(result.report, bundle)

    def check_report(self, report, bundle) -> None:
        pass


def _inputs_for(bundle, val):
    return np.concatenate(list(val.batches(bundle.manifest.preprocessing, size=64)))


class TestTFLiteFloatIO(TargetTemplate):
    profile, target = "x86-cpu", "tflite"


class TestTFLiteUint8IO(TargetTemplate):
    profile, target = "rpi4", "tflite"

    def check_report(self, report, bundle):
        assert bundle.manifest.inputs[0].dtype.value == "uint8"


class TestOpenVINOInt8(TargetTemplate):
    profile, target = "intel-cpu", "openvino"

    def check_report(self, report, bundle):
        assert report.openvino.weights == "int8" and report.openvino.method == "nncf.quantize"
        assert report.quantization.float_ops == []  # every weighted op has a quantized input
        assert report.converted_bytes <= 0.35 * report.float_bytes
        assert {f.path for f in bundle.manifest.files} >= {"model.xml", "model.bin"}


class TestOpenVINOFP16OnGPUProfile(TargetTemplate):
    # The intel-gpu bundle records GPU for the device; this machine has only a CPU to check it on.
    profile, target = "intel-gpu", "openvino"
    engine_options = {"device": "CPU"}

    def check_report(self, report, bundle):
        assert report.openvino.weights == "fp16" and report.openvino.device == "GPU"
        assert bundle.manifest.profile.device == "GPU"
        assert 0.4 * report.float_bytes <= report.converted_bytes <= 0.6 * report.float_bytes


class TestOpenVINOWeightCompression(TargetTemplate):
    profile, target, precision = "intel-cpu", "openvino", "dynamic"

    def check_report(self, report, bundle):
        assert report.openvino.method == "nncf.compress_weights" and report.openvino.weights == "int8"
        assert report.converted_bytes <= 0.35 * report.float_bytes


class TestOpenVINOFromTFLiteFile(TargetTemplate):
    profile, target = "intel-cpu", "openvino"

    def _convert(self, model, digits, out):
        source = models.load_model(model)
        path = out.parent / "float.tflite"
        path.write_bytes(models.float_tflite(source, _spec()))
        result = convert(path, profile=self.profile, out=out, calib=digits["calib"], val=digits["val"])
        assert result.report.source_format == "tflite"
        return result


def _spec():
    from edge_sdk.preprocess import Preprocessing

    return Preprocessing(width=32, height=32, channels=3)


def test_onnx_nchw_model_converts_for_openvino(digits, tmp_path):
    from support.models.onnx_classifier import train_small_cnn, write_onnx

    keras_model = train_small_cnn(digits, model_inputs)
    path = write_onnx(keras_model, tmp_path / "digits.onnx")
    source = models.load_model(path)
    assert source.kind == "onnx" and source.layout == "NCHW" and source.input_shape == (32, 32, 3)
    x = model_inputs(digits["images"][digits["val_idx"][:32]])
    np.testing.assert_allclose(source.predict(np.transpose(x, (0, 3, 1, 2)))[0], np.asarray(keras_model(x)), atol=1e-4)

    result = convert(path, profile="intel-cpu", out=tmp_path / "b", calib=digits["calib"], val=digits["val"])
    manifest = open_bundle(tmp_path / "b").manifest
    assert manifest.preprocessing.layout == "NCHW"
    assert result.report.accuracy.reference.top1 > 0.85
    assert result.report.accuracy.drop_points <= 1.0


@pytest.fixture(scope="module")
def onnx_classifier(digits, tmp_path_factory):
    """The digits CNN written as an NCHW ONNX file, as PyTorch exports one."""
    from support.models.onnx_classifier import train_small_cnn, write_onnx

    return write_onnx(train_small_cnn(digits, model_inputs), tmp_path_factory.mktemp("onnx-clf") / "digits.onnx")


class TestONNXRuntimeInt8(TargetTemplate):
    profile, target = "x86-onnx", "onnx"
    model_fixture = "onnx_classifier"

    def check_report(self, report, bundle) -> None:
        assert bundle.manifest.model_file == "model.onnx" and bundle.manifest.preprocessing.layout == "NCHW"
        assert report.quantization.per_channel and report.quantization.decode is None
        assert report.converted_bytes < report.float_bytes / 2.5


class TestONNXRuntimeFP16(TargetTemplate):
    profile, target, precision = "x86-onnx", "onnx", "fp16"
    model_fixture = "onnx_classifier"


class TestEdgeTPUUncompiled(TargetTemplate):
    # No Edge TPU compiler or stick can exist here: the bundle holds the Edge-TPU-ready model,
    # and its engine runs it through the opt-in CPU fallback.
    profile, target = "coral-usb", "edgetpu"
    convert_options = {"compile": False}
    engine_options = {"cpu_fallback": True}

    def check_report(self, report, bundle):
        assert report.edgetpu.compiled is False and report.edgetpu.precheck_passed
        assert bundle.manifest.model_file == "model.tflite"
        assert bundle.manifest.inputs[0].dtype.value == "uint8"
        assert report.quantization.float_ops == []


class TestEdgeTPUWithFakeCompiler(TargetTemplate):
    # The FAKE compiler (tests/test_edgetpu.py) writes the documented log and copies the model,
    # so the compiled file is the Edge-TPU-ready one and the CPU fallback can run it here.
    profile, target = "coral-devboard", "edgetpu"
    engine_options = {"cpu_fallback": True}

    def _convert(self, model, digits, out):
        from test_edgetpu import FULL_LOG, FULL_STDOUT, fake_compiler

        compiler = fake_compiler(out.parent / "bin", "pass", FULL_STDOUT, FULL_LOG)
        return convert(model, profile=self.profile, out=out, calib=digits["calib"], val=digits["val"],
                       edgetpu_compiler=compiler)

    def check_report(self, report, bundle):
        assert report.edgetpu.compiled and report.edgetpu.ops_on_cpu == 0
        assert bundle.manifest.model_file == "model_edgetpu.tflite"
        assert {f.path: f.role for f in bundle.manifest.files}["model.tflite"] == "artifact"


def test_edgetpu_without_compiler_is_one_line_exit_2(keras3_model, digits, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    rc = main(["convert", str(keras3_model), "--profile", "coral-usb", "--out", str(tmp_path / "b"),
               "--calib", str(digits["calib"])])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "edgetpu_compiler" in err[0] and "--no-compile" in err[0]
    assert not (tmp_path / "b").exists()


def test_edgetpu_precheck_failure_names_the_op(digits, tmp_path):
    from edge_sdk.converters import _tf
    from edge_sdk.errors import ConversionError

    keras = _tf.keras3()
    inp = keras.Input((32, 32, 3))
    h = keras.layers.LeakyReLU()(keras.layers.Conv2D(8, 3)(inp))  # int8 in TFLite, not on Coral's list
    model = keras.Model(inp, keras.layers.Dense(10, activation="softmax")(keras.layers.GlobalAveragePooling2D()(h)))
    with pytest.raises(ConversionError, match="LEAKY_RELU"):
        convert(model, profile="coral-usb", out=tmp_path / "b", calib=digits["calib"], compile=False)
    assert not (tmp_path / "b").exists()
    # With a threshold below 100 % the user accepts CPU ops: the bundle is written and the report says why.
    result = convert(model, profile="coral-usb", out=tmp_path / "c", calib=digits["calib"], compile=False, min_tpu_ops=0.5)
    issues = result.report.edgetpu.precheck
    assert not result.report.edgetpu.precheck_passed
    assert any(issue.rule == "supported-ops" and any("LEAKY_RELU" in op for op in issue.ops) for issue in issues)


def test_openvino_collapse_is_fixed_by_nncf_remedies(keras3_model, digits, tmp_path):
    from test_convert import _spiky_model

    result = convert(_spiky_model(keras3_model, 20000.0), profile="intel-cpu", out=tmp_path / "b",
                     calib=digits["calib"], val=digits["val"], name="spiky")
    accuracy = result.report.accuracy
    names = [r.name for r in accuracy.remedies]
    assert names[0] == "baseline" and accuracy.remedies[0].top1 < accuracy.reference.top1 - 0.05
    assert accuracy.within_budget
    assert accuracy.remedy_used in ("ignored-scope", "accuracy-control")
    assert result.report.openvino.ignored_scope, "the report must name the layers kept in float"
    assert result.report.quantization.float_ops


def test_openvino_refuses_per_tensor(keras3_model, digits, tmp_path):
    from edge_sdk.errors import ConversionError

    with pytest.raises(ConversionError, match="--per-tensor applies to TFLite"):
        convert(keras3_model, profile="intel-cpu", out=tmp_path / "b", calib=digits["calib"], per_channel=False)
    assert not (tmp_path / "b").exists()
