"""``convert``: a Keras or SavedModel classifier in, a verified edge-sdk bundle out."""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edge_sdk.bundle import Bundle, Decoder, Quant, Task, TensorSpec, check_destination, write_bundle
from edge_sdk.converters import evaluate, models, tflite
from edge_sdk.converters.data import ImageSet, load_calibration, load_labelled
from edge_sdk.converters.pruning import PruneSettings, prune as prune_model
from edge_sdk.errors import AccuracyBudgetError, ConfigError, ConversionError, DatasetError
from edge_sdk.preprocess import ColorOrder, Normalization, Preprocessing, ResizeMode
from edge_sdk.profiles import DeviceProfile, IODtype, Precision, Target, load_profile
from edge_sdk.report import Accuracy, ConversionReport, Metrics, Quantization, Remedy, Sparsity

ProgressFn = Callable[[str, int, int], None]
CONFUSION_FILE = "confusion_matrix.png"
# Tensors whose per-channel noise-to-signal ratio under int8 exceeds this are kept in float.
SENSITIVE_NSR = 0.1
MAX_FLOAT_TENSORS = 3


@dataclass(frozen=True)
class ConversionResult:
    """What ``convert`` produced: the bundle (None when the budget failed) and the report."""

    bundle: Bundle | None
    report: ConversionReport


@dataclass
class _Attempt:
    name: str
    content: bytes | None
    float_ops: list[str]
    predictions: np.ndarray | None
    metrics: Metrics | None
    note: str
    quant: tflite.QuantSettings
    calibration_images: int


def _gzip_size(data: bytes) -> int:
    return len(gzip.compress(data, compresslevel=9))


def _read_labels(path: str | Path) -> list[str]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"--labels {path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--labels {path} cannot be read as UTF-8 text") from exc
    labels = [line.strip() for line in text.splitlines() if line.strip()]
    if not labels:
        raise ConfigError(f"--labels {path} is empty")
    if len(set(labels)) != len(labels):
        raise ConfigError(f"--labels {path} lists a label twice")
    return labels


def _enum(kind: type, value: Any, option: str):
    try:
        return kind(value)
    except ValueError as exc:
        choices = ", ".join(member.value for member in kind)
        raise ConfigError(f"{option} must be one of {choices}, not '{value}'") from exc


def _check_options(*, prune: float | None, epochs: int, max_drop: float, calib_limit: int, min_calib: int) -> None:
    if prune is not None and not 0.0 <= prune < 1.0:
        raise ConfigError(f"--prune must be in [0, 1), not {prune}")
    if epochs < 1:
        raise ConfigError(f"--epochs must be at least 1, not {epochs}")
    if max_drop < 0:
        raise ConfigError(f"--max-drop must be 0 or more percentage points, not {max_drop}")
    if min_calib < 1 or calib_limit < min_calib:
        raise ConfigError("--min-calib must be at least 1 and no larger than --calib-limit")


def _tensor_specs(engine_specs: list[dict]) -> list[TensorSpec]:
    specs = []
    for spec in engine_specs:
        quant = spec["quantization"]
        specs.append(
            TensorSpec(
                name=spec["name"],
                shape=spec["shape"],
                dtype=IODtype(np.dtype(spec["dtype"]).name),
                quant=Quant(scale=quant[0], zero_point=quant[1]) if quant and spec["dtype"] != np.float32 else None,
            )
        )
    return specs


