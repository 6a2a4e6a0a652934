"""Quantization-aware fine-tuning: the last remedy when post-training int8 cannot keep the budget.

A copy of the model is fine-tuned briefly on the ``--train`` images (cross-entropy on their
labels, or distillation from the float model for a detector, as pruning does) while it computes
with int8 rounding, so the weights learn to live with it; the TFLite converter then makes the
int8 model as usual.

* tf-keras models: tfmot's fake quantization of weights and activations, with the activation
  ranges started from the float model's.
* Keras 3 models (tfmot cannot wrap them): every convolution and dense kernel is rounded to its
  per-channel int8 grid for each step's forward and backward pass, and the step's update is
  applied to the float weights (the straight-through estimator); activations are calibrated
  afterwards, as in post-training quantization.

NNCF's quantization-aware training needs PyTorch, which edge-sdk does not install, and a plain
SavedModel, ONNX or .tflite cannot be fine-tuned here: those sources are told so in the report.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edge_sdk.converters import _tf
from edge_sdk.converters.data import ImageSet
from edge_sdk.converters.models import SourceModel
from edge_sdk.converters.pruning import objective_for, progress_callback
from edge_sdk.errors import ConversionError
from edge_sdk.preprocess import Preprocessing

ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class QATSettings:
    epochs: int = 2
    batch_size: int = 32
    learning_rate: float = 1e-5
    seed: int = 0


def unsupported_reason(source: SourceModel) -> str | None:
    """Why ``source`` cannot be fine-tuned with fake quantization here, or None when it can."""
    if not source.is_keras:
        return (f"needs a Keras source to fine-tune (this one is {source.kind}); NNCF's quantization-aware "
                "training needs PyTorch")
    if len(source.output_shapes) != 1:
        return "fine-tunes single-output models only"
    return None


def _start_ranges_from_float(aware, model, train: ImageSet, spec: Preprocessing, *, images: int = 256) -> None:
    """Set every activation quantizer's range to what the float model shows on training images.

    tfmot starts activation ranges at [-6, 6] and moves them by an exponential average (decay
    0.999): a fine-tuning of a few hundred steps would end with ranges still near that guess, so
    a ReLU reaching 20 is clamped at 6. Starting from measured ranges is what post-training
    calibration does, and fine-tuning then only has to adapt the weights.
    """
    from edge_sdk.preprocess import normalize

    tfk = _tf.tf_keras()
    batch = normalize(train.images[: min(images, len(train))], spec)
    # Layers fed by several tensors (Add, Concatenate) keep tfmot's own start; they have no kernel to fit.
    wrappers = [w for w in aware.layers if hasattr(w, "layer") and not isinstance(model.get_layer(w.layer.name).input, list)]
    probe = tfk.Model(model.inputs, [model.get_layer(w.layer.name).input for w in wrappers])
    inputs = probe(batch, training=False)
    inputs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
    for wrapper, layer_input in zip(wrappers, inputs):
        layer = model.get_layer(wrapper.layer.name)
        activated = layer(layer_input)
        linear = activated
        if getattr(layer, "activation", None) is not None:
            saved, layer.activation = layer.activation, tfk.activations.linear
            try:
                linear = layer(layer_input)
            finally:
                layer.activation = saved
        for variable in wrapper.weights:
            stage = variable.name.rsplit("/", 1)[-1].split(":")[0]
            values = {"post_activation": activated, "pre_activation": linear}.get(stage.rsplit("_", 1)[0])
            if values is not None and stage.endswith(("_min", "_max")):
                bound = float(min(0.0, _tf.tensorflow().reduce_min(values))) if stage.endswith("_min") else \
                    float(max(0.0, _tf.tensorflow().reduce_max(values)))
                variable.assign(bound)
    for layer in aware.layers:
        for variable in layer.weights:
            if variable.name.endswith(("quantize_layer_min:0", "quantize_layer_max:0")):
                variable.assign(float(batch.min()) if "_min" in variable.name else float(batch.max()))


def quantization_aware(
    source: SourceModel, train: ImageSet, spec: Preprocessing, settings: QATSettings = QATSettings(), *,
    progress: ProgressFn | None = None,
) -> SourceModel:
    """A copy of ``source`` with fake quantization, fine-tuned on ``train``; convert it to int8 as usual."""
    reason = unsupported_reason(source)
    if reason is not None:
        raise ConversionError(f"quantization-aware fine-tuning {reason}")
    if len(train) < settings.batch_size:
        raise ConversionError(f"--train has {len(train)} images; quantization-aware fine-tuning needs at least {settings.batch_size}")
    if source.kind != "tf-keras":
        return dataclasses.replace(source, model=_rounded_weights_keras3(source, train, spec, settings, progress),
                                   path=None, _batch_of_one=None)
    tfk, tfmot = _tf.tf_keras(), _tf.tfmot()
    tfk.utils.set_random_seed(settings.seed)
    objective = objective_for(source, train, spec)
    clone = tfk.models.clone_model(source.model)
    clone.set_weights(source.model.get_weights())
    try:
        aware = tfmot.quantization.keras.quantize_model(clone)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise ConversionError(f"tfmot cannot quantize model {source.name}: {str(exc).splitlines()[0][:200]}") from exc
    _start_ranges_from_float(aware, source.model, train, spec)
    steps = max(1, len(train) // settings.batch_size)
    aware.compile(optimizer=tfk.optimizers.Adam(settings.learning_rate), loss=objective.loss(tfk.losses))
    from edge_sdk.converters.pruning import PruneSettings

    batches = objective.batches(train, spec, PruneSettings(sparsity=0.0, epochs=settings.epochs,
                                                           batch_size=settings.batch_size, seed=settings.seed))
    aware.fit(batches, steps_per_epoch=steps, epochs=settings.epochs, verbose=0,
              callbacks=[progress_callback(tfk.callbacks.Callback, steps * settings.epochs, progress)])
    return dataclasses.replace(source, model=aware, path=None, _batch_of_one=None)


def _reduced_axes(layer_type: str, weight_name: str, ndim: int) -> tuple[int, ...]:
    """The axes a kernel's per-channel scale spans: all but its output channels."""
    if layer_type == "DepthwiseConv2D" or "depthwise" in weight_name:
        return (0, 1)  # [h, w, channels, multiplier]
    if layer_type == "Conv2DTranspose":
        return (0, 1, 3)  # [h, w, out, in]
    return tuple(range(ndim - 1))


