"""Magnitude pruning with a polynomial schedule, fine-tuned on the user's training images.

Classifiers fine-tune on their labels; detectors (and any model given images without labels)
fine-tune towards the unpruned model's own outputs (distillation).

tf-keras models go through tensorflow-model-optimization. tfmot cannot wrap Keras 3 models, and
tf-keras cannot load Keras 3 files, so Keras 3 models go through a small implementation of the same
schedule here: every ``frequency`` steps between ``begin_step`` and ``end_step`` the smallest-magnitude
weights of each prunable kernel are masked to reach ``s_t = s_f + (s_i - s_f) * (1 - t)**3``, and the
mask is re-applied after every training step.
"""

from __future__ import annotations

import dataclasses

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from edge_sdk.converters import _tf
from edge_sdk.converters.data import ImageSet
from edge_sdk.converters.models import SourceModel
from edge_sdk.errors import ConversionError
from edge_sdk.preprocess import Preprocessing
from edge_sdk.report import Sparsity

PRUNABLE_LAYERS = frozenset(
    {"Dense", "Conv1D", "Conv2D", "Conv3D", "DepthwiseConv2D", "SeparableConv2D", "Conv2DTranspose"}
)
ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class PruneSettings:
    sparsity: float
    epochs: int
    batch_size: int = 32
    learning_rate: float = 1e-4
    power: int = 3
    # Reach the final sparsity after this share of the steps; the rest fine-tunes with masks fixed.
    ramp_fraction: float = 0.7
    seed: int = 0


def _all_layers(model) -> Iterator:
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def prunable_kernels(model) -> list[tuple[str, object]]:
    """(layer name, kernel variable) for every kernel that magnitude pruning targets."""
    found = []
    for layer in _all_layers(model):
        if type(layer).__name__ not in PRUNABLE_LAYERS:
            continue
        for weight in layer.trainable_weights:
            if "kernel" in weight.name.split("/")[-1]:
                found.append((layer.name, weight))
    return found


def measure_sparsity(model, *, target: float, method: str, epochs: int) -> Sparsity:
    kernels = prunable_kernels(model)
    per_layer: dict[str, float] = {}
    zeros = total = 0
    for layer_name, weight in kernels:
        values = np.asarray(weight.numpy())
        layer_zeros = int(np.count_nonzero(values == 0))
        key = layer_name if layer_name not in per_layer else f"{layer_name}/{weight.name}"
        per_layer[key] = layer_zeros / values.size
        zeros += layer_zeros
        total += values.size
    all_zero = sum(int(np.count_nonzero(np.asarray(w.numpy()) == 0)) for w in model.weights)
    all_total = sum(int(np.prod(w.shape)) for w in model.weights)
    return Sparsity(
        target=target,
        prunable=zeros / total if total else 0.0,
        overall=all_zero / all_total if all_total else 0.0,
        layers=per_layer,
        method=method,
        epochs=epochs,
    )


def polynomial_sparsity(step: int, *, final: float, begin: int, end: int, power: int, initial: float = 0.0) -> float:
    """tfmot's PolynomialDecay: the sparsity target at ``step``."""
    if step <= begin:
        return initial
    progress = min(1.0, (step - begin) / max(1, end - begin))
    return final + (initial - final) * (1.0 - progress) ** power


def _training_batches(train: ImageSet, spec: Preprocessing, *, batch_size: int, seed: int,
                      teacher: SourceModel | None = None) -> Iterator:
    """Batches of (images, labels), or with a ``teacher``, (images, the teacher's outputs on them)."""
    rng = np.random.default_rng(seed)
    from edge_sdk.preprocess import normalize

    while True:
        order = rng.permutation(len(train))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            idx = order[start : start + batch_size]
            x = normalize(train.images[idx], spec)
            yield x, (teacher.predict(x)[0] if teacher is not None else train.labels[idx])


def _outputs_are_probabilities(source: SourceModel, train: ImageSet, spec: Preprocessing) -> bool:
    sample = next(train.batches(spec, size=32))
    out = source.predict(sample)[0]
    return bool(np.all(out >= 0) and np.allclose(out.sum(axis=-1), 1.0, atol=1e-3))


