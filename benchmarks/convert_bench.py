"""Float vs int8 vs pruned+int8: size, gzip size, LiteRT latency and conversion time, in one run.

Builds an untrained MobileNetV2-sized classifier (nothing is downloaded), generates images from
scikit-image's bundled sample photos, converts three times through ``edge_sdk.converters.convert``
and times every bundle with ``LiteRTEngine``. Prints a Markdown table and writes it to
``benchmarks/results/convert_bench.md``.

    .venv/bin/python benchmarks/convert_bench.py            # full run, several minutes on 2 cores
    .venv/bin/python benchmarks/convert_bench.py --quick    # smoke run
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

from edge_sdk.backends.litert import LiteRTEngine
from edge_sdk.bundle import open_bundle
from edge_sdk.preprocess import quantize

RESULTS_FILE = Path(__file__).resolve().parent / "results" / "convert_bench.md"
INPUT_SIZE = 224
NUM_CLASSES = 10
SPEEDUP_TARGET = 1.8
SIZE_TARGET = 0.30
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
    convert_seconds: float = 0.0
    model_path: Path | None = None
    report: object | None = None
    file_bytes: int = 0
    gzip_bytes: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.latencies_ms)


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


def variants(data: dict[str, Path], *, use_val: bool, epochs: int) -> list[Variant]:
    common = dict(profile="x86-cpu", calib=data["calib"], min_calib=1)
    if use_val:
        # Accuracy is reported, not enforced: an untrained model would only trip the remedies.
        common.update(val=data["val"], max_drop=100.0)
    return [
        Variant("float", dict(common, precision="fp32")),
        Variant("int8", dict(common, precision="int8")),
        Variant("pruned+int8", dict(common, precision="int8", prune=0.5, train=data["train"], epochs=epochs)),
    ]


def run_conversion(variant: Variant, model_path: Path, out: Path) -> None:
    from edge_sdk.converters import convert

    log(f"converting {variant.name} ...")
    started = time.perf_counter()
    # Keras 3's export prints every captured variable to stdout; keep stdout for the table.
    with contextlib.redirect_stdout(sys.stderr):
        result = convert(model_path, out=out, **variant.options)
    variant.convert_seconds = time.perf_counter() - started
    bundle = open_bundle(result.bundle.path)  # re-read from disk: hashes verified
    variant.model_path = bundle.model_path
    variant.report = result.report
    content = variant.model_path.read_bytes()
    variant.file_bytes = len(content)
    variant.gzip_bytes = len(gzip.compress(content, compresslevel=9))
    log(f"{variant.name}: {variant.convert_seconds:.1f} s, {variant.file_bytes} bytes")


# --------------------------------------------------------------------------- latency


def ready_input(engine: LiteRTEngine, image_path: Path) -> np.ndarray:
    """One real image as the model's input tensor: float [0, 1] RGB, quantized if the input is integer."""
    spec = engine.input_specs()[0]
    shape = [1 if d < 0 else d for d in spec["shape"]]
    x = load_rgb([image_path])
    if x.shape[1:3] != (shape[1], shape[2]):
        x = cv2.resize(x[0], (shape[2], shape[1]), interpolation=cv2.INTER_LINEAR)[None, ...]
    if np.issubdtype(spec["dtype"], np.integer):
        scale, zero_point = spec["quantization"]
        x = quantize(x, scale=scale, zero_point=zero_point, dtype=spec["dtype"])
    return np.ascontiguousarray(x.astype(spec["dtype"], copy=False))


def measure_latency(runs: list[Variant], image_path: Path, *, threads: int, rounds: int, warmup: int, seed: int = 0) -> None:
    """Round-robin invokes, in a fresh random order each round, so machine noise hits every model alike."""
    engines = [LiteRTEngine(v.model_path, threads=threads) for v in runs]
    inputs = [ready_input(e, image_path) for e in engines]
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


def machine_line(threads: int) -> str:
    from edge_sdk.converters import _tf

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"machine: {cpu}, {os.cpu_count()} cores ({usable} usable), {platform.system()} {platform.machine()}; "
        f"python {platform.python_version()}, tensorflow {_tf.tensorflow().__version__}, "
        f"ai-edge-litert {metadata.version('ai-edge-litert')}; threads={threads}"
    )


def megabytes(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def table(runs: list[Variant]) -> list[str]:
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


RAW_INIT_CAVEAT = (
    "caveat (--raw-init): the float and int8 files share one buffer for their many identical all-zero "
    "biases, so they are a little smaller than a trained model's; activations and accuracy are degenerate."
)


def render(runs: list[Variant], machine: str, header: str, *, raw_init: bool) -> str:
    parts = ["# convert_bench", "", header, "", machine, "", *table(runs), "", *summary(runs), "", *details(runs)]
    if raw_init:
        parts += ["", RAW_INIT_CAVEAT]
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None, help="timed invokes per model (default 100, 20 with --quick)")
    parser.add_argument("--threads", type=int, default=2, help="LiteRT threads (default 2)")
    parser.add_argument("--out-dir", type=Path, default=None, help="keep data, model and bundles here (default: a temp dir, removed)")
    parser.add_argument("--quick", action="store_true", help="fewer images and rounds: a smoke run")
    parser.add_argument("--val", action="store_true", help="also pass the val folder to convert and report top-1 (slower)")
    parser.add_argument("--epochs", type=int, default=1, help="pruning fine-tune epochs (default 1)")
    parser.add_argument(
        "--raw-init", action="store_true",
        help="keep MobileNetV2's initial BatchNorm statistics (degenerate activations) instead of setting them from train images",
    )
    return parser.parse_args(argv)


def benchmark(work: Path, args: argparse.Namespace) -> str:
    sizes = QUICK if args.quick else FULL
    rounds = args.rounds or sizes.rounds
    log(f"generating images in {work / 'data'}")
    data = make_datasets(work / "data", sizes)
    model_path = build_model(work / "mobilenetv2.keras", data["train"], bn_statistics=not args.raw_init)
    runs = variants(data, use_val=args.val, epochs=args.epochs)
    for v in runs:
        run_conversion(v, model_path, work / "bundles" / v.name.replace("+", "_"))
    log(f"timing {rounds} rounds x {len(runs)} models, {args.threads} threads")
    sample = sorted(data["val"].rglob("*.png"))[0]
    others = other_load(
        lambda: measure_latency(runs, sample, threads=args.threads, rounds=rounds, warmup=sizes.warmup)
    )
    init = "initial BatchNorm statistics" if args.raw_init else f"BatchNorm statistics from {BN_IMAGES} train images"
    header = (
        f"MobileNetV2 (untrained, {init}; 224x224x3, {NUM_CLASSES} classes), profile x86-cpu; "
        f"{sizes.calib} calibration images, {sizes.train_per_class * NUM_CLASSES} train images"
        f"{', ' + str(sizes.val_per_class * NUM_CLASSES) + ' val images' if args.val else ''}; "
        f"{rounds} timed rounds after {sizes.warmup} warm-up{' (quick)' if args.quick else ''}; "
        f"other processes used {'n/a' if others is None else f'{100 * others:.0f}%'} of the CPUs while timing"
    )
    return render(runs, machine_line(args.threads), header, raw_init=args.raw_init)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.out_dir is not None:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        text = benchmark(args.out_dir, args)
    else:
        work = Path(tempfile.mkdtemp(prefix="convert_bench-"))
        try:
            text = benchmark(work, args)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    print(text, end="")
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(text, encoding="utf-8")
    log(f"written to {RESULTS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
