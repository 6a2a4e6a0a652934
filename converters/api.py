"""``convert``: a Keras, SavedModel, ONNX or TFLite model in, a verified bundle out."""

from __future__ import annotations

import gzip
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_sdk.bundle import Bundle, Decoder, InferencePrecision, Task, check_destination, write_bundle
from edge_sdk.converters import evaluate, heads, models, targets
from edge_sdk.converters.data import ImageSet, load_calibration, load_labelled
from edge_sdk.converters.detection_eval import class_names_of, is_yolo_dataset, load_yolo
from edge_sdk.converters.pose_eval import load_pose
from edge_sdk.converters.segmentation_eval import is_semantic_dataset, load_semantic, load_yolo_seg
from edge_sdk.converters.pruning import PruneSettings, prune as prune_model
from edge_sdk.decoders import get_decoder
from edge_sdk.errors import AccuracyBudgetError, ConfigError, DatasetError, ModelError
from edge_sdk.preprocess import ColorOrder, Normalization, Preprocessing, ResizeMode
from edge_sdk.profiles import DeviceProfile, Precision, Target, load_profile
from edge_sdk.report import Accuracy, ConversionReport, Metrics, Remedy, Sparsity

ProgressFn = Callable[[str, int, int], None]
CONFUSION_FILE = "confusion_matrix.png"


@dataclass(frozen=True)
class ConversionResult:
    """What ``convert`` produced: the bundle and the report."""

    bundle: Bundle
    report: ConversionReport


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


def _check_options(*, prune, epochs, max_drop, calib_limit, min_calib, min_tpu_ops) -> None:
    if prune is not None and not 0.0 <= prune < 1.0:
        raise ConfigError(f"--prune must be in [0, 1), not {prune}")
    if epochs < 1:
        raise ConfigError(f"--epochs must be at least 1, not {epochs}")
    if max_drop < 0:
        raise ConfigError(f"--max-drop must be 0 or more percentage points, not {max_drop}")
    if min_calib < 1 or calib_limit < min_calib:
        raise ConfigError("--min-calib must be at least 1 and no larger than --calib-limit")
    if not 0.0 <= min_tpu_ops <= 1.0:
        raise ConfigError(f"--min-tpu-ops must be a share in [0, 1], not {min_tpu_ops}")


def _preprocessing(source, *, resize, color, normalization, mean, std) -> Preprocessing:
    height, width, channels = source.input_shape
    if channels == 1:
        color = ColorOrder.GRAY
    try:
        return Preprocessing(
            width=width, height=height, channels=channels, layout=source.layout, color=color, resize=resize,
            normalization=normalization, mean=mean, std=std,
        )
    except ValueError as exc:
        message = exc.errors()[0]["msg"] if hasattr(exc, "errors") else str(exc)
        raise ConfigError(f"preprocessing options: {message.removeprefix('Value error, ')}") from exc


def _probe(spec: Preprocessing, sample: str | Path | None) -> list[np.ndarray]:
    """A few real images (or one grey one) as float batches of one, to read the model's outputs on."""
    from edge_sdk.preprocess import normalize

    if sample is None:
        return [normalize(np.full((1, spec.height, spec.width, spec.channels), 128, dtype=np.uint8), spec)]
    images = load_calibration(_images_of(sample), spec, limit=8, minimum=1)
    return [normalize(images.images[i : i + 1], spec) for i in range(len(images))]


def _metadata_kpt_shape(value: str | None) -> tuple[int, int] | None:
    """Ultralytics' ``kpt_shape`` metadata, written as ``[17, 3]``."""
    numbers = [int(n) for n in re.findall(r"\d+", value or "")]
    return (numbers[0], numbers[1]) if len(numbers) == 2 and numbers[1] in (2, 3) and numbers[0] >= 1 else None