def _schedule(train: ImageSet, settings: PruneSettings) -> tuple[int, int, int]:
    steps_per_epoch = max(1, len(train) // settings.batch_size)
    total = steps_per_epoch * settings.epochs
    end = max(1, int(total * settings.ramp_fraction))
    frequency = max(1, min(100, end // 10))
    return steps_per_epoch, end, frequency


def objective_for(source: SourceModel, train: ImageSet, spec: Preprocessing) -> Objective:
    """What fine-tuning ``source`` on ``train`` minimises.

    Without class labels (a detector), the fine-tuned copy learns to reproduce the original's
    outputs on the training images: distillation needs no annotations at all.
    """
    if train.labels is None:
        return Objective(teacher=source, head_layout=source.head_layout)
    return Objective(from_logits=not _outputs_are_probabilities(source, train, spec))


def prune(
    source: SourceModel, train: ImageSet, spec: Preprocessing, settings: PruneSettings, *, progress: ProgressFn | None = None
) -> tuple[SourceModel, Sparsity]:
    """Prune a copy of ``source`` to ``settings.sparsity`` while fine-tuning on ``train``."""
    if not source.is_keras:
        raise ConversionError(
            f"model {source.name} is {'a plain SavedModel without Keras metadata' if source.kind == 'savedmodel' else 'an ' + source.kind + ' model'} "
            "and cannot be fine-tuned; prune the Keras model (.keras or .h5) instead"
        )
    if len(source.output_shapes) != 1:
        raise ConversionError(f"model {source.name} has {len(source.output_shapes)} outputs; pruning fine-tunes single-output models")
    if len(train) < settings.batch_size:
        raise ConversionError(f"--train has {len(train)} images; pruning needs at least {settings.batch_size}")
    if not prunable_kernels(source.model):
        raise ConversionError(f"model {source.name} has no Dense or convolution kernels to prune")
    objective = objective_for(source, train, spec)
    if source.kind == "tf-keras":
        model = _prune_tfmot(source, train, spec, settings, objective, progress)
        method = "tfmot"
    else:
        model = _prune_keras3(source, train, spec, settings, objective, progress)
        method = "edge-sdk"
    report = measure_sparsity(model, target=settings.sparsity, method=method, epochs=settings.epochs)
    pruned = dataclasses.replace(source, model=model, path=None, _batch_of_one=None)
    return pruned, report


@dataclass(frozen=True)
class Objective:
    """What fine-tuning minimises: cross-entropy on labels, or squared distance to a teacher's outputs."""

    from_logits: bool = False
    teacher: SourceModel | None = None
    head_layout: str | None = None  # "v5" or "v8" when the teacher is a YOLO detector

    def loss(self, losses):
        if self.head_layout is not None:
            return yolo_distillation(self.head_layout)
        if self.teacher is not None:
            return losses.MeanSquaredError()
        return losses.SparseCategoricalCrossentropy(from_logits=self.from_logits)

    def batches(self, train: ImageSet, spec: Preprocessing, settings: PruneSettings) -> Iterator:
        return _training_batches(train, spec, batch_size=settings.batch_size, seed=settings.seed, teacher=self.teacher)


def yolo_distillation(layout: str) -> Callable:
    """Distance from the student's YOLO head to the teacher's, weighted where the teacher sees objects.

    A plain mean squared error is dominated by the hundreds of empty cells and by box coordinates
    measured in image units, so a pruned detector keeps finding objects but loses its box precision
    (mAP@0.5:0.95 falls). Here box errors are relative to the teacher's box size and count in
    proportion to the teacher's confidence; scores are matched everywhere.
    """
    tf = _tf.tensorflow()

    def loss(teacher, student):
        if layout == "v8":
            teacher, student = tf.transpose(teacher, [0, 2, 1]), tf.transpose(student, [0, 2, 1])
            first_score, confidence = 4, tf.reduce_max(teacher[..., 4:], axis=-1)
        else:
            first_score = 4
            confidence = teacher[..., 4] * tf.reduce_max(teacher[..., 5:], axis=-1)
        size = teacher[..., 2:4]
        floor = 0.01 * tf.reduce_mean(size) + 1e-9
        relative = (student[..., :4] - teacher[..., :4]) / tf.maximum(tf.concat([size, size], axis=-1), floor)
        box = tf.reduce_sum(confidence * tf.reduce_sum(tf.square(relative), axis=-1)) / (tf.reduce_sum(confidence) + 1e-6)
        scores = tf.reduce_mean(tf.reduce_sum(tf.square(student[..., first_score:] - teacher[..., first_score:]), axis=-1))
        return box + 10.0 * scores

    return loss


def progress_callback(base, total: int, progress: ProgressFn | None):
    class _Progress(base):
        def __init__(self) -> None:
            super().__init__()
            self.done = 0

        def on_train_batch_end(self, batch, logs=None):
            self.done += 1
            if progress is not None:
                progress("fine-tune", self.done, total)

    return _Progress()


def _prune_tfmot(source, train, spec, settings, objective, progress):
    tfk = _tf.tf_keras()
    tfmot = _tf.tfmot()
    tfk.utils.set_random_seed(settings.seed)
    steps_per_epoch, end, frequency = _schedule(train, settings)
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=settings.sparsity, begin_step=0, end_step=end,
        power=settings.power, frequency=frequency,
    )
    clone = tfk.models.clone_model(source.model)
    clone.set_weights(source.model.get_weights())
    try:
        wrapped = tfmot.sparsity.keras.prune_low_magnitude(clone, pruning_schedule=schedule)
    except (ValueError, TypeError) as exc:
        raise ConversionError(f"tfmot cannot prune model {source.name}: {str(exc).splitlines()[0]}") from exc
    wrapped.compile(
        optimizer=tfk.optimizers.Adam(settings.learning_rate),
        loss=objective.loss(tfk.losses),
    )
    callbacks = [
        tfmot.sparsity.keras.UpdatePruningStep(),
        progress_callback(tfk.callbacks.Callback, steps_per_epoch * settings.epochs, progress),
    ]
    wrapped.fit(
        objective.batches(train, spec, settings),
        steps_per_epoch=steps_per_epoch, epochs=settings.epochs, callbacks=callbacks, verbose=0,
    )
    return tfmot.sparsity.keras.strip_pruning(wrapped)


def _magnitude_mask(values: np.ndarray, sparsity: float) -> np.ndarray:
    k = int(round(sparsity * values.size))
    if k <= 0:
        return np.ones_like(values, dtype=values.dtype)
    flat = np.abs(values).ravel()
    threshold = np.partition(flat, k - 1)[k - 1]
    mask = (np.abs(values) > threshold).astype(values.dtype)
    # Ties at the threshold can leave too many weights; that only overshoots, never undershoots.
    return mask


def _prune_keras3(source, train, spec, settings, objective, progress):
    keras = _tf.keras3()
    keras.utils.set_random_seed(settings.seed)
    steps_per_epoch, end, frequency = _schedule(train, settings)
    model = keras.models.clone_model(source.model)
    model.set_weights(source.model.get_weights())
    kernels = [weight for _, weight in prunable_kernels(model)]
    masks = [np.ones(tuple(w.shape), dtype=np.float32) for w in kernels]

    class MagnitudePruning(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.step = 0

        def on_train_batch_begin(self, batch, logs=None):
            step = self.step
            if 0 < step <= end and step % frequency == 0 or step == end:
                target = polynomial_sparsity(step, final=settings.sparsity, begin=0, end=end, power=settings.power)
                for i, weight in enumerate(kernels):
                    masks[i] = _magnitude_mask(np.asarray(weight.numpy()), target)
                    weight.assign(np.asarray(weight.numpy()) * masks[i])

        def on_train_batch_end(self, batch, logs=None):
            self.step += 1
            for weight, mask in zip(kernels, masks):
                weight.assign(np.asarray(weight.numpy()) * mask)

    model.compile(
        optimizer=keras.optimizers.Adam(settings.learning_rate),
        loss=objective.loss(keras.losses),
    )
    model.fit(
        objective.batches(train, spec, settings),
        steps_per_epoch=steps_per_epoch, epochs=settings.epochs, verbose=0,
        callbacks=[MagnitudePruning(), progress_callback(keras.callbacks.Callback, steps_per_epoch * settings.epochs, progress)],
    )
    # Guarantee the final target even if training ended before the last scheduled update.
    for weight in kernels:
        values = np.asarray(weight.numpy())
        if np.count_nonzero(values == 0) / values.size < settings.sparsity:
            weight.assign(values * _magnitude_mask(values, settings.sparsity))
    return model
