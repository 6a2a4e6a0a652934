"""Quantization-aware fine-tuning: the last remedy when post-training int8 cannot keep the budget.

tfmot inserts fake-quantization into a copy of the model, which is fine-tuned briefly on the
``--train`` images (cross-entropy on their labels, or distillation from the float model for a
detector, as pruning does), so the weights learn to live with int8 rounding. The TFLite converter
then turns the fake-quantized model into a real int8 one.

tfmot wraps tf-keras models only; NNCF's quantization-aware training needs PyTorch, which
edge-sdk does not install. Other sources are told so in the report instead.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

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
    if source.kind != "tf-keras":
        return (f"needs a tf-keras source (tfmot wraps tf-keras models only; this one is {source.kind}); NNCF's "
                "quantization-aware training needs PyTorch")
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