def _int8_grid(values: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """``values`` rounded to symmetric per-channel int8, as TFLite quantizes kernels."""
    scale = np.max(np.abs(values), axis=axes, keepdims=True) / 127.0
    scale = np.where(scale > 0, scale, 1.0)
    return (np.clip(np.round(values / scale), -127, 127) * scale).astype(values.dtype)


def _rounded_weights_keras3(source: SourceModel, train: ImageSet, spec: Preprocessing, settings: QATSettings,
                            progress: ProgressFn | None):
    """A Keras 3 copy fine-tuned with its kernels on the int8 grid (straight-through updates)."""
    from edge_sdk.converters.pruning import PruneSettings, prunable_kernels

    keras = _tf.keras3()
    keras.utils.set_random_seed(settings.seed)
    objective = objective_for(source, train, spec)
    model = keras.models.clone_model(source.model)
    model.set_weights(source.model.get_weights())
    kernels = [(weight, _reduced_axes(type(model.get_layer(name)).__name__, weight.name, len(weight.shape)))
               for name, weight in prunable_kernels(model)]

    class RoundedWeights(keras.callbacks.Callback):
        """Forward and backward on the rounded kernels; the update lands on the float ones."""

        def on_train_batch_begin(self, batch, logs=None):
            self.exact = [np.asarray(weight.numpy()) for weight, _ in kernels]
            self.rounded = [_int8_grid(values, axes) for values, (_, axes) in zip(self.exact, kernels)]
            for (weight, _), rounded in zip(kernels, self.rounded):
                weight.assign(rounded)

        def on_train_batch_end(self, batch, logs=None):
            for (weight, _), exact, rounded in zip(kernels, self.exact, self.rounded):
                weight.assign(exact + (np.asarray(weight.numpy()) - rounded))

    steps = max(1, len(train) // settings.batch_size)
    model.compile(optimizer=keras.optimizers.Adam(settings.learning_rate), loss=objective.loss(keras.losses))
    batches = objective.batches(train, spec, PruneSettings(sparsity=0.0, epochs=settings.epochs,
                                                           batch_size=settings.batch_size, seed=settings.seed))
    model.fit(batches, steps_per_epoch=steps, epochs=settings.epochs, verbose=0,
              callbacks=[RoundedWeights(), progress_callback(keras.callbacks.Callback, steps * settings.epochs, progress)])
    return model
