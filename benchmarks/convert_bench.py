"""TFLite and OpenVINO, float against int8 (size, CPU latency, conversion time; mAP for a detector), in one run.

Classifier part: builds an untrained MobileNetV2-sized classifier (nothing is downloaded), generates
images from scikit-image's bundled sample photos, converts it through ``edge_sdk.converters.convert``
for the x86-cpu profile (TFLite: float, int8, pruned+int8) and the intel-cpu profile (OpenVINO IR:
FP32, FP16, NNCF int8), and times every bundle on the CPU (TFLite bundles with ``LiteRTEngine``,
OpenVINO bundles through ``open_engine(..., device="CPU")``) in one round-robin loop. Writes
``benchmarks/results/convert_bench.md``.

Detector part: the shipped shapes detector as its ``.keras`` file and as the same network written as
a YOLOv8-layout ONNX file, float and int8 for rpi5 (TFLite), coral-usb (Edge-TPU-ready int8,
``compile=False``, timed on the CPU through the bundle's engine with ``cpu_fallback``) and intel-cpu
(OpenVINO), scored on generated held-out scenes (mAP@0.5, mAP@0.5:0.95 from the conversion report)
and timed round-robin; checks that the ONNX- and Keras-sourced forms agree. Writes
``benchmarks/results/convert_bench_detector.md``.

Prints one Markdown table per target.

    .venv/bin/python benchmarks/convert_bench.py                      # both parts, ~8 minutes on 2 cores
    .venv/bin/python benchmarks/convert_bench.py --quick              # smoke run
    .venv/bin/python benchmarks/convert_bench.py --detector           # only the detector part, ~3 minutes
    .venv/bin/python benchmarks/convert_bench.py --no-detector --targets openvino   # only the classifier's OpenVINO half
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import cv2
import numpy as np

from common import cpu_model, vnni  # noqa: E402 (this folder's shared helpers)
from edge_sdk.backends import open_engine
from edge_sdk.backends.litert import LiteRTEngine
from edge_sdk.bundle import open_bundle
from edge_sdk.preprocess import preprocess, quantize

RESULTS_FILE = Path(__file__).resolve().parent / "results" / "convert_bench.md"
INPUT_SIZE = 224
NUM_CLASSES = 10
SPEEDUP_TARGET = 1.8
SIZE_TARGET = 0.30
# OpenVINO int8 over FP32 on the CPU: VNNI (AVX-512 VNNI or AVX-VNNI) runs int8 dot products natively.
OV_SPEEDUP_TARGET_VNNI = 2.0
OV_SPEEDUP_TARGET_NO_VNNI = 1.3
TARGETS = ("tflite", "openvino")
PROFILES = {"tflite": "x86-cpu", "openvino": "intel-cpu"}
BN_IMAGES = 64
DATA_MARKER = ".convert_bench-data"
# Ten photos shipped inside scikit-image (no fetch needed); the class is the source photo.
SOURCES = (
    "astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field",
    "immunohistochemistry", "retina", "colorwheel", "logo", "camera",
)


@dataclass(frozen=True)
class Sizes:
    calib: int
    train_per_class: int
    val_per_class: int
    rounds: int
    warmup: int


FULL = Sizes(calib=100, train_per_class=20, val_per_class=10, rounds=100, warmup=10)
QUICK = Sizes(calib=50, train_per_class=4, val_per_class=3, rounds=20, warmup=3)


@dataclass
class Variant:
    name: str
    options: dict
    target: str = "tflite"  # which table the row goes to and which engine times it
    label: str = ""  # row name in the table (default: name)
    convert_seconds: float = 0.0
    bundle_path: Path | None = None
    model_path: Path | None = None
    report: object | None = None
    file_bytes: int = 0
    gzip_bytes: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    ir_note: str = ""  # OpenVINO: what the saved IR itself holds (FakeQuantize count, weighted ops left float)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.latencies_ms)

    @property
    def row(self) -> str:
        return self.label or self.name


def log(message: str) -> None:
    print(f"[convert_bench] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- data


def source_photos() -> list[np.ndarray]:
    """The sample photos as RGB uint8 (camera is grey, the logo is RGBA)."""
    import skimage.data

    photos = []
    for name in SOURCES:
        image = np.asarray(getattr(skimage.data, name)())
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        photos.append(np.ascontiguousarray(image[:, :, :3]).astype(np.uint8))
    return photos


def random_crop(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random square-ish crop covering 35-100% of the short side, maybe mirrored, at 224x224."""
    height, width = photo.shape[:2]
    side = int(min(height, width) * rng.uniform(0.35, 1.0))
    crop_w = min(width, int(side * rng.uniform(0.8, 1.25)))
    y0 = int(rng.integers(0, height - side + 1))
    x0 = int(rng.integers(0, width - crop_w + 1))
    crop = photo[y0 : y0 + side, x0 : x0 + crop_w]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return cv2.resize(np.ascontiguousarray(crop), (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_AREA)


def write_png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {path}")


def make_datasets(root: Path, sizes: Sizes, seed: int = 0) -> dict[str, Path]:
    """calib/ (flat), train/<class>/ and val/<class>/ under ``root``, all PNG crops."""
    if (root / DATA_MARKER).is_file():
        shutil.rmtree(root)  # a previous run's images, possibly more of them than this run wants
    root.mkdir(parents=True, exist_ok=True)
    (root / DATA_MARKER).touch()
    rng = np.random.default_rng(seed)
    photos = source_photos()
    folders = {name: root / name for name in ("calib", "train", "val")}
    for i in range(sizes.calib):
        write_png(folders["calib"] / f"{i:04d}.png", random_crop(photos[i % len(photos)], rng))
    for split, per_class in (("train", sizes.train_per_class), ("val", sizes.val_per_class)):
        for label, (name, photo) in enumerate(zip(SOURCES, photos)):
            for i in range(per_class):
                write_png(folders[split] / f"{label:02d}_{name}" / f"{i:04d}.png", random_crop(photo, rng))
    return folders


# --------------------------------------------------------------------------- model


def load_rgb(paths: list[Path]) -> np.ndarray:
    return np.stack([cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in paths]).astype(np.float32) / 255.0


def set_bn_statistics(keras, model, images: np.ndarray) -> None:
    """Set every BatchNorm's moving mean/variance to its statistics on ``images`` (one forward pass).

    Why: with untouched initial statistics, an untrained MobileNetV2's activations shrink to ~1e-11 by
    the last block, its softmax is exactly uniform, and int8 calibration sees degenerate ranges. With
    data statistics the activations have the ranges of a trained network; still no download, no training.
    """
    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    model(images, training=True)
    for layer, momentum in zip(layers, saved):
        layer.momentum = momentum


def build_model(path: Path, train_folder: Path, *, bn_statistics: bool) -> Path:
    """An untrained MobileNetV2 (weights=None: no download) with a 10-class head, saved as .keras."""
    from edge_sdk.converters import _tf

    keras = _tf.keras3()
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(
        weights=None, input_shape=(INPUT_SIZE, INPUT_SIZE, 3), classes=NUM_CLASSES
    )
    if bn_statistics:
        paths = sorted(train_folder.rglob("*.png"))
        picked = np.random.default_rng(0).permutation(len(paths))[:BN_IMAGES]
        set_bn_statistics(keras, model, load_rgb([paths[i] for i in sorted(picked)]))
    model.save(path)
    return path


# --------------------------------------------------------------------------- conversion


def variants(data: dict[str, Path], *, use_val: bool, epochs: int, targets: tuple[str, ...] = TARGETS) -> list[Variant]:
    """The TFLite rows (x86-cpu) and/or the OpenVINO rows (intel-cpu), same calibration folder for both."""
    runs = []
    if "tflite" in targets:
        common = dict(profile=PROFILES["tflite"], calib=data["calib"], min_calib=1)
        if use_val:
            # Accuracy is reported, not enforced: an untrained model would only trip the remedies.
            common.update(val=data["val"], max_drop=100.0)
        runs += [
            Variant("float", dict(common, precision="fp32")),
            Variant("int8", dict(common, precision="int8")),
            Variant("pruned+int8", dict(common, precision="int8", prune=0.5, train=data["train"], epochs=epochs)),
        ]
    if "openvino" in targets:
        common = dict(profile=PROFILES["openvino"], calib=data["calib"], min_calib=1)
        if use_val:
            common.update(val=data["val"], max_drop=100.0)
        runs += [
            Variant("ov-fp32", dict(common, precision="fp32"), target="openvino", label="FP32"),
            Variant("ov-fp16", dict(common, precision="fp16"), target="openvino", label="FP16"),
            # int8 = NNCF post-training quantization on the calibration folder.
            Variant("ov-int8", dict(common, precision="int8"), target="openvino", label="int8"),
        ]
    return runs


def model_bytes(variant: Variant) -> bytes:
    """The model file(s) as one byte string: the .tflite, or an OpenVINO IR's model.xml + model.bin."""
    if variant.target == "openvino":
        return variant.model_path.read_bytes() + variant.model_path.with_suffix(".bin").read_bytes()
    return variant.model_path.read_bytes()


def run_conversion(variant: Variant, model_path: Path, out: Path) -> None:
    from edge_sdk.converters import convert

    log(f"converting {variant.name} ...")
    started = time.perf_counter()
    # Keras 3's export prints every captured variable to stdout; keep stdout for the table.
    with contextlib.redirect_stdout(sys.stderr):
        result = convert(model_path, out=out, **variant.options)
    variant.convert_seconds = time.perf_counter() - started
    bundle = open_bundle(result.bundle.path)  # re-read from disk: hashes verified
    variant.bundle_path = bundle.path
    variant.model_path = bundle.model_path
    variant.report = result.report
    content = model_bytes(variant)
    variant.file_bytes = len(content)
    variant.gzip_bytes = len(gzip.compress(content, compresslevel=9))
    if variant.target == "openvino":
        variant.ir_note = inspect_ir(variant.model_path)
    log(f"{variant.name}: {variant.convert_seconds:.1f} s, {variant.file_bytes} bytes")


def inspect_ir(xml_path: Path) -> str:
    """Count FakeQuantize ops and weighted ops without one in the saved IR (checks the report's float_ops)."""
    import openvino as ov

    from edge_sdk.converters.openvino import _QUANTIZABLE, float_ops_of

    model = ov.Core().read_model(str(xml_path))
    ops = model.get_ordered_ops()
    fake_quantize = sum(op.get_type_name() == "FakeQuantize" for op in ops)
    weighted = sum(op.get_type_name() in _QUANTIZABLE for op in ops)
    if not fake_quantize:
        return f"IR: no FakeQuantize, {weighted} weighted ops"
    return f"IR: {fake_quantize} FakeQuantize, {len(float_ops_of(model))} of {weighted} weighted ops without one"


# --------------------------------------------------------------------------- latency


def ready_input(engine, image_path: Path) -> np.ndarray:
    """One real image as the model's input tensor: float [0, 1] RGB, quantized if the input is integer."""
    spec = engine.input_specs()[0]
    shape = [1 if d < 0 else d for d in spec["shape"]]
    x = load_rgb([image_path])
    if x.shape[1:3] != (shape[1], shape[2]):
        x = cv2.resize(x[0], (shape[2], shape[1]), interpolation=cv2.INTER_LINEAR)[None, ...]
    if np.issubdtype(spec["dtype"], np.integer):
        if not spec["quantization"]:
            raise RuntimeError(f"integer input without quantization parameters: {spec}")
        scale, zero_point = spec["quantization"]
        x = quantize(x, scale=scale, zero_point=zero_point, dtype=spec["dtype"])
    return np.ascontiguousarray(x.astype(spec["dtype"], copy=False))


def make_engine(variant: Variant, threads: int):
    """LiteRT for TFLite bundles; OpenVINO bundles through the public ``open_engine``, on the CPU."""
    if variant.target == "openvino":
        return open_engine(open_bundle(variant.bundle_path), device="CPU", threads=threads)
    return LiteRTEngine(variant.model_path, threads=threads)


def measure_latency(runs: list, image_path: Path, *, threads: int, rounds: int, warmup: int, seed: int = 0,
                    engine_of=make_engine, input_of=None) -> None:
    """Round-robin invokes over every model (TFLite and OpenVINO), in a fresh random order each round,
    so machine noise hits every model alike. ``runs`` need ``latencies_ms``; ``engine_of(run, threads)``
    opens one, ``input_of(run, engine, image_path)`` makes its input (the classifier's by default)."""
    input_of = input_of or (lambda _run, engine, path: ready_input(engine, path))
    engines = [engine_of(v, threads) for v in runs]
    inputs = [input_of(v, e, image_path) for v, e in zip(runs, engines)]
    for engine, x in zip(engines, inputs):
        for _ in range(warmup):
            engine.run([x])
    rng = np.random.default_rng(seed)
    for round_index in range(rounds):
        for i in rng.permutation(len(runs)):
            started = time.perf_counter()
            engines[i].run([inputs[i]])
            runs[i].latencies_ms.append(1000.0 * (time.perf_counter() - started))
        if (round_index + 1) % 25 == 0:
            log(f"latency round {round_index + 1}/{rounds}")


def busy_cpu_seconds() -> float | None:
    """CPU seconds every process on the machine has spent busy, from /proc/stat (Linux only)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def other_load(timed) -> float | None:
    """Run ``timed()``; return the share of all CPUs other processes kept busy meanwhile.

    Why: latency on a shared 2-core box is only worth reading if nothing else ran during it.
    """
    before_busy, before_own, started = busy_cpu_seconds(), os.times(), time.monotonic()
    timed()
    after_busy, after_own, wall = busy_cpu_seconds(), os.times(), time.monotonic() - started
    if before_busy is None or after_busy is None or wall <= 0:
        return None
    own = (after_own.user + after_own.system) - (before_own.user + before_own.system)
    return max(0.0, (after_busy - before_busy - own) / (wall * (os.cpu_count() or 1)))


# --------------------------------------------------------------------------- report


def machine_line(threads: int, targets: tuple[str, ...] = TARGETS) -> str:
    from edge_sdk.converters import _tf

    cpu = cpu_model()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"machine: {cpu}, {os.cpu_count()} cores ({usable} usable), {platform.system()} {platform.machine()}; "
        f"python {platform.python_version()}, tensorflow {_tf.tensorflow().__version__}, "
        f"ai-edge-litert {metadata.version('ai-edge-litert')}{openvino_versions() if 'openvino' in targets else ''}; "
        f"threads={threads}"
    )


def openvino_versions() -> str:
    import openvino as ov

    core = ov.Core()
    try:
        precision = core.get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()  # e.g. f32, bf16
    except (RuntimeError, AttributeError):
        precision = "unknown"
    flag = vnni()
    return (
        f", openvino {ov.__version__.split('-')[0]}, nncf {metadata.version('nncf')} "
        f"(CPU inference precision {precision}, VNNI {'unknown' if flag is None else 'yes' if flag else 'no'})"
    )


def megabytes(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def table(runs: list[Variant]) -> list[str]:
    """The TFLite table; ``runs`` are the TFLite rows, float first."""
    base = runs[0]
    lines = [
        "| model | file size | gzip -9 size | size / float | gzip / float gzip | median latency ms | speed-up vs float | conversion s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for v in runs:
        lines.append(
            f"| {v.name} | {megabytes(v.file_bytes)} | {megabytes(v.gzip_bytes)} | "
            f"{v.file_bytes / base.file_bytes:.2f} | {v.gzip_bytes / base.gzip_bytes:.2f} | "
            f"{v.median_ms:.2f} | {base.median_ms / v.median_ms:.2f}x | {v.convert_seconds:.1f} |"
        )
    return lines


def ov_table(runs: list[Variant]) -> list[str]:
    """The OpenVINO table; ``runs`` are the OpenVINO rows, FP32 first. Sizes are model.xml + model.bin."""
    base = runs[0]
    lines = [
        "| OpenVINO IR | file size (xml+bin) | gzip -9 size | size / FP32 | median latency ms | speed-up vs FP32 | conversion s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for v in runs:
        lines.append(
            f"| {v.row} | {megabytes(v.file_bytes)} | {megabytes(v.gzip_bytes)} | {v.file_bytes / base.file_bytes:.2f} | "
            f"{v.median_ms:.2f} | {base.median_ms / v.median_ms:.2f}x | {v.convert_seconds:.1f} |"
        )
    return lines


def details(runs: list[Variant]) -> list[str]:
    lines = []
    for v in runs:
        lat = np.asarray(v.latencies_ms)
        line = (
            f"- {v.name}: latency p10/p90 {np.percentile(lat, 10):.2f}/{np.percentile(lat, 90):.2f} ms "
            f"over {lat.size} runs; phases {v.report.seconds}"
        )
        if v.report.sparsity is not None:
            s = v.report.sparsity
            line += f"; sparsity prunable {s.prunable:.3f}, overall {s.overall:.3f} ({s.method}, {s.epochs} epoch)"
        if v.report.quantization is not None:
            q = v.report.quantization
            line += f"; {q.calibration_images} calibration images, {len(q.float_ops)} float ops"
            if v.target == "openvino":
                line += " per the report"
        if v.report.openvino is not None:
            o = v.report.openvino
            line += f"; openvino weights {o.weights}, method {o.method}"
        if v.ir_note:
            line += f"; {v.ir_note}"
        if v.report.accuracy is not None:
            a = v.report.accuracy
            line += (
                f"; top-1 on {a.images} val images: reference {100 * a.reference.top1:.1f}%, "
                f"converted {100 * a.converted.top1:.1f}% (agreement {100 * a.agreement:.1f}%, "
                f"drop {a.drop_points:.1f} pts; untrained head, budget not enforced)"
            )
        lines.append(line)
    return lines


def summary(runs: list[Variant]) -> list[str]:
    float_run, int8_run = runs[0], runs[1]
    speedup = float_run.median_ms / int8_run.median_ms
    ratio = int8_run.file_bytes / float_run.file_bytes
    return [
        f"int8 speed-up over float: {speedup:.2f}x (target >= {SPEEDUP_TARGET}x)"
        f" {'PASS' if speedup >= SPEEDUP_TARGET else 'MISS'}",
        f"int8 size / float size: {ratio:.2f} (target <= {SIZE_TARGET:.2f})"
        f" {'PASS' if ratio <= SIZE_TARGET else 'MISS'} (exactly {ratio:.4f})",
    ]


def ov_summary(runs: list[Variant]) -> list[str]:
    fp32, int8 = runs[0], runs[-1]
    speedup = fp32.median_ms / int8.median_ms
    flag = vnni()
    target = OV_SPEEDUP_TARGET_VNNI if flag else OV_SPEEDUP_TARGET_NO_VNNI
    return [
        f"OpenVINO int8 speed-up over FP32: {speedup:.2f}x (target >= {OV_SPEEDUP_TARGET_VNNI:g}x with VNNI, "
        f">= {OV_SPEEDUP_TARGET_NO_VNNI:g}x without; this CPU: VNNI {'unknown' if flag is None else 'yes' if flag else 'no'})"
        f" -> applies >= {target:g}x: {'PASS' if speedup >= target else 'MISS'}",
        f"OpenVINO int8 size / FP32 size: {int8.file_bytes / fp32.file_bytes:.2f}; "
        f"FP16 size / FP32 size: {runs[1].file_bytes / fp32.file_bytes:.2f}",
    ]


RAW_INIT_CAVEAT = (
    "caveat (--raw-init): the float and int8 files share one buffer for their many identical all-zero "
    "biases, so they are a little smaller than a trained model's; activations and accuracy are degenerate."
)


def render(runs: list[Variant], machine: str, header: str, *, raw_init: bool) -> str:
    parts = ["# convert_bench", "", header, "", machine, ""]
    tflite = [v for v in runs if v.target == "tflite"]
    openvino = [v for v in runs if v.target == "openvino"]
    if tflite:
        parts += [f"## TFLite (profile {PROFILES['tflite']}, LiteRT)", "", *table(tflite), "", *summary(tflite), ""]
    if openvino:
        parts += [f"## OpenVINO (profile {PROFILES['openvino']}, device CPU)", "", *ov_table(openvino), "",
                  *ov_summary(openvino), ""]
    parts += details(runs)
    if raw_init and tflite:
        parts += ["", RAW_INIT_CAVEAT]
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------- detector

DETECTOR_RESULTS_FILE = RESULTS_FILE.with_name("convert_bench_detector.md")
DETECTOR_PROFILES = ("rpi5", "coral-usb", "intel-cpu")
DETECTOR_ENGINES = {
    "rpi5": "TFLite, timed with LiteRT",
    "coral-usb": (
        "Edge-TPU-ready full-integer TFLite (compile=False, no edgetpu_compiler here), timed on the CPU "
        "through the bundle's engine with cpu_fallback (no Edge TPU here: CPU numbers, not Edge TPU numbers)"
    ),
    "intel-cpu": "OpenVINO IR, timed on device CPU at the bundle's inference precision (f32)",
}
DETECTOR_SOURCES = {"keras": "shapes_detector.keras", "onnx": "YOLOv8-layout ONNX"}
# The ONNX file is the same network as the .keras file, so both must score alike once converted.
FLOAT_AGREEMENT = 0.005
INT8_AGREEMENT = 0.01
NO_BUDGET = 100.0  # max_drop of the extra "budget off" int8 row, only made when the default budget refuses int8


@dataclass(frozen=True)
class DetectorSizes:
    val: int
    calib: int
    rounds: int
    warmup: int


DETECTOR_FULL = DetectorSizes(val=300, calib=200, rounds=1000, warmup=20)  # ~1 ms a model: rounds are cheap
DETECTOR_QUICK = DetectorSizes(val=60, calib=200, rounds=100, warmup=5)


@dataclass
class DetectorRun:
    profile: str
    source: str  # a key of DETECTOR_SOURCES
    precision: str  # float or int8
    budget_off: bool = False  # converted with max_drop=NO_BUDGET to have an int8 bundle to time
    options: dict = field(default_factory=dict)  # extra convert() options
    report: object | None = None
    status: str = "ok"  # ok, over budget, failed
    notes: list[str] = field(default_factory=list)
    bundle_path: Path | None = None
    convert_seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.profile}/{self.source}/{self.precision}{' budget-off' if self.budget_off else ''}"

    @property
    def accuracy(self):
        return self.report.accuracy if self.report is not None else None

    def latency(self, q: float) -> float | None:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else None


def make_detector_data(root: Path, sizes: DetectorSizes) -> dict[str, Path]:
    """val: held-out YOLO scenes with truth; calib: scenes on the training photographs (images/ only is used)."""
    from edge_sdk.samples import shapes

    if (root / DATA_MARKER).is_file():
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / DATA_MARKER).touch()
    val = shapes.write_yolo(root / "val", sizes.val, seed=2026, photos=shapes.HELD_OUT_PHOTOS)
    calib = shapes.write_yolo(root / "calib", sizes.calib, seed=2027, photos=shapes.TRAIN_PHOTOS)
    return {"val": val, "calib": calib / "images"}


def detector_sources(root: Path) -> dict[str, Path]:
    """The shipped .keras detector and the same network written as a YOLOv8-layout ONNX file."""
    from edge_sdk.converters.assets import DETECTOR

    # The ONNX writer is the tests' helper (no exporter or torch is installed here).
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from support.models import onnx_detectors

    return {"keras": Path(DETECTOR), "onnx": onnx_detectors.yolov8_onnx_of_shipped_detector(root / "shapes_v8.onnx")}


def detector_runs(profiles: tuple[str, ...] = DETECTOR_PROFILES) -> list[DetectorRun]:
    """Float and int8 per profile and source; Coral has no float model (its float row is rpi5's float TFLite)."""
    runs = []
    for profile in profiles:
        for source in DETECTOR_SOURCES:
            for precision in ("int8",) if profile == "coral-usb" else ("float", "int8"):
                runs.append(DetectorRun(profile, source, precision))
    return runs


def convert_detector(run: DetectorRun, model: Path, out: Path, data: dict[str, Path]) -> None:
    """Convert with the default budget; an over-budget int8 keeps its report (``exc.report``), no bundle."""
    import inspect

    from edge_sdk.converters import convert
    from edge_sdk.errors import AccuracyBudgetError, ConversionError

    options = dict(profile=run.profile, out=out, calib=data["calib"], val=data["val"], compile=False,
                   precision="fp32" if run.precision == "float" else "int8", **run.options)
    if run.budget_off:
        options["max_drop"] = NO_BUDGET
        if "max_drop_map50_95" in inspect.signature(convert).parameters:
            options["max_drop_map50_95"] = NO_BUDGET
    log(f"detector: converting {run.name} ...")
    started = time.perf_counter()
    try:
        with contextlib.redirect_stdout(sys.stderr):  # Keras export and onnx2tf print to stdout
            result = convert(model, **options)
    except AccuracyBudgetError as exc:
        run.report, run.status = exc.report, "over budget"
    except ConversionError as exc:
        if run.profile != "coral-usb" or "min_tpu_ops" in run.options or "entirely on the Edge TPU" not in str(exc):
            raise
        # The default (every op on the TPU) refuses the model: say why, then measure it as
        # min_tpu_ops=0 lets it through (ops the pre-check flags would run on the CPU).
        run.notes.append(f"default refused: {str(exc).split(';')[0]}; converted again with min_tpu_ops=0")
        run.options["min_tpu_ops"] = 0.0
        shutil.rmtree(out, ignore_errors=True)
        convert_detector(run, model, out, data)
        run.convert_seconds = time.perf_counter() - started
        return
    else:
        run.report, run.bundle_path = result.report, open_bundle(result.bundle.path).path
    run.convert_seconds = time.perf_counter() - started
    a = run.accuracy
    log(f"detector: {run.name}: {run.status}, {run.convert_seconds:.1f} s, mAP@0.5 {a.reference.map50:.4f} -> "
        f"{a.converted.map50:.4f}, mAP@0.5:0.95 {a.reference.map50_95:.4f} -> {a.converted.map50_95:.4f}")


def detector_engine(run: DetectorRun, threads: int):
    """The bundle's own engine, as a device opens it; the Coral bundle falls back to LiteRT on the CPU."""
    return open_engine(open_bundle(run.bundle_path), device="CPU", threads=threads, cpu_fallback=True)


def detector_input(run: DetectorRun, engine, image_path: Path) -> np.ndarray:
    """One val scene through the bundle's own preprocessing (NHWC or NCHW), quantized if the input is integer."""
    x, _ = preprocess(cv2.imread(str(image_path)), open_bundle(run.bundle_path).manifest.preprocessing)
    spec = engine.input_specs()[0]
    if np.issubdtype(spec["dtype"], np.integer):
        scale, zero_point = spec["quantization"]
        x = quantize(x, scale=scale, zero_point=zero_point, dtype=spec["dtype"])
    return np.ascontiguousarray(x.astype(spec["dtype"], copy=False))


def table_rows(runs: list[DetectorRun], profile: str) -> list[tuple[DetectorRun, str]]:
    """(run, row label) for one target's table, source by source; Coral borrows rpi5's float rows."""
    rows = []
    for source in DETECTOR_SOURCES:
        for run in runs:
            if run.source != source:
                continue
            if run.profile == profile:
                label = run.precision + (f", max_drop={NO_BUDGET:g}" if run.budget_off else "")
                rows.append((run, label))
            elif profile == "coral-usb" and run.profile == "rpi5" and run.precision == "float":
                rows.append((run, "float (rpi5's float TFLite)"))
    return rows


def float_of(runs: list[DetectorRun], profile: str, source: str) -> DetectorRun | None:
    owner = "rpi5" if profile == "coral-usb" else profile
    return next((r for r in runs if r.profile == owner and r.source == source and r.precision == "float"), None)


def points(value: float) -> str:
    """A 0-1 difference in percentage points, signed; no "-0.00"."""
    return f"{round(100 * value, 2) + 0.0:+.2f}"


def detector_table(runs: list[DetectorRun], profile: str) -> list[str]:
    lines = [
        "| source | model | float ref. mAP@0.5 | mAP@0.5 | drop vs float, pts | float ref. mAP@0.5:0.95 | mAP@0.5:0.95 "
        "| drop vs float, pts | size | latency median / p90 ms | speed vs float | status |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for run, label in table_rows(runs, profile):
        a = run.accuracy
        base = float_of(runs, profile, run.source)
        median, p90 = run.latency(50), run.latency(90)
        latency = f"{median:.2f} / {p90:.2f}" if median is not None else "— (no bundle)"
        speed = "1.00x" if run is base else "—"
        if run is not base and median is not None and base is not None and base.latencies_ms:
            speed = f"{base.latency(50) / median:.2f}x"
        status = run.status + (f" (model: {a.remedy_used})" if a.remedy_used != "baseline" else "")
        lines.append(
            f"| {DETECTOR_SOURCES[run.source]} | {label} | {a.reference.map50:.4f} | {a.converted.map50:.4f} | "
            f"{points(a.converted.map50 - a.reference.map50)} | "
            f"{a.reference.map50_95:.4f} | {a.converted.map50_95:.4f} | "
            f"{points(a.converted.map50_95 - a.reference.map50_95)} | {megabytes(run.report.converted_bytes)} | "
            f"{latency} | {speed} | {status} |"
        )
    return lines


def agreement_check(runs: list[DetectorRun], profile: str) -> list[str]:
    """ONNX-sourced against Keras-sourced: float mAPs within 0.005, int8 mAPs within 1 point. Printed, never raised."""
    lines = []
    for precision, tolerance in (("float", FLOAT_AGREEMENT), ("int8", INT8_AGREEMENT)):
        if precision == "float":
            pair = [float_of(runs, profile, s) for s in ("keras", "onnx")]
        else:
            pair = [next((r for r in runs if r.profile == profile and r.source == s and r.precision == "int8"
                          and not r.budget_off), None) for s in ("keras", "onnx")]
        if None in pair:
            continue
        keras_run, onnx_run = pair
        parts, ok = [], True
        for metric in ("map50", "map50_95"):
            k, o = getattr(keras_run.accuracy.converted, metric), getattr(onnx_run.accuracy.converted, metric)
            ok &= abs(k - o) <= tolerance + 1e-12
            parts.append(f"{'mAP@0.5' if metric == 'map50' else 'mAP@0.5:0.95'} Keras {k:.4f} vs ONNX {o:.4f} "
                         f"(|diff| {abs(k - o):.4f})")
        verdict = "PASS" if ok else "FAIL"
        lines.append(f"- {profile} {precision}: {'; '.join(parts)}; tolerance {tolerance:g} -> {verdict}")
    return lines


def detector_details(runs: list[DetectorRun]) -> list[str]:
    lines = []
    for run in runs:
        a = run.accuracy
        tried = ", ".join(f"{r.name} {attempt_scores(r)}" for r in a.remedies)
        budget = f"budget mAP@0.5 {a.max_drop:g} pts (drop {round(a.drop_points, 2) + 0.0:.2f})"
        if getattr(a, "max_drop_map50_95", None) is not None:
            budget += f", mAP@0.5:0.95 {a.max_drop_map50_95:g} pts (drop {round(a.drop_map50_95_points, 2) + 0.0:.2f})"
        line = (f"- {run.name}: {run.convert_seconds:.1f} s to convert; head {run.report.head}; "
                f"attempts (mAP@0.5 / mAP@0.5:0.95): {tried}; {budget}; "
                f"box agreement with the float reference {100 * a.agreement:.1f}%")
        q = run.report.quantization
        if q is not None and getattr(q, "decode", None):
            line += f"; decode {q.decode}"
        if q is not None and q.float_ops:
            line += f"; {len(q.float_ops)} float ops"
        if run.report.edgetpu is not None:
            e = run.report.edgetpu
            failed = "; ".join(i.rule for i in e.precheck if i.severity == "error")
            line += f"; Edge TPU pre-check {'passed' if e.precheck_passed else 'failed: ' + failed}"
        if run.latencies_ms:
            line += f"; latency over {len(run.latencies_ms)} runs"
        lines += [line] + [f"  - {note}" for note in run.notes]
    return lines


def attempt_scores(remedy) -> str:
    if remedy.top1 is None:
        return "n/a"
    second = getattr(remedy, "map50_95", None)
    return f"{remedy.top1:.4f}" + (f" / {second:.4f}" if second is not None else "")


DETECTOR_NOTES = (
    "Notes: each row is one `convert()` with the default accuracy budget; 'float ref.' is the float model that "
    "conversion scores against (the source itself), 'drop vs float' is converted minus that reference, in "
    "percentage points. An int8 conversion over budget writes no bundle; its row comes from the error's report "
    "(the best attempt, named in status) and has no latency; the extra 'max_drop=100' row is the same "
    "conversion with the budget switched off, so there is an int8 model to time. Size is the bundle's model "
    "file(s) (.tflite, or OpenVINO .xml + .bin). Latency: one image, batch 1, all models round-robin in one loop."
)


def render_detector(runs: list[DetectorRun], machine: str, header: str) -> str:
    parts = ["# convert_bench --detector", "", header, "", machine, ""]
    for profile in DETECTOR_PROFILES:
        if not any(r.profile == profile for r in runs):
            continue
        parts += [f"## {profile}: {DETECTOR_ENGINES[profile]}", "", *detector_table(runs, profile), ""]
    parts += ["## ONNX-sourced against Keras-sourced (same network)", ""]
    for profile in DETECTOR_PROFILES:
        parts += agreement_check(runs, profile)
    parts += ["", DETECTOR_NOTES, "", "## Details", "", *detector_details(runs)]
    return "\n".join(parts) + "\n"


def detector_benchmark(work: Path, args: argparse.Namespace) -> str:
    started = time.monotonic()
    sizes = DETECTOR_QUICK if args.quick else DETECTOR_FULL
    rounds = args.rounds or sizes.rounds
    log(f"detector: writing {sizes.val} val and {sizes.calib} calibration scenes in {work / 'detector'}")
    data = make_detector_data(work / "detector" / "data", sizes)
    sources = detector_sources(work / "detector")
    runs = detector_runs()
    bundles = work / "detector" / "bundles"
    for run in list(runs):
        convert_detector(run, sources[run.source], bundles / run.name.replace("/", "_"), data)
        if run.status == "over budget":
            extra = DetectorRun(run.profile, run.source, run.precision, budget_off=True, options=dict(run.options))
            runs.insert(runs.index(run) + 1, extra)
            convert_detector(extra, sources[run.source], bundles / (run.name.replace("/", "_") + "_nobudget"), data)
    timed = [r for r in runs if r.bundle_path is not None]
    log(f"detector: timing {rounds} rounds x {len(timed)} models, {args.threads} threads")
    sample = sorted((data["val"] / "images").glob("*.png"))[0]
    others = other_load(lambda: measure_latency(timed, sample, threads=args.threads, rounds=rounds, warmup=sizes.warmup,
                                                engine_of=detector_engine, input_of=detector_input))
    header = (
        f"The shipped shapes detector (160x160x3, 4 classes, YOLOv5 head, 0-1 boxes) as its `.keras` file and as "
        f"the same network written as a YOLOv8-layout ONNX file ([1, 8, 400], pixel boxes, NCHW input; "
        f"TFLite targets go through onnx2tf {metadata.version('onnx2tf')}), converted for "
        f"{', '.join(DETECTOR_PROFILES)}; {sizes.val} held-out val scenes, {sizes.calib} calibration scenes "
        f"(training photographs); {rounds} timed rounds after {sizes.warmup} warm-up"
        f"{' (quick)' if args.quick else ''}, "
        f"all {len(timed)} bundles round-robin in one loop; other processes used "
        f"{'n/a' if others is None else f'{100 * others:.0f}%'} of the CPUs while timing; "
        f"whole run {time.monotonic() - started:.0f} s"
    )
    return render_detector(runs, machine_line(args.threads, ("tflite", "openvino")), header)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds", type=int, default=None,
        help="timed invokes per model (classifier: default 100, 20 with --quick; detector: 1000, 100 with --quick)",
    )
    parser.add_argument("--threads", type=int, default=2, help="LiteRT and OpenVINO CPU threads (default 2)")
    parser.add_argument("--out-dir", type=Path, default=None, help="keep data, model and bundles here (default: a temp dir, removed)")
    parser.add_argument("--quick", action="store_true", help="fewer images and rounds: a smoke run")
    parser.add_argument("--val", action="store_true", help="also pass the val folder to convert and report top-1 (slower)")
    parser.add_argument("--epochs", type=int, default=1, help="pruning fine-tune epochs (default 1)")
    parser.add_argument(
        "--raw-init", action="store_true",
        help="keep MobileNetV2's initial BatchNorm statistics (degenerate activations) instead of setting them from train images",
    )
    part = parser.add_mutually_exclusive_group()
    part.add_argument(
        "--detector", action="store_true",
        help="only the detector part: the shipped detector (.keras and YOLOv8-layout ONNX), float and int8 for rpi5, "
             f"coral-usb and intel-cpu, with mAP (written to {DETECTOR_RESULTS_FILE.name})",
    )
    part.add_argument("--no-detector", action="store_true", help="only the classifier part (--targets applies to it)")
    parser.add_argument(
        "--targets", type=parse_targets, default=TARGETS,
        help="comma-separated targets to benchmark: tflite, openvino (default tflite,openvino)",
    )
    return parser.parse_args(argv)


def parse_targets(text: str) -> tuple[str, ...]:
    chosen = [t.strip().lower() for t in text.split(",") if t.strip()]
    unknown = sorted(set(chosen) - set(TARGETS))
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {','.join(TARGETS)}, not '{text}'")
    return tuple(t for t in TARGETS if t in chosen)


def benchmark(work: Path, args: argparse.Namespace) -> str:
    sizes = QUICK if args.quick else FULL
    rounds = args.rounds or sizes.rounds
    log(f"generating images in {work / 'data'}")
    data = make_datasets(work / "data", sizes)
    model_path = build_model(work / "mobilenetv2.keras", data["train"], bn_statistics=not args.raw_init)
    runs = variants(data, use_val=args.val, epochs=args.epochs, targets=args.targets)
    for v in runs:
        run_conversion(v, model_path, work / "bundles" / v.name.replace("+", "_"))
    log(f"timing {rounds} rounds x {len(runs)} models, {args.threads} threads")
    sample = sorted(data["val"].rglob("*.png"))[0]
    others = other_load(
        lambda: measure_latency(runs, sample, threads=args.threads, rounds=rounds, warmup=sizes.warmup)
    )
    init = "initial BatchNorm statistics" if args.raw_init else f"BatchNorm statistics from {BN_IMAGES} train images"
    profiles = " and ".join(f"{PROFILES[t]} ({'TFLite' if t == 'tflite' else 'OpenVINO'})" for t in args.targets)
    header = (
        f"MobileNetV2 (untrained, {init}; 224x224x3, {NUM_CLASSES} classes), profile{'s' if len(args.targets) > 1 else ''} {profiles}; "
        f"{sizes.calib} calibration images, {sizes.train_per_class * NUM_CLASSES} train images"
        f"{', ' + str(sizes.val_per_class * NUM_CLASSES) + ' val images' if args.val else ''}; "
        f"{rounds} timed rounds after {sizes.warmup} warm-up{' (quick)' if args.quick else ''}, "
        f"all {len(runs)} models round-robin in one loop; "
        f"other processes used {'n/a' if others is None else f'{100 * others:.0f}%'} of the CPUs while timing"
    )
    return render(runs, machine_line(args.threads, args.targets), header, raw_init=args.raw_init)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    parts = []
    if not args.detector:
        parts.append((benchmark, RESULTS_FILE))
    if not args.no_detector:
        parts.append((detector_benchmark, DETECTOR_RESULTS_FILE))
    work = args.out_dir or Path(tempfile.mkdtemp(prefix="convert_bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        for index, (run, results) in enumerate(parts):
            text = run(work, args)
            print(("\n" if index else "") + text, end="", flush=True)
            results.parent.mkdir(parents=True, exist_ok=True)
            results.write_text(text, encoding="utf-8")
            log(f"written to {results}")
    finally:
        if args.out_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