def convert(
    model: str | Path | Any,
    *,
    profile: str | Path | DeviceProfile,
    out: str | Path,
    calib: str | Path | None = None,
    val: str | Path | None = None,
    train: str | Path | None = None,
    prune: float | None = None,
    epochs: int = 2,
    precision: str | Precision | None = None,
    max_drop: float = 1.0,
    labels: str | Path | None = None,
    resize: str | ResizeMode = ResizeMode.STRETCH,
    color: str | ColorOrder = ColorOrder.RGB,
    normalization: str | Normalization = Normalization.UNIT,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    per_channel: bool = True,
    calib_limit: int = 200,
    min_calib: int = 50,
    learning_rate: float = 1e-4,
    name: str | None = None,
    progress: ProgressFn | None = None,
) -> ConversionResult:
    """Convert a classifier for a device profile and write a verified bundle to ``out``.

    ``model`` is a ``.keras``/``.h5`` path, a SavedModel folder, or an in-memory Keras model.
    Raises an :class:`~edge_sdk.errors.EdgeSDKError` for bad input (nothing is written then) and
    :class:`~edge_sdk.errors.AccuracyBudgetError` when the accuracy drop stays over ``max_drop``
    after every remedy (the report is attached; nothing is written).
    """
    started = time.perf_counter()
    _check_options(prune=prune, epochs=epochs, max_drop=max_drop, calib_limit=calib_limit, min_calib=min_calib)
    device = profile if isinstance(profile, DeviceProfile) else load_profile(profile)
    chosen = _enum(Precision, precision, "--precision") if precision is not None else device.precision
    if device.target is not Target.TFLITE:
        raise ConversionError(
            f"profile {device.name} targets {device.target.value}, which this edge-sdk cannot compile yet; "
            "use a tflite profile (rpi4, rpi5, jetson-orin-nano, x86-cpu)"
        )
    if device.require_full_integer and chosen is not Precision.INT8:
        raise ConfigError(f"profile {device.name} runs only full-integer models; --precision must be int8")
    resize, color = _enum(ResizeMode, resize, "--resize"), _enum(ColorOrder, color, "--color")
    normalization = _enum(Normalization, normalization, "--norm")
    if prune and train is None:
        raise ConfigError("--prune needs --train: pruning fine-tunes the model on labelled images")
    if chosen is Precision.INT8 and calib is None:
        raise ConfigError("int8 needs --calib: a folder of representative images for calibration")
    out = check_destination(out)
    label_names = _read_labels(labels) if labels is not None else None

    source = models.load_model(model) if isinstance(model, (str, Path)) else models.from_keras_object(model)
    height, width, channels = source.input_shape
    if channels == 1 and color is not ColorOrder.GRAY:
        color = ColorOrder.GRAY
    try:
        spec = Preprocessing(
            width=width, height=height, channels=channels, color=color, resize=resize,
            normalization=normalization, mean=mean, std=std,
        )
    except ValueError as exc:
        raise ConfigError(f"preprocessing options: {exc.errors()[0]['msg'] if hasattr(exc, 'errors') else exc}") from exc

    val_set = load_labelled(val, spec, what="--val", class_names=label_names) if val is not None else None
    train_set = (
        load_labelled(train, spec, what="--train", class_names=label_names or (list(val_set.class_names) if val_set else None))
        if prune
        else None
    )
    class_names = label_names or (list(val_set.class_names) if val_set else None) or (
        list(train_set.class_names) if train_set else None
    )
    if class_names is not None and len(class_names) != source.num_classes:
        raise DatasetError(
            f"model {source.name} predicts {source.num_classes} classes but the labels name {len(class_names)}"
        )
    calib_set = (
        load_calibration(calib, spec, limit=calib_limit, minimum=min_calib) if chosen is Precision.INT8 else None
    )

    warnings = []
    if max(height, width) > device.max_input_size:
        warnings.append(
            f"input {width}x{height} is larger than {device.name}'s comfortable {device.max_input_size} px"
        )

    seconds: dict[str, float] = {}
    sparsity: Sparsity | None = None
    original_metrics: Metrics | None = None
    if prune and val_set is not None:
        original = evaluate.reference_predictions(source, val_set, spec)
        original_metrics = evaluate.metrics(val_set.labels, original, source.num_classes)
    if prune:
        t0 = time.perf_counter()
        source, sparsity = prune_model(
            source, train_set, spec,
            PruneSettings(sparsity=prune, epochs=epochs, learning_rate=learning_rate),
            progress=progress,
        )
        seconds["prune"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    float_content = tflite.convert(source, precision=Precision.FP32, spec=spec).content
    quant = tflite.QuantSettings(
        per_channel=per_channel,
        strict=device.require_full_integer,
        io_dtype=device.io_dtype if chosen is Precision.INT8 else IODtype.FLOAT32,
    )
    first = _attempt("baseline", source, chosen, spec, calib_set, quant, progress)
    seconds["convert"] = time.perf_counter() - t0

    accuracy: Accuracy | None = None
    final = first
    if val_set is not None:
        t0 = time.perf_counter()
        truth = val_set.labels
        reference = evaluate.reference_predictions(source, val_set, spec)
        ref_metrics = evaluate.metrics(truth, reference, source.num_classes)
        _score(first, val_set, spec, truth, source.num_classes, device, progress)
        attempts = [first]
        if chosen is Precision.INT8:
            attempts = _remedies(
                first, source=source, float_content=float_content, spec=spec, calib=calib, calib_set=calib_set, calib_limit=calib_limit,
                min_calib=min_calib, val_set=val_set, truth=truth, classes=source.num_classes, device=device,
                reference_top1=ref_metrics.top1, max_drop=max_drop, progress=progress,
            )
        final = max((a for a in attempts if a.metrics is not None), key=lambda a: a.metrics.top1)
        drop = 100.0 * (ref_metrics.top1 - final.metrics.top1)
        matrix = evaluate.confusion(truth, final.predictions, source.num_classes)
        accuracy = Accuracy(
            images=len(val_set),
            original=original_metrics,
            reference=ref_metrics,
            converted=final.metrics,
            agreement=float(np.mean(reference == final.predictions)),
            drop_points=drop,
            pruning_drop_points=100.0 * (original_metrics.top1 - ref_metrics.top1) if original_metrics else None,
            max_drop=max_drop,
            within_budget=drop <= max_drop + 1e-9,
            remedies=[Remedy(name=a.name, top1=a.metrics.top1 if a.metrics else None, note=a.note) for a in attempts],
            remedy_used=final.name,
            confusion_matrix=CONFUSION_FILE,
        )
        seconds["evaluate"] = time.perf_counter() - t0

    seconds["total"] = time.perf_counter() - started
    report = ConversionReport(
        source_model=Path(str(model)).name if isinstance(model, (str, Path)) else (name or source.name),
        source_format=source.kind,
        parameters=source.parameters(),
        float_bytes=len(float_content),
        float_gzip_bytes=_gzip_size(float_content),
        converted_bytes=len(final.content),
        converted_gzip_bytes=_gzip_size(final.content),
        sparsity=sparsity,
        quantization=Quantization(
            per_channel=final.quant.per_channel,
            calibration_images=final.calibration_images,
            float_ops=final.float_ops,
            float_layers=list(final.quant.float_tensors),
        )
        if chosen is Precision.INT8
        else None,
        accuracy=accuracy,
        seconds={k: round(v, 3) for k, v in seconds.items()},
        warnings=warnings,
    )
    if accuracy is not None and not accuracy.within_budget:
        raise AccuracyBudgetError(
            f"accuracy drop {accuracy.drop_points:.2f} points is over the budget of {max_drop:g} "
            f"(reference {100 * accuracy.reference.top1:.2f}%, best converted {100 * accuracy.converted.top1:.2f}% "
            f"with '{accuracy.remedy_used}'); nothing written to {out}",
            report=report,
        )

    files = {"model.tflite": final.content}
    roles = {"model.tflite": "model"}
    if class_names is not None:
        files["labels.txt"] = ("\n".join(class_names) + "\n").encode("utf-8")
        roles["labels.txt"] = "labels"
    if accuracy is not None:
        title = f"{source.name} {chosen.value} on {device.name}: top-1 {100 * accuracy.converted.top1:.2f}%"
        files[CONFUSION_FILE] = evaluate.confusion_png(matrix, class_names or [str(i) for i in range(source.num_classes)], title=title)
        roles[CONFUSION_FILE] = "report"
    engine = tflite.LiteRTEngine(final.content)
    bundle = write_bundle(
        out,
        files=files,
        roles=roles,
        manifest_fields=dict(
            name=name or source.name,
            target=device.target,
            precision=chosen,
            model_file="model.tflite",
            labels_file="labels.txt" if class_names is not None else None,
            num_classes=source.num_classes,
            task=Task.CLASSIFICATION,
            decoder=Decoder(kind="classification", options={"top_k": min(5, source.num_classes)}),
            preprocessing=spec,
            inputs=_tensor_specs(engine.input_specs()),
            outputs=_tensor_specs(engine.output_specs()),
            profile=device,
            report=report,
        ),
    )
    return ConversionResult(bundle=bundle, report=report)


def _attempt(name, source, precision, spec, calib_set, quant, progress, note="") -> _Attempt:
    model = tflite.convert(source, precision=precision, spec=spec, calib=calib_set, quant=quant, progress=progress)
    return _Attempt(
        name=name, content=model.content, float_ops=model.float_ops, predictions=None, metrics=None,
        note=note, quant=quant, calibration_images=len(calib_set) if calib_set is not None else 0,
    )


def _score(attempt: _Attempt, val_set: ImageSet, spec, truth, classes, device: DeviceProfile, progress) -> None:
    attempt.predictions = evaluate.tflite_predictions(attempt.content, val_set, spec, threads=device.threads, progress=progress)
    attempt.metrics = evaluate.metrics(truth, attempt.predictions, classes)


def _remedies(first: _Attempt, *, source, float_content, spec, calib, calib_set, calib_limit, min_calib, val_set, truth, classes,
              device, reference_top1, max_drop, progress) -> list[_Attempt]:
    """Try the known int8 remedies in order until one is within budget; return every attempt."""
    attempts = [first]

    def good_enough(attempt: _Attempt) -> bool:
        return attempt.metrics is not None and 100.0 * (reference_top1 - attempt.metrics.top1) <= max_drop

    def run(name: str, quant, calib_images: ImageSet, note: str) -> _Attempt:
        try:
            attempt = _attempt(name, source, Precision.INT8, spec, calib_images, quant, progress, note)
            _score(attempt, val_set, spec, truth, classes, device, progress)
        except ConversionError as exc:
            attempt = _Attempt(name, None, [], None, None, f"failed: {exc}", quant, len(calib_images))
        attempts.append(attempt)
        return attempt

    if good_enough(first):
        return attempts
    best_quant, best_calib = first.quant, calib_set
    if not first.quant.per_channel:
        attempt = run("per-channel", replace(first.quant, per_channel=True), calib_set, "per-channel weight scales")
        if good_enough(attempt):
            return attempts
        if attempt.metrics and attempt.metrics.top1 >= first.metrics.top1:
            best_quant = attempt.quant

    bigger_limit = max(calib_limit * 5, 1000)
    larger = load_calibration(calib, spec, limit=bigger_limit, minimum=min_calib)
    if len(larger) > len(calib_set):
        attempt = run(
            "larger-calibration", best_quant, larger, f"{len(larger)} calibration images instead of {len(calib_set)}"
        )
        if good_enough(attempt):
            return attempts
        if attempt.metrics and attempt.metrics.top1 >= max(a.metrics.top1 for a in attempts[:-1] if a.metrics):
            best_calib = larger
    else:
        attempts.append(_Attempt("larger-calibration", None, [], None, None,
                                 f"skipped: --calib has only {len(calib_set)} images", best_quant, len(calib_set)))

    if device.require_full_integer:
        attempts.append(_Attempt("float-fallback", None, [], None, None,
                                 f"not allowed: profile {device.name} needs every op in integer", best_quant, len(best_calib)))
        return attempts
    base = next((a for a in attempts if a.content is not None and a.quant == best_quant), first)
    ranked = tflite.sensitive_tensors(float_content, base.content, best_calib, spec)
    chosen = [name for name, score in ranked[:MAX_FLOAT_TENSORS] if score > SENSITIVE_NSR] or [ranked[0][0]]
    described = ", ".join(f"{name} (+{score:.2f} noise/signal)" for name, score in ranked if name in chosen)
    keep = list(dict.fromkeys(chosen + tflite.consumers(base.content, chosen)))
    run("float-fallback", replace(best_quant, float_tensors=tuple(keep)), best_calib, f"kept in float: {described}")
    return attempts
