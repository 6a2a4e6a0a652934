"""Quantization-aware fine-tuning, the last remedy of the int8 ladder when --train is given."""

from __future__ import annotations

import numpy as np
import pytest

from edge_sdk.backends.litert import LiteRTEngine
from edge_sdk.converters import models, qat, tflite
from edge_sdk.converters.data import load_calibration, load_labelled
from edge_sdk.converters.evaluate import engine_predictions
from edge_sdk.preprocess import Preprocessing
from edge_sdk.profiles import Precision

pytestmark = pytest.mark.slow
SPEC = Preprocessing(width=32, height=32, channels=3)


def _tune_and_score(model_path, digits):
    """The source, its fine-tuned copy, the copy's int8 model, and top-1 of float source and int8 copy."""
    source = models.load_model(model_path)
    val = load_labelled(digits["val"], SPEC, what="--val")
    tuned = qat.quantization_aware(source, load_labelled(digits["train"], SPEC, what="--train"), SPEC,
                                   qat.QATSettings(epochs=1))
    model = tflite.convert(tuned, precision=Precision.INT8, spec=SPEC,
                           calib=load_calibration(digits["calib"], SPEC, limit=100, minimum=50))
    top1 = float(np.mean(engine_predictions(LiteRTEngine(model.content), val, SPEC) == val.labels))
    reference = np.concatenate([np.argmax(source.predict(b)[0], axis=-1) for b in val.batches(SPEC, size=64)])
    return source, tuned, model, float(np.mean(reference == val.labels)), top1


def test_fake_quantized_fine_tuning_gives_an_int8_model_as_accurate_as_float(tfkeras_model, digits):
    source, aware, model, ref_top1, top1 = _tune_and_score(tfkeras_model, digits)
    assert aware.model is not source.model and aware.kind == "tf-keras"
    assert not model.float_ops  # int8 all through, I/O quantize and dequantize aside
    assert ref_top1 > 0.9
    assert top1 >= ref_top1 - 0.015


def test_keras3_fine_tuning_on_the_int8_grid_keeps_int8_as_accurate_as_float(keras3_model, digits):
    source, tuned, _, ref_top1, top1 = _tune_and_score(keras3_model, digits)
    assert tuned.kind == "keras3" and tuned.model is not source.model
    changed = [not np.array_equal(a, b) for a, b in zip(tuned.model.get_weights(), source.model.get_weights())]
    assert any(changed)  # fine-tuned, and the weights stay float (not snapped to the grid)
    kernels = [w for w in tuned.model.get_weights() if w.ndim == 4]
    assert not all(np.allclose(k, qat._int8_grid(k, (0, 1, 2))) for k in kernels)
    assert top1 >= ref_top1 - 0.015


def test_sources_that_cannot_be_fine_tuned_are_told_why(tmp_path):
    from support.models import onnx_detectors

    reason = qat.unsupported_reason(models.load_model(onnx_detectors.classifier_onnx(tmp_path / "c.onnx")))
    assert reason is not None and "Keras source" in reason and "PyTorch" in reason


def _ladder_job(model_path, digits, profile: str):
    """The job convert() would build, with --train given, to run a target's whole ladder."""
    from edge_sdk.converters.targets import Job, TargetOptions
    from edge_sdk.profiles import load_profile

    source = models.load_model(model_path)
    return Job(
        source=source, float_tflite=models.float_tflite(source, SPEC), spec=SPEC, device=load_profile(profile),
        precision=Precision.INT8, calib_set=load_calibration(digits["calib"], SPEC, limit=100, minimum=50),
        calib_path=None, calib_limit=100, min_calib=50, val_set=load_labelled(digits["val"], SPEC, what="--val"),
        reference_score=None, max_drop=0.0, per_channel=True, options=TargetOptions(),
        train_set=load_labelled(digits["train"], SPEC, what="--train"),
    )


def test_the_ladder_ends_with_quantization_aware_fine_tuning(tfkeras_model, digits):
    """Every attempt of the TFLite ladder, run to its end (convert() stops at the first within budget)."""
    from edge_sdk.converters.tflite import TFLiteTarget

    job = _ladder_job(tfkeras_model, digits, "rpi4")
    attempts = list(TFLiteTarget().attempts(job))
    assert [a.name for a in attempts][-1] == "quantization-aware"
    last = attempts[-1]
    assert not last.failed and last.metrics.top1 > 0.9
    assert "fine-tuned" in last.note and str(len(job.train_set)) in last.note

    job.train_set = None
    assert list(TFLiteTarget().attempts(job))[-1].note == "skipped: needs --train images to fine-tune on"


def test_openvino_ends_its_ladder_with_the_fine_tuned_keras_model(keras3_model, digits):
    from edge_sdk.converters.openvino import OpenVINOTarget

    last = list(OpenVINOTarget().attempts(_ladder_job(keras3_model, digits, "intel-cpu")))[-1]
    assert last.name == "quantization-aware" and not last.failed, last.note
    assert last.metrics.top1 > 0.9 and "nncf.quantize" in last.note