def _identify(source, probe_outputs: list[list[np.ndarray]], *, decoder: str | None, task: Task | None,
              labels: int | None, keypoints: int | None = None) -> Decoder:
    """The manifest's decoder, and the source's head and class count, from its outputs or the user's word.

    A recognised head is settled on real images (pixel or 0-1 boxes, e2e or one-class v5), so the
    device never has to guess per frame. Pose heads look like detectors or classifiers: ``--task
    pose`` or an Ultralytics model's ``task: pose`` metadata reads them as pose.
    """
    height, width = source.input_shape[:2]
    found = heads.recognise(source.output_shapes, input_size=(width, height))
    if decoder is not None:
        if not decoder.startswith("plugin:"):
            raise ConfigError(f"--decoder must be plugin:module:function, not '{decoder}'")
        get_decoder(decoder)  # fail now, with one line, when the plugin cannot be imported
        source.head = None
        source.num_classes = labels or (found.num_classes if found and found.num_classes else 1)
        return Decoder(kind=decoder, options={})
    kpt_shape = None
    if task is None and source.metadata.get("task") == "pose":
        task, kpt_shape = Task.POSE, _metadata_kpt_shape(source.metadata.get("kpt_shape"))
    if task is Task.POSE:
        found = heads.as_pose(found, source.output_shapes, keypoints=keypoints, labels=labels, kpt_shape=kpt_shape)
    elif keypoints is not None:
        raise ConfigError("--keypoints goes with --task pose")
    if found is None:
        raise ModelError(
            f"model {source.name} outputs {heads.describe_shapes(source.output_shapes)}, which match no known head "
            "(classifier [1, C]; YOLO v5 [1, N, 5+C], v8 [1, 4+C, N], end-to-end [1, K, 6], boxes [1, N, 4] + scores "
            "[1, N, C]; SSD post-processing; YOLO -seg [1, 4+C+M, N] + protos [1, M, H, W]; a segmentation map "
            "[1, H, W, C]; pose with --task pose); name a decoder with --decoder plugin:module:function"
        )
    if task is not None and task is not Task.CUSTOM and task is not found.task:
        raise ConfigError(f"--task {task.value} contradicts the model's outputs, which form a {found.describe()} head")
    stacked = [np.concatenate([outs[k] for outs in probe_outputs]) for k in range(len(source.output_shapes))]
    head = heads.settle(found, stacked, labels=labels)
    if head.num_classes is None:
        raise ModelError(f"model {source.name} ends in a {head.describe()} head whose class count its outputs do not "
                         "give; name the classes with --labels")
    source.head, source.num_classes = head, head.num_classes
    if head.decoder == "classification":
        return Decoder(kind="classification", options={"top_k": min(5, head.num_classes)})
    return Decoder(kind=head.decoder, options=dict(head.options))


def _precision(source, device: DeviceProfile, precision: str | Precision | None) -> Precision:
    """The precision to convert at; a .tflite keeps its own, which cannot be changed here."""
    chosen = _enum(Precision, precision, "--precision") if precision is not None else None
    if source.kind == "tflite" and targets.reads_tflite(device):
        own = Precision.INT8 if source.quantized else Precision.FP32
        if chosen not in (None, own) or (device.require_full_integer and own is not Precision.INT8):
            wanted = (chosen or Precision.INT8).value
            if device.require_full_integer:
                kind = "full-integer" if source.quantized else "float"
                raise ConfigError(
                    f"model {source.name} is a {kind} .tflite and cannot be re-quantized to {wanted} for {device.name}; "
                    "bring its Keras, SavedModel or ONNX source, or a full-integer .tflite"
                )
            raise ConfigError(
                f"model {source.name} is a {own.value} .tflite and cannot be re-quantized to {wanted}; bring its "
                "Keras, SavedModel or ONNX source"
            )
        return own
    chosen = chosen or device.precision
    if device.require_full_integer and chosen is not Precision.INT8:
        raise ConfigError(f"profile {device.name} runs only full-integer models; --precision must be int8")
    return chosen


def needs_calib_for(precision: Precision, source) -> bool:
    """int8 from a float source: calibration (and, given --train, quantization-aware fine-tuning) applies."""
    return precision is Precision.INT8 and not source.quantized


def _imgsz(value: int | tuple[int, int] | str | None) -> tuple[int, int] | None:
    """``640``, ``(480, 640)`` or ``"480x640"`` as (height, width)."""
    if value is None:
        return None
    try:
        if isinstance(value, str):
            parts = [int(p) for p in value.lower().replace(",", "x").split("x")]
        elif isinstance(value, int):
            parts = [value]
        else:
            parts = [int(p) for p in value]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"--imgsz must be a size like 640 or 480x640, not '{value}'") from exc
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 8 or max(parts) > 8192:
        raise ConfigError(f"--imgsz must be a size like 640 or 480x640 between 8 and 8192, not '{value}'")
    return parts[0], parts[1]


def _inference_precision(device: DeviceProfile) -> InferencePrecision | None:
    """What the device's engine must compute float parts in: f32, as the accuracy was measured, where a
    hint applies (OpenVINO's CPU; its GPU runs f16 natively, its NPU ignores the hint)."""
    if device.target is not Target.OPENVINO:
        return None
    return InferencePrecision.F16 if (device.device or "CPU").startswith("GPU") else InferencePrecision.F32


