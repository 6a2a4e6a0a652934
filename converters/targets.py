"""What every compile target shares: the job it is given, its attempts, and the registry.

A target turns the float model into its own format at the requested precision, scores each
attempt in its own engine, tries its own remedies when the accuracy budget is broken, and packages
the chosen attempt into bundle files. Adding a target is one module in ``converters/`` with a
class following :class:`Target`, one engine in ``edge_sdk/backends/`` and a profile.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edge_sdk.bundle import Decoder, Quant, TensorSpec
from edge_sdk.converters import evaluate
from edge_sdk.converters.data import ImageSet, load_calibration
from edge_sdk.converters.models import SourceModel
from edge_sdk.errors import ConversionError
from edge_sdk.registry import resolve
from edge_sdk.preprocess import Preprocessing
from edge_sdk.profiles import DeviceProfile, IODtype, Precision
from edge_sdk.report import EdgeTPUReport, Metrics, OpenVINOReport, OutputFidelity, Quantization

ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class TargetOptions:
    """Options only some targets read."""

    edgetpu_compiler: str | None = None  # path; default: edgetpu_compiler on PATH
    compile: bool = True  # False: Edge-TPU-ready model and pre-check only
    min_tpu_fraction: float = 1.0  # share of ops that must map to the Edge TPU


@dataclass
class Job:
    """Everything a target needs, prepared once by ``convert``."""

    source: SourceModel
    float_tflite: bytes | None  # None when the source cannot become TFLite (ONNX)
    spec: Preprocessing
    device: DeviceProfile
    precision: Precision
    calib_set: ImageSet | None
    calib_path: Path | None
    calib_limit: int
    min_calib: int
    val_set: ImageSet | None
    reference_score: float | None  # the headline (Metrics.score): top-1, mAP@0.5, mean IoU, mask/keypoint mAP, PCK
    max_drop: float
    per_channel: bool
    options: TargetOptions
    progress: ProgressFn | None = None
    decoder: Decoder | None = None  # how a detector's head is decoded when it is scored
    # A few float inputs (batches of one) and the source's outputs on them: they pair each converted
    # output with the source's, and measure fidelity where no task metric applies.
    probe: list[np.ndarray] = field(default_factory=list)
    probe_outputs: list[list[np.ndarray]] = field(default_factory=list)
    measure_fidelity: bool = False
    train_set: ImageSet | None = None  # --train images, for the quantization-aware remedy
    reference_map50_95: float | None = None  # float box mAP@0.5:0.95 (detector, instances, pose) on the validation images
    max_drop_map50_95: float = 2.0  # a detector's second budget, in points of mAP@0.5:0.95

    def drops(self, metrics: Metrics) -> tuple[float, float | None]:
        """Points lost against the reference: the headline score, and the box mAP@0.5:0.95 of a model with boxes (else None)."""
        drop = 100.0 * (self.reference_score - metrics.score)
        if self.reference_map50_95 is None or metrics.map50_95 is None:
            return drop, None
        return drop, 100.0 * (self.reference_map50_95 - metrics.map50_95)

    def overrun(self, metrics: Metrics) -> float:
        """Points by which ``metrics`` break the worse of the budgets (negative: the slack left)."""
        drop, drop_box = self.drops(metrics)
        over = drop - self.max_drop
        return over if drop_box is None else max(over, drop_box - self.max_drop_map50_95)

    def within_budget(self, attempt: Attempt) -> bool:
        """Headline drop <= max_drop and, for a detector, mAP@0.5:0.95 drop <= max_drop_map50_95."""
        if self.reference_score is None:
            return True
        return attempt.metrics is not None and self.overrun(attempt.metrics) <= 1e-9

    def rank(self, attempt: Attempt) -> tuple:
        """Sort key of scored attempts, best last: within every budget first, then the smallest
        overrun, then the headline score and mAP@0.5:0.95."""
        m = attempt.metrics
        if m is None:
            return (False, -np.inf, -np.inf, -np.inf)
        over = self.overrun(m) if self.reference_score is not None else 0.0
        return (over <= 1e-9, -max(over, 0.0), m.score, m.map50_95 or 0.0)

    def budget_fields(self, attempt: Attempt) -> dict:
        """The budget fields of the report's Accuracy for the chosen attempt."""
        drop, drop_box = self.drops(attempt.metrics)
        return dict(
            drop_points=drop,
            drop_map50_95_points=drop_box,
            max_drop=self.max_drop,
            max_drop_map50_95=self.max_drop_map50_95 if drop_box is not None else None,
            within_budget=self.within_budget(attempt),
        )

    def larger_calibration(self) -> ImageSet | None:
        """A bigger calibration sample (5x the first, at least 1,000), or None when --calib has no more."""
        if self.calib_path is None or self.calib_set is None:
            return None
        larger = load_calibration(
            self.calib_path, self.spec, limit=max(self.calib_limit * 5, 1000), minimum=self.min_calib
        )
        return larger if len(larger) > len(self.calib_set) else None

    def try_larger_calibration(self, first: Attempt, settings: Any, run: Callable[[ImageSet, str], Attempt]) -> tuple[Attempt, ImageSet]:
        """The larger-calibration remedy every target tries after its baseline ``first``: an attempt
        made by ``run(larger set, note)`` (or a skipped one, with ``settings``), and the calibration
        set the later remedies should use (the larger one when it did no worse)."""
        calib = self.calib_set
        larger = self.larger_calibration()
        if larger is None:
            return Attempt("larger-calibration", None, settings, f"skipped: --calib has only {len(calib)} images", len(calib)), calib
        attempt = run(larger, f"{len(larger)} calibration images instead of {len(calib)}")
        better = attempt.metrics and first.metrics and self.rank(attempt) >= self.rank(first)
        return attempt, larger if better else calib


