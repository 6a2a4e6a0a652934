"""edge-sdk convert on real TensorFlow with a classifier trained on real digits images."""

from __future__ import annotations

import numpy as np
import pytest

from edge_sdk.backends.litert import LiteRTEngine
from edge_sdk.bundle import open_bundle
from edge_sdk.converters import convert
from edge_sdk.errors import AccuracyBudgetError, ConversionError
from edge_sdk.preprocess import quantize
from support import snapshot

pytestmark = pytest.mark.slow


def test_int8_keeps_accuracy_shrinks_file_and_uses_the_profiles_uint8_io(keras3_model, digits, tmp_path):
    result = convert(keras3_model, profile="rpi4", out=tmp_path / "b", calib=digits["calib"], val=digits["val"])
    report = result.report
    assert report.parameters >= 100_000
    assert report.accuracy.reference.top1 > 0.9, "the test model itself must be good for the check to mean anything"
    assert report.accuracy.drop_points <= 1.0
    assert report.accuracy.agreement >= 0.97
    assert report.converted_bytes <= 0.30 * report.float_bytes
    assert report.quantization.float_ops == []

    bundle = open_bundle(tmp_path / "b")
    assert bundle.manifest.inputs[0].dtype.value == "uint8"
    assert bundle.manifest.outputs[0].dtype.value == "uint8"
    assert bundle.labels() == [f"digit{i}" for i in range(10)]
    assert (tmp_path / "b" / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The model in the bundle really runs in LiteRT with integer input.
    engine = LiteRTEngine(bundle.model_path)
    spec = engine.input_specs()[0]
    assert spec["dtype"] == np.uint8
    scale, zero = spec["quantization"]
    x = quantize(np.zeros((1, 32, 32, 3), np.float32), scale=scale, zero_point=zero, dtype=np.uint8)
    assert engine.run([x])[0].shape == (1, 10)


@pytest.mark.parametrize(("profile", "dtype"), [("x86-cpu", "float32"), ("int8-io", "int8")])
def test_io_dtype_follows_the_profile(keras3_model, digits, tmp_path, profile, dtype):
    if profile == "int8-io":
        profile = tmp_path / "board.yaml"
        profile.write_text(
            "name: board\ntitle: A board\ntarget: tflite\nprecision: int8\nio_dtype: int8\n"
            "threads: 1\nmax_input_size: 64\nmemory_budget_mb: 64\n"
        )
    convert(keras3_model, profile=profile, out=tmp_path / "b", calib=digits["calib"])
    manifest = open_bundle(tmp_path / "b").manifest
    assert manifest.inputs[0].dtype.value == dtype
    assert manifest.outputs[0].dtype.value == dtype
    assert manifest.profile.io_dtype.value == dtype


@pytest.mark.parametrize("fixture", ["keras3_model", "tfkeras_model"])
def test_half_pruning_reaches_the_sparsity_within_two_points(fixture, digits, tmp_path, request):
    model = request.getfixturevalue(fixture)
    result = convert(
        model, profile="x86-cpu", out=tmp_path / "b", calib=digits["calib"], val=digits["val"],
        train=digits["train"], prune=0.5, epochs=2,
    )
    report = result.report
    assert report.sparsity.method == ("edge-sdk" if fixture == "keras3_model" else "tfmot")
    assert report.sparsity.prunable >= 0.49
    assert all(value >= 0.49 for value in report.sparsity.layers.values()), report.sparsity.layers
    assert report.accuracy.original is not None
    assert report.accuracy.pruning_drop_points <= 2.0
    assert 100 * (report.accuracy.original.top1 - report.accuracy.converted.top1) <= 2.0
    # Pruning shows where it should: the int8 file compresses better than the unpruned one would.
    assert report.converted_gzip_bytes < 0.8 * report.converted_bytes


def test_tf_keras_and_keras3_files_both_convert(keras3_model, tfkeras_model, digits, tmp_path):
    for i, model in enumerate((keras3_model, tfkeras_model)):
        result = convert(model, profile="x86-cpu", out=tmp_path / f"b{i}", calib=digits["calib"], val=digits["val"])
        assert result.report.source_format == ("keras3" if i == 0 else "tf-keras")
        assert result.report.accuracy.drop_points <= 1.0


def test_savedmodel_converts_but_cannot_be_pruned(keras3_model, digits, tmp_path):
    from edge_sdk.converters import _tf

    saved = tmp_path / "saved"
    _tf.keras3().saving.load_model(keras3_model).export(saved)
    result = convert(saved, profile="x86-cpu", out=tmp_path / "b", calib=digits["calib"], val=digits["val"])
    assert result.report.source_format == "savedmodel"
    assert result.report.accuracy.drop_points <= 1.0
    with pytest.raises(ConversionError, match="cannot be fine-tuned"):
        convert(saved, profile="x86-cpu", out=tmp_path / "c", calib=digits["calib"], train=digits["train"], prune=0.5)
    assert not (tmp_path / "c").exists()


def test_other_precisions(keras3_model, digits, tmp_path):
    sizes = {}
    for precision in ("fp32", "fp16", "dynamic"):
        result = convert(keras3_model, profile="x86-cpu", out=tmp_path / precision, precision=precision, val=digits["val"])
        assert open_bundle(tmp_path / precision).manifest.precision.value == precision
        assert result.report.accuracy.drop_points <= 1.0
        sizes[precision] = result.report.converted_bytes
    assert sizes["fp16"] < 0.6 * sizes["fp32"]
    assert sizes["dynamic"] < 0.35 * sizes["fp32"]


def _spiky_model(keras3_model, spike: float):
    """The digits model with an extra activation whose one constant channel is huge.

    That one channel sets the int8 range of the whole tensor, so every useful channel rounds to
    zero: the classic activation-outlier collapse that per-channel weights and more calibration
    data cannot fix, and keeping the layer in float can.
    """
    from edge_sdk.converters import _tf

    keras = _tf.keras3()
    base = keras.saving.load_model(keras3_model)
    features = base.layers[-2].output
    n = features.shape[-1]
    spike_layer = keras.layers.Dense(n + 1, activation="relu", name="spike")
    head = keras.layers.Dense(10, activation="softmax", name="head")
    model = keras.Model(base.inputs, head(spike_layer(features)))
    weights = np.zeros((n, n + 1), np.float32)
    weights[:, :n] = np.eye(n)
    bias = np.zeros(n + 1, np.float32)
    bias[n] = spike
    spike_layer.set_weights([weights, bias])
    w, b = base.layers[-1].get_weights()
    head.set_weights([np.vstack([w, np.zeros((1, 10), np.float32)]), b])
    return model


def test_accuracy_collapse_is_diagnosed_and_fixed_by_keeping_the_damaged_layer_float(keras3_model, digits, tmp_path):
    model = _spiky_model(keras3_model, 20000.0)
    result = convert(model, profile="x86-cpu", out=tmp_path / "b", calib=digits["calib"], val=digits["val"], name="spiky")
    accuracy = result.report.accuracy
    remedies = {r.name: r for r in accuracy.remedies}
    assert remedies["baseline"].top1 < accuracy.reference.top1 - 0.05, "the baseline must really collapse"
    assert accuracy.remedy_used == "float-fallback"
    assert accuracy.within_budget
    assert any("spike" in name for name in result.report.quantization.float_layers)
    assert "spike" in remedies["float-fallback"].note


def test_over_budget_fails_writes_nothing_and_reports_every_remedy(keras3_model, digits, tmp_path):
    strict = tmp_path / "strict.yaml"
    strict.write_text(
        "name: strict\ntitle: Integer-only board\ntarget: tflite\nprecision: int8\nio_dtype: int8\n"
        "require_full_integer: true\nthreads: 1\nmax_input_size: 64\nmemory_budget_mb: 64\n"
    )
    out = tmp_path / "b"
    with pytest.raises(AccuracyBudgetError, match="over the budget") as caught:
        convert(_spiky_model(keras3_model, 20000.0), profile=strict, out=out, calib=digits["calib"], val=digits["val"])
    assert not out.exists()
    names = [r.name for r in caught.value.report.accuracy.remedies]
    assert names[0] == "baseline" and "larger-calibration" in names and "float-fallback" in names
    fallback = next(r for r in caught.value.report.accuracy.remedies if r.name == "float-fallback")
    assert "not allowed" in fallback.note


def test_full_integer_profile_names_the_op_that_stays_float(digits, tmp_path):
    from edge_sdk.converters import _tf

    keras, tf = _tf.keras3(), _tf.tensorflow()
    inp = keras.Input((32, 32, 3))
    h = keras.layers.Conv2D(8, 3)(inp)
    h = keras.layers.Lambda(tf.math.atan)(h)  # TFLite has no integer (or any builtin) kernel for atan
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inp, keras.layers.Dense(10, activation="softmax")(h))
    strict = tmp_path / "strict.yaml"
    strict.write_text(
        "name: strict\ntitle: Integer-only board\ntarget: tflite\nprecision: int8\nio_dtype: uint8\n"
        "require_full_integer: true\nthreads: 1\nmax_input_size: 64\nmemory_budget_mb: 64\n"
    )
    with pytest.raises(ConversionError, match="Atan"):
        convert(model, profile=strict, out=tmp_path / "b", calib=digits["calib"])
    assert not (tmp_path / "b").exists()


def test_reconverting_into_an_old_bundle_replaces_it(keras3_model, digits, tmp_path):
    out = tmp_path / "b"
    convert(keras3_model, profile="x86-cpu", out=out, precision="fp32")
    first = open_bundle(out).manifest
    convert(keras3_model, profile="x86-cpu", out=out, calib=digits["calib"])
    second = open_bundle(out).manifest
    assert (first.precision.value, second.precision.value) == ("fp32", "int8")
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []
    assert snapshot(out)  # a complete bundle is there