def _images_of(folder: str | Path) -> Path:
    """The images of a YOLO or segmentation dataset, or the folder itself."""
    return Path(folder) / "images" if is_yolo_dataset(folder) or is_semantic_dataset(folder) else Path(folder)


# task -> (loader of its --val set, what the set must look like)
_TASK_SETS = {
    "detection": (load_yolo, "a YOLO dataset (images/ and labels/ folders)"),
    "instance-segmentation": (load_yolo_seg, "a YOLO segmentation dataset (images/ and labels/ with polygons)"),
    "pose": (load_pose, "a YOLO pose dataset (images/, labels/ and data.yaml with kpt_shape)"),
    "segmentation": (load_semantic, "a segmentation dataset (images/ and masks/ label PNGs, classes.txt)"),
}


def _load_val(val, spec: Preprocessing, *, task: str, landmarks: bool, custom: bool,
              class_names: list[str] | None) -> ImageSet:
    """The --val set the task is scored on; a custom model with a YOLO set is scored as a detector."""
    if custom and is_yolo_dataset(val):
        task = "detection"
    if task in _TASK_SETS:
        load, looks = _TASK_SETS[task]
        wanted = is_semantic_dataset(val) if task == "segmentation" else is_yolo_dataset(val)
        if not wanted:
            raise DatasetError(f"--val {val}: a {task} model is scored on {looks}")
        extra = {"landmarks": landmarks} if task == "pose" else {}
        return load(val, spec, what="--val", class_names=class_names, **extra)
    if is_yolo_dataset(val) or is_semantic_dataset(val):
        kind = "YOLO" if is_yolo_dataset(val) else "segmentation"
        raise DatasetError(f"--val {val} is a {kind} dataset but the model is a classifier")
    if custom:  # no metric of ours applies: the report gives per-output fidelity on these images
        images = load_calibration(val, spec, limit=200, minimum=1)
        return ImageSet(images.images, None, tuple(class_names or ()))
    return load_labelled(val, spec, what="--val", class_names=class_names)