@dataclass
class Attempt:
    """One conversion at the target's precision; ``model`` is the target's own artefact."""

    name: str
    model: Any = None
    settings: Any = None
    note: str = ""
    calibration_images: int = 0
    predictions: Any = None  # top-1 classes, or per image detections, objects (masks, keypoints) or a class map
    metrics: Metrics | None = None
    output_order: list[int] | None = None  # for each source output, the converted model's output holding it
    fidelity: list[OutputFidelity] | None = None
    decoder: Decoder | None = None  # when this attempt's model needs another decoder than the job's (host decode)

    @property
    def failed(self) -> bool:
        return self.model is None


@dataclass
class Packaged:
    """Bundle files of the chosen attempt and what the manifest says about them."""

    files: dict[str, bytes]
    model_file: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    quantization: Quantization | None = None
    edgetpu: EdgeTPUReport | None = None
    openvino: OpenVINOReport | None = None
    roles: dict[str, str] = field(default_factory=dict)
    decoder: Decoder | None = None  # the manifest's decoder, when the model needs another than the source's


class Target(Protocol):
    """A compile target."""

    def preflight(self, job: Job) -> None:
        """Fail fast, before any slow work, when the target cannot finish (e.g. a missing compiler)."""

    def float_model(self, job: Job) -> bytes:
        """The float32 model in this target's format (for the size comparison)."""

    def attempts(self, job: Job) -> Iterator[Attempt]:
        """The baseline, then remedies in order; each scored when ``job.val_set`` is set."""

    def package(self, job: Job, attempt: Attempt) -> Packaged:
        """Bundle files for the chosen attempt."""


# target name -> "module:Class"; imported only when a profile asks for that target.
REGISTRY: dict[str, str] = {
    "tflite": "edge_sdk.converters.tflite:TFLiteTarget",
    "edgetpu": "edge_sdk.converters.edgetpu:EdgeTPUTarget",
    "openvino": "edge_sdk.converters.openvino:OpenVINOTarget",
    "onnx": "edge_sdk.converters.onnxrt:ONNXTarget",
    "plugin": "edge_sdk.converters.plugin:PluginTarget",
}


def reads_tflite(device: DeviceProfile) -> bool:
    """The device's engine reads .tflite (so an ONNX source goes through TensorFlow to reach it)."""
    from edge_sdk.profiles import Target

    if device.target is Target.PLUGIN:
        from edge_sdk.converters.plugin import format_of

        return format_of(device.engine) == "tflite"
    return device.target in (Target.TFLITE, Target.EDGETPU)


def get(name: str) -> Target:
    return resolve(REGISTRY, name, error=ConversionError, what="converter for target")()


def score(job: Job, attempt: Attempt, engine: Any) -> Attempt:
    """Pair the engine's outputs with the source's; then predictions on the validation images, and their metrics.

    An attempt with its own decoder (the head decoded on the host) has outputs of its own: they are
    not the source's to pair.
    """
    if attempt.failed:
        return attempt
    if job.probe and attempt.decoder is None:
        run = evaluate.engine_runner(engine)
        converted = [run(x) for x in job.probe]
        attempt.output_order = evaluate.match_outputs(job.probe_outputs[0], converted[0])
        if job.measure_fidelity:
            ordered = [[outs[i] for i in attempt.output_order] for outs in converted]
            attempt.fidelity = evaluate.fidelity(job.probe_outputs, ordered, list(job.source.output_names))
    if job.val_set is not None:
        attempt.predictions = evaluate.engine_predictions(engine, job.val_set, job.spec,
                                                          decoder=attempt.decoder or job.decoder,
                                                          progress=job.progress, order=attempt.output_order)
        attempt.metrics = evaluate.score(job.val_set, attempt.predictions, job.source.num_classes)
    return attempt


def best(attempts: list[Attempt], job: Job | None = None) -> Attempt:
    """The best scored attempt, or the first that converted when none was scored.

    With ``job``, an attempt within every budget (both mAP figures for a detector) beats one that
    is not, whatever its headline score; without, the highest headline score wins.
    """
    scored = [a for a in attempts if a.metrics is not None]
    if scored:
        if job is not None:
            return max(scored, key=job.rank)
        return max(scored, key=lambda a: a.metrics.score)
    usable = [a for a in attempts if not a.failed]
    if not usable:
        raise ConversionError("; ".join(f"{a.name}: {a.note}" for a in attempts))
    return usable[0]


def tensor_specs(engine_specs: list[dict]) -> list[TensorSpec]:
    """Manifest tensor specs from an engine's input/output specs."""
    specs = []
    for spec in engine_specs:
        quant = spec["quantization"]
        dtype = np.dtype(spec["dtype"])
        specs.append(
            TensorSpec(
                name=spec["name"],
                shape=spec["shape"],
                dtype=IODtype(dtype.name),
                quant=Quant(scale=quant[0], zero_point=quant[1]) if quant and dtype != np.float32 else None,
            )
        )
    return specs