def _load_train(train, spec: Preprocessing, *, classifier: bool, class_names: list[str] | None) -> ImageSet:
    """Labelled images for a classifier; for any other model any images (it is fine-tuned against its unpruned self)."""
    if classifier:
        return load_labelled(train, spec, what="--train", class_names=class_names)
    names = tuple(class_names_of(train) or ()) if is_yolo_dataset(train) or is_semantic_dataset(train) else ()
    images = load_calibration(_images_of(train), spec, limit=4000, minimum=1)
    return ImageSet(images.images, None, names)


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
    max_drop_map50_95: float = 2.0,
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
    edgetpu_compiler: str | None = None,
    compile: bool = True,
    min_tpu_ops: float = 1.0,
    name: str | None = None,
    imgsz: int | tuple[int, int] | str | None = None,
    task: str | Task | None = None,
    decoder: str | None = None,
    keypoints: int | None = None,
    progress: ProgressFn | None = None,
) -> ConversionResult:
    """Convert a classifier for a device profile and write a verified bundle to ``out``.

    ``model`` is a ``.keras``/``.h5`` path, a SavedModel folder, an ``.onnx`` file (NCHW, as
    PyTorch and Ultralytics export it; ``imgsz`` fixes a dynamic size), a ``.tflite`` file (packaged
    at its own precision, or quantized by NNCF for OpenVINO), or an in-memory Keras model. The
    outputs' head is recognised (``task`` may confirm it; ``task='pose'`` with ``keypoints`` K reads a
    landmark regressor's ``[1, K*D]`` output); ``decoder`` names a
    ``plugin:module:function`` for anything else, used for the accuracy check too. Raises an
    :class:`~edge_sdk.errors.EdgeSDKError` for bad input and
    :class:`~edge_sdk.errors.AccuracyBudgetError` when the accuracy drop stays over ``max_drop``
    after every remedy (the report is attached); ``out`` is left untouched in both cases.
    """
    started = time.perf_counter()
    _check_options(prune=prune, epochs=epochs, max_drop=max_drop, calib_limit=calib_limit, min_calib=min_calib,
                   min_tpu_ops=min_tpu_ops)
    if keypoints is not None and keypoints < 1:
        raise ConfigError(f"--keypoints must be at least 1, not {keypoints}")
    if max_drop_map50_95 < 0:
        raise ConfigError(f"--max-drop-map50-95 must be 0 or more percentage points, not {max_drop_map50_95}")
    device = profile if isinstance(profile, DeviceProfile) else load_profile(profile)
    resize, color = _enum(ResizeMode, resize, "--resize"), _enum(ColorOrder, color, "--color")
    normalization = _enum(Normalization, normalization, "--norm")
    task = _enum(Task, task, "--task") if task is not None else None
    size = _imgsz(imgsz)
    out = check_destination(out)
    label_names = _read_labels(labels) if labels is not None else None
    target = targets.get(device.target.value)
    options = targets.TargetOptions(edgetpu_compiler=edgetpu_compiler, compile=compile, min_tpu_fraction=min_tpu_ops)

    for_tflite = targets.reads_tflite(device)
    if isinstance(model, (str, Path)):
        source = models.load_model(model, imgsz=size, for_tflite=for_tflite)
    else:
        source = models.from_keras_object(model, imgsz=size)
    chosen = _precision(source, device, precision)
    if prune and train is None:
        raise ConfigError("--prune needs --train: pruning fine-tunes the model on labelled images")
    if chosen is Precision.INT8 and calib is None and not source.quantized:
        raise ConfigError("int8 needs --calib: a folder of representative images for calibration")
    spec = _preprocessing(source, resize=resize, color=color, normalization=normalization, mean=mean, std=std)

    probe = _probe(spec, calib if calib is not None else val)
    probe_outputs = [source.predict(x) for x in probe]
    label_count = len(label_names) if label_names else None
    if label_count is None and val is not None and (is_yolo_dataset(val) or is_semantic_dataset(val)):
        label_count = len(class_names_of(val) or []) or None
    decoder = _identify(source, probe_outputs, decoder=decoder, task=task, labels=label_count, keypoints=keypoints)
    custom = decoder.kind.startswith("plugin:")
    detector = source.task == "detection" or (custom and val is not None and is_yolo_dataset(val))
    val_set = _load_val(val, spec, task=source.task, landmarks=decoder.kind == "landmarks", custom=custom,
                        class_names=label_names) if val is not None else None
    class_names = label_names or (list(val_set.class_names) if val_set and val_set.class_names else None)
    fine_tune = prune or (train is not None and needs_calib_for(chosen, source))
    train_set = _load_train(train, spec, classifier=source.task == "classification",
                            class_names=class_names) if fine_tune else None
    class_names = class_names or (list(train_set.class_names) if train_set and train_set.class_names else None)
    if custom and class_names:
        source.num_classes = len(class_names)
    if class_names is not None and len(class_names) != source.num_classes:
        raise DatasetError(f"model {source.name} predicts {source.num_classes} classes but the labels name {len(class_names)}")
    needs_calib = needs_calib_for(chosen, source)
    calib_set = load_calibration(_images_of(calib), spec, limit=calib_limit, minimum=min_calib) if needs_calib else None

    warnings = []
    if max(spec.width, spec.height) > device.max_input_size:
        warnings.append(f"input {spec.width}x{spec.height} is larger than {device.name}'s comfortable {device.max_input_size} px")

    seconds: dict[str, float] = {}
    sparsity: Sparsity | None = None
    original_metrics: Metrics | None = None
    if prune:
        if val_set is not None:
            original = evaluate.reference_predictions(source, val_set, spec, decoder=decoder)
            original_metrics = evaluate.score(val_set, original, source.num_classes)
        t0 = time.perf_counter()
        settings = PruneSettings(sparsity=prune, epochs=epochs, learning_rate=learning_rate)
        source, sparsity = prune_model(source, train_set, spec, settings, progress=progress)
        seconds["prune"] = time.perf_counter() - t0
        probe_outputs = [source.predict(x) for x in probe]  # the converted model follows the pruned one

    reference = ref_metrics = None
    if val_set is not None:
        reference = evaluate.reference_predictions(source, val_set, spec, decoder=decoder)
        ref_metrics = evaluate.score(val_set, reference, source.num_classes)

    t0 = time.perf_counter()
    job = targets.Job(
        source=source, float_tflite=models.float_tflite(source, spec), spec=spec, device=device, precision=chosen,
        calib_set=calib_set, calib_path=Path(calib) if calib is not None else None, calib_limit=calib_limit,
        min_calib=min_calib, val_set=val_set, reference_score=ref_metrics.score if ref_metrics else None,
        max_drop=max_drop, per_channel=per_channel, options=options, progress=progress, decoder=decoder,
        probe=probe, probe_outputs=probe_outputs, measure_fidelity=custom and not detector, train_set=train_set,
        reference_map50_95=ref_metrics.map50_95 if ref_metrics else None, max_drop_map50_95=max_drop_map50_95,
    )
    target.preflight(job)
    attempts = []
    for attempt in target.attempts(job):
        attempts.append(attempt)
        if val_set is None or job.within_budget(attempt):
            break
    final = targets.best(attempts, job)
    packaged = target.package(job, final)
    if final.output_order is not None:  # the bundle lists outputs in the source's order
        packaged.outputs = [packaged.outputs[i] for i in final.output_order]
    float_model = target.float_model(job)
    seconds["convert"] = time.perf_counter() - t0

    accuracy: Accuracy | None = None
    matrix = None
    if val_set is not None and ref_metrics is not None and final.metrics is not None:
        matrix = evaluate.confusion_of(val_set, final.predictions, source.num_classes)
        accuracy = Accuracy(
            images=len(val_set),
            original=original_metrics,
            reference=ref_metrics,
            converted=final.metrics,
            agreement=evaluate.agreement(val_set, reference, final.predictions),
            pruning_drop_points=100.0 * (original_metrics.score - ref_metrics.score) if original_metrics else None,
            **job.budget_fields(final),
            remedies=[Remedy(name=a.name, top1=a.metrics.score if a.metrics else None, note=a.note,
                             map50_95=a.metrics.map50_95 if a.metrics else None) for a in attempts],
            remedy_used=final.name,
            confusion_matrix=None if matrix is None else CONFUSION_FILE,
        )

    model_bytes = b"".join(data for path, data in packaged.files.items() if packaged.roles.get(path) == "model")
    seconds["total"] = time.perf_counter() - started
    report = ConversionReport(
        source_model=Path(str(model)).name if isinstance(model, (str, Path)) else (name or source.name),
        source_format=source.kind,
        head=decoder.kind if custom else source.head.describe(),
        parameters=source.parameters(),
        float_bytes=len(float_model),
        float_gzip_bytes=_gzip_size(float_model),
        converted_bytes=len(model_bytes),
        converted_gzip_bytes=_gzip_size(model_bytes),
        sparsity=sparsity,
        quantization=packaged.quantization,
        accuracy=accuracy,
        edgetpu=packaged.edgetpu,
        openvino=packaged.openvino,
        fidelity=final.fidelity,
        seconds={k: round(v, 3) for k, v in seconds.items()},
        warnings=warnings,
    )
    if accuracy is not None and not accuracy.within_budget:
        raise AccuracyBudgetError(
            f"accuracy drop {accuracy.drop_points:.2f} points is over the budget of {max_drop:g} "
            + (f"and/or mAP@0.5:0.95 drop {accuracy.drop_map50_95_points:.2f} over its {max_drop_map50_95:g} "
               if accuracy.drop_map50_95_points is not None else "")
            + f"(reference {accuracy.reference.score_name} {100 * accuracy.reference.score:.2f}%, best converted "
            f"{100 * accuracy.converted.score:.2f}% "
            f"with '{accuracy.remedy_used}'); nothing written to {out}",
            report=report,
        )

    files, roles = dict(packaged.files), dict(packaged.roles)
    if class_names is not None:
        files["labels.txt"] = ("\n".join(class_names) + "\n").encode("utf-8")
        roles["labels.txt"] = "labels"
    if accuracy is not None and matrix is not None:  # images (classifier) or pixels (semantic segmentation)
        converted = accuracy.converted
        title = f"{source.name} {chosen.value} on {device.name}: {converted.score_name} {100 * converted.score:.2f}%"
        names = class_names or [str(i) for i in range(source.num_classes)]
        files[CONFUSION_FILE] = evaluate.confusion_png(matrix, names, title=title)
        roles[CONFUSION_FILE] = "report"
    bundle = write_bundle(
        out,
        files=files,
        roles=roles,
        manifest_fields=dict(
            name=name or source.name,
            target=device.target,
            precision=chosen,
            model_file=packaged.model_file,
            labels_file="labels.txt" if class_names is not None else None,
            num_classes=source.num_classes,
            task=Task.CUSTOM if custom else source.head.task,
            decoder=packaged.decoder or decoder,
            inference_precision=_inference_precision(device),
            preprocessing=spec,
            inputs=packaged.inputs,
            outputs=packaged.outputs,
            profile=device,
            report=report,
        ),
    )
    return ConversionResult(bundle=bundle, report=report)
