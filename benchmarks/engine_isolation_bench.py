"""What running the engine in a child process (``watchdog.isolate``) costs, against the engine in this process, in one run.

Two bundles, a tiny one and one with a 300 KiB input, because isolation's cost is copying every
input and output through a socket (and a process switch each way):

  digits     the tests' digits CNN (``tests/support/digits.py`` ``build_cnn``), untrained, 32x32 int8 TFLite, profile rpi4
  detector   the shipped shapes detector (``converters/assets/shapes_detector.keras``), int8 TFLite for x86-cpu
             (float32 I/O: a 160x160x3 input, a 400x9 YOLO output) with the demo's letterbox resize, not pruned
             (pruning changes no tensor shape)

and three measurements, each interleaved round by round in a fresh random order:

  1. latency    ``engine.run([tensor])`` on one tensor the pipeline's own adapter prepared: ``open_engine``
                (in-process) against ``EngineProcess`` (isolated); median, p99, and CPU time per inference
                summed over this process and the engine's child;
  2. pipeline   ``open_pipeline(bundle, config=RunConfig(watchdog={"isolate": False | True}))`` over a video of
                moving shapes (``edge_sdk.samples.shapes.moving_video``), a JSON sink; median frames/s;
  3. start-up   open to first result: ``open_engine(open_bundle(path))`` against ``EngineProcess(path)``, both with
                this process's imports already done (a watchdog restart), the child importing numpy and LiteRT afresh.

Every engine runs 1 LiteRT thread, so the child's inference has no more CPU than the in-process one.
Bundles are converted once (in a child process: TensorFlow never enters the measuring process) and
cached in ``benchmarks/results/cache/`` with the video. Prints Markdown tables and writes them to
``benchmarks/results/engine_isolation_bench.md``.

    TF_USE_LEGACY_KERAS=1 .venv/bin/python benchmarks/engine_isolation_bench.py           # ~1.5 minutes on 2 cores (+~1 minute for the first conversions)
    TF_USE_LEGACY_KERAS=1 .venv/bin/python benchmarks/engine_isolation_bench.py --quick   # smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import cv2
import common
import numpy as np

from common import cpu_model  # noqa: E402 (this folder's shared helpers)
from edge_sdk.backends import open_engine
from edge_sdk.backends.worker import EngineProcess
from edge_sdk.bundle import open_bundle
from edge_sdk.config import RunConfig
from edge_sdk.pipeline import InputAdapter, open_pipeline
from edge_sdk.sources import open_source

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS_FILE = HERE / "results" / "engine_isolation_bench.md"
CACHE = HERE / "results" / "cache"
THREADS = 1  # both sides: the child gets no more inference CPU than the in-process engine
VIDEO_SIZE = (640, 480)
MODES = ("in-process", "isolated")


@dataclass(frozen=True)
class Subject:
    """A bundle under test: where it is cached and how the pipeline reports its results."""

    key: str
    title: str
    folder: str
    threshold: float  # the untrained classifier's softmax is flat: 0 reports every frame


SUBJECTS = (
    Subject("digits", "digits CNN (rpi4 int8)", "digits-cnn-int8-rpi4", threshold=0.0),
    Subject("detector", "shapes detector (x86-cpu int8)", "shapes-detector-int8-x86-cpu", threshold=0.4),
)


@dataclass(frozen=True)
class Sizes:
    rounds: int  # interleaved rounds of every measurement
    runs: int  # engine.run calls per latency round
    warmup: int
    frames: int  # video length for the pipeline rounds
    starts: int  # start-ups per (bundle, mode)


FULL = Sizes(rounds=7, runs=200, warmup=20, frames=600, starts=7)
QUICK = Sizes(rounds=2, runs=30, warmup=5, frames=30, starts=2)


def log(message: str) -> None:
    print(f"[engine_isolation_bench] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- CPU accounting


def busy_cpu_seconds() -> float | None:
    """CPU seconds every process on the machine has spent busy, from /proc/stat (Linux only)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds the live threads of a process have run, to the nanosecond (0 once it is gone).

    /proc/<pid>/stat counts in 10 ms ticks: too coarse for a 0.3 ms inference.
    """
    total = 0
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


class CpuMeter:
    """CPU spent by this process and the engine's child (``pids``, alive throughout) while the block ran,
    and the share of all CPUs that every other process kept busy meanwhile.

    The child is not "other": a waited-for child would show in ``os.times``, a live one does not.
    """

    def __init__(self, pids: list[int] | None = None) -> None:
        self.pids = pids or []

    def _ours(self) -> float:
        reaped = os.times()
        return time.process_time() + reaped.children_user + reaped.children_system + sum(map(process_cpu_seconds, self.pids))

    def __enter__(self) -> CpuMeter:
        self.ours_s, self.other_share = 0.0, None
        self._busy, self._ours0, self._start = busy_cpu_seconds(), self._ours(), time.monotonic()
        return self

    def __exit__(self, *exc) -> None:
        busy, ours, wall = busy_cpu_seconds(), self._ours(), time.monotonic() - self._start
        self.ours_s = ours - self._ours0
        if self._busy is not None and busy is not None and wall > 0:
            self.other_share = max(0.0, (busy - self._busy - self.ours_s) / (wall * (os.cpu_count() or 1)))


# --------------------------------------------------------------------------- bundles and video


def ensure_bundle(subject: Subject) -> Path:
    """The cached bundle, converted now in a child process (it imports TensorFlow) if missing or unreadable."""
    folder = CACHE / subject.folder
    return common.cached_bundle(folder, [str(Path(__file__).resolve()), "--convert", subject.key, str(folder)],
                                log=log, what=f"{subject.key} bundle")


def convert_digits(folder: Path) -> None:
    """As ``tests/support/reliability/scenarios.py`` ``small_bundle``: the untrained digits CNN, rpi4 int8."""
    sys.path.insert(0, str(ROOT / "tests"))
    from support.digits import build_cnn

    from edge_sdk.converters import _tf, convert
    from edge_sdk.samples.digits import write_digits

    work = folder.parent / f"{folder.name}.build"
    shutil.rmtree(work, ignore_errors=True)
    data = write_digits(work / "data")
    keras = _tf.keras3()
    keras.utils.set_random_seed(0)
    inp, out = build_cnn(keras.layers)
    model_path = work / "digits-untrained.keras"
    keras.Model(inp, out).save(model_path)
    with contextlib.redirect_stdout(sys.stderr):
        convert(model_path, profile="rpi4", out=folder, calib=data["calib"], compile=False)
    shutil.rmtree(work, ignore_errors=True)


def convert_detector(folder: Path) -> None:
    """As ``edge-sdk demo`` converts it (letterbox, calibration on generated scenes), minus the pruning."""
    from edge_sdk.converters import convert
    from edge_sdk.converters.assets import DETECTOR
    from edge_sdk.samples import shapes

    work = folder.parent / f"{folder.name}.build"
    shutil.rmtree(work, ignore_errors=True)
    calib = shapes.write_yolo(work / "calib", 200, seed=1, photos=shapes.TRAIN_PHOTOS)
    with contextlib.redirect_stdout(sys.stderr):
        convert(DETECTOR, profile="x86-cpu", out=folder, calib=calib, resize="letterbox", name="shapes-detector")
    shutil.rmtree(work, ignore_errors=True)


CONVERTERS: dict[str, Callable[[Path], None]] = {"digits": convert_digits, "detector": convert_detector}


def ensure_video(frames: int) -> Path:
    """A ``frames``-long 640x480 MJPG video of shapes moving over a photograph, written once and cached."""
    from edge_sdk.samples import shapes

    path = CACHE / f"shapes-{frames}f-{VIDEO_SIZE[0]}x{VIDEO_SIZE[1]}.avi"
    if path.is_file():
        log(f"reusing video {path.name}")
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.stem + ".partial.avi")
    shapes.moving_video(partial, frames=frames, width=VIDEO_SIZE[0], height=VIDEO_SIZE[1], objects=4)
    partial.replace(path)
    log(f"wrote video {path.name}")
    return path


def first_frame(video: Path) -> np.ndarray:
    capture = cv2.VideoCapture(str(video))
    ok, frame = capture.read()
    capture.release()
    if not ok:
        raise RuntimeError(f"cannot read {video}")
    return frame


def open_mode(path: Path, mode: str):
    if mode == "isolated":
        return EngineProcess(path, threads=THREADS)
    return open_engine(open_bundle(path), threads=THREADS)


def close_engine(engine) -> None:
    close = getattr(engine, "close", None)
    if close is not None:
        close()


def shuffled(keys: list, rng: np.random.Generator) -> list:
    return [keys[i] for i in rng.permutation(len(keys))]


# --------------------------------------------------------------------------- 1. latency


@dataclass
class LatencyColumn:
    subject: Subject
    mode: str
    engine: object
    tensor: np.ndarray
    samples_ms: list[float] = field(default_factory=list)
    round_medians: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)  # per inference, per round
    other_load: list[float | None] = field(default_factory=list)

    def round(self, runs: int) -> None:
        engine, inputs, clock = self.engine, [self.tensor], time.perf_counter
        times = []
        with CpuMeter([engine.pid] if self.mode == "isolated" else None) as meter:
            for _ in range(runs):
                started = clock()
                engine.run(inputs)
                times.append((clock() - started) * 1e3)
        self.samples_ms += times
        self.round_medians.append(statistics.median(times))
        self.cpu_ms.append(1e3 * meter.ours_s / runs)
        self.other_load.append(meter.other_share)

    def p(self, q: float) -> float:
        return float(np.percentile(self.samples_ms, q))


def measure_latency(paths: dict[str, Path], frame: np.ndarray, sizes: Sizes, rng: np.random.Generator) -> tuple[dict, dict]:
    columns: dict[tuple[str, str], LatencyColumn] = {}
    shapes: dict[str, dict] = {}
    for subject in SUBJECTS:
        bundle = open_bundle(paths[subject.key])
        for mode in MODES:
            engine = open_mode(paths[subject.key], mode)
            tensor, _ = InputAdapter(bundle.manifest.preprocessing, engine.input_specs()[0])(frame)
            columns[subject.key, mode] = LatencyColumn(subject, mode, engine, tensor)
        reference, isolated = (columns[subject.key, m] for m in MODES)
        want, got = reference.engine.run([reference.tensor]), isolated.engine.run([isolated.tensor])
        if not all(np.array_equal(a, b) for a, b in zip(want, got)):
            raise RuntimeError(f"{subject.key}: the isolated engine's outputs differ from the in-process engine's")
        shapes[subject.key] = {
            "input": f"{'x'.join(map(str, reference.tensor.shape))} {reference.tensor.dtype}",
            "output": ", ".join(f"{'x'.join(map(str, a.shape))} {a.dtype}" for a in want),
            "bytes": reference.tensor.nbytes + sum(a.nbytes for a in want),
        }
        for column in (reference, isolated):
            for _ in range(sizes.warmup):
                column.engine.run([column.tensor])
    try:
        for r in range(sizes.rounds):
            order = shuffled(list(columns), rng)
            for key in order:
                columns[key].round(sizes.runs)
            log(f"latency round {r + 1}/{sizes.rounds}: " + ", ".join(
                f"{s} {m} {columns[s, m].round_medians[-1]:.3f} ms" for s, m in columns))
    finally:
        for column in columns.values():
            close_engine(column.engine)
    return columns, shapes


# --------------------------------------------------------------------------- 2. pipeline


@dataclass
class PipelineColumn:
    subject: Subject
    mode: str
    path: Path
    fps: list[float] = field(default_factory=list)
    infer_p50_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)  # per frame, this process and the engine's child
    other_load: list[float | None] = field(default_factory=list)

    def round(self, video: Path, frame: np.ndarray, frames: int, warmup: int) -> None:
        config = RunConfig.model_validate(
            {"threads": THREADS, "threshold": self.subject.threshold, "watchdog": {"isolate": self.mode == "isolated"}}
        )
        pipeline = open_pipeline(self.path, config=config)
        try:
            for _ in range(warmup):
                pipeline.infer(frame)
            pid = getattr(pipeline.engine, "pid", None)
            sink, count = io.StringIO(), 0
            with CpuMeter([pid] if pid else None) as meter:
                started = time.perf_counter()
                for result in pipeline.run(open_source(str(video))):
                    sink.write(json.dumps(result.to_json()))
                    sink.write("\n")
                    count += 1
                elapsed = time.perf_counter() - started
            stats = pipeline.stats.snapshot()
        finally:
            pipeline.close()
        restarts = pipeline.health.restarts
        if count != frames or restarts:
            raise RuntimeError(f"{self.subject.key} {self.mode}: {count} of {frames} frames, {restarts} engine restarts")
        self.fps.append(count / elapsed)
        self.infer_p50_ms.append(stats.infer_ms_p50 if stats.infer_ms_p50 is not None else float("nan"))
        self.cpu_ms.append(1e3 * meter.ours_s / count)
        self.other_load.append(meter.other_share)
        gc.collect()


def measure_pipeline(paths: dict[str, Path], video: Path, frame: np.ndarray, sizes: Sizes, rng: np.random.Generator) -> dict:
    columns = {(s.key, m): PipelineColumn(s, m, paths[s.key]) for s in SUBJECTS for m in MODES}
    for r in range(sizes.rounds):
        for key in shuffled(list(columns), rng):
            columns[key].round(video, frame, sizes.frames, warmup=5)
        log(f"pipeline round {r + 1}/{sizes.rounds}: " + ", ".join(f"{s} {m} {columns[s, m].fps[-1]:.1f} fps" for s, m in columns))
    return columns


# --------------------------------------------------------------------------- 3. start-up


@dataclass
class StartColumn:
    subject: Subject
    mode: str
    path: Path
    tensor: np.ndarray
    open_ms: list[float] = field(default_factory=list)
    first_ms: list[float] = field(default_factory=list)  # open + the first run

    def once(self) -> None:
        started = time.perf_counter()
        engine = open_mode(self.path, self.mode)
        opened = time.perf_counter()
        engine.run([self.tensor])
        done = time.perf_counter()
        close_engine(engine)
        del engine
        gc.collect()
        self.open_ms.append((opened - started) * 1e3)
        self.first_ms.append((done - started) * 1e3)


def measure_startup(paths: dict[str, Path], tensors: dict[str, np.ndarray], sizes: Sizes, rng: np.random.Generator) -> tuple[dict, float | None]:
    columns = {(s.key, m): StartColumn(s, m, paths[s.key], tensors[s.key]) for s in SUBJECTS for m in MODES}
    with CpuMeter() as meter:
        for r in range(sizes.starts):
            for key in shuffled(list(columns), rng):
                columns[key].once()
            log(f"start-up round {r + 1}/{sizes.starts}: " + ", ".join(f"{s} {m} {columns[s, m].first_ms[-1]:.0f} ms" for s, m in columns))
    return columns, meter.other_share


# --------------------------------------------------------------------------- report


def machine_line() -> str:
    cpu = cpu_model()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "absent"

    return (
        f"machine: {cpu}, {os.cpu_count()} cores ({usable} usable), {platform.system()} {platform.release()} {platform.machine()}; "
        f"python {platform.python_version()}, edge-sdk {version('edge-sdk')}, ai-edge-litert {version('ai-edge-litert')}, "
        f"numpy {np.__version__}, opencv {cv2.__version__}, pydantic {version('pydantic')}; "
        f"bundles converted with tensorflow {version('tensorflow')} (never imported while measuring)"
    )


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}%"


def loads(values: list[float | None]) -> str:
    return ", ".join(percent(v) for v in values)


def render(latency: dict, shapes: dict, pipeline: dict, starts: dict, *, header: str, machine: str) -> str:
    lines = ["# engine_isolation_bench", "", header, "", machine, "", "## 1. Per-inference latency: `engine.run([tensor])`", "",
             "| bundle | input | output | bytes in+out | in-process p50 ms | isolated p50 ms | p50 ratio | in-process p99 ms "
             "| isolated p99 ms | p99 ratio | added p50 ms | CPU ms/inference in-process | CPU ms/inference isolated (both processes) |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in SUBJECTS:
        a, b = latency[s.key, "in-process"], latency[s.key, "isolated"]
        shape = shapes[s.key]
        lines.append(
            f"| {s.title} | {shape['input']} | {shape['output']} | {shape['bytes'] / 1024:.1f} KiB | {a.p(50):.3f} | {b.p(50):.3f} "
            f"| {b.p(50) / a.p(50):.2f} | {a.p(99):.3f} | {b.p(99):.3f} | {b.p(99) / a.p(99):.2f} | {b.p(50) - a.p(50):.3f} "
            f"| {statistics.median(a.cpu_ms):.3f} | {statistics.median(b.cpu_ms):.3f} |"
        )
    lines += ["", "## 2. Pipeline frames/s over the video (`watchdog.isolate`)", "",
              "| bundle | isolate: false fps | isolate: true fps | true/false | infer p50 ms false | infer p50 ms true "
              "| CPU ms/frame false | CPU ms/frame true (both processes) |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in SUBJECTS:
        a, b = pipeline[s.key, "in-process"], pipeline[s.key, "isolated"]
        fa, fb = statistics.median(a.fps), statistics.median(b.fps)
        lines.append(f"| {s.title} | {fa:.1f} | {fb:.1f} | {fb / fa:.2f} | {statistics.median(a.infer_p50_ms):.2f} "
                     f"| {statistics.median(b.infer_p50_ms):.2f} "
                     f"| {statistics.median(a.cpu_ms):.2f} | {statistics.median(b.cpu_ms):.2f} |")
    lines += ["", "## 3. Start-up: open to first result", "",
              "| bundle | in-process open ms | in-process first result ms | isolated open ms | isolated first result ms | ratio | added ms |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for s in SUBJECTS:
        a, b = starts[s.key, "in-process"], starts[s.key, "isolated"]
        fa, fb = statistics.median(a.first_ms), statistics.median(b.first_ms)
        lines.append(f"| {s.title} | {statistics.median(a.open_ms):.1f} | {fa:.1f} | {statistics.median(b.open_ms):.1f} | {fb:.1f} | {fb / fa:.0f} | {fb - fa:.0f} |")
    lines += ["", "## Per round", ""]
    for (key, mode), column in latency.items():
        ratios = ""
        if mode == "isolated":
            base = latency[key, "in-process"].round_medians
            ratios = f"; isolated/in-process per round {', '.join(f'{b / a:.2f}' for a, b in zip(base, column.round_medians))}"
        lines.append(f"- latency {key} {mode}: p50 ms per round {', '.join(f'{v:.3f}' for v in column.round_medians)}{ratios}; "
                     f"other processes used {loads(column.other_load)} of the CPUs")
    for (key, mode), column in pipeline.items():
        lines.append(f"- pipeline {key} {mode}: frames/s per round {', '.join(f'{v:.1f}' for v in column.fps)}; "
                     f"other processes used {loads(column.other_load)} of the CPUs")
    for (key, mode), column in starts.items():
        lines.append(f"- start-up {key} {mode}: first result ms {', '.join(f'{v:.0f}' for v in column.first_ms)}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, runs and frames: a smoke run")
    parser.add_argument("--seed", type=int, default=0, help="seed of the per-round order")
    parser.add_argument("--convert", nargs=2, metavar=("KEY", "FOLDER"), default=None, help=argparse.SUPPRESS)  # internal: the conversion child
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.convert is not None:
        key, folder = args.convert
        CONVERTERS[key](Path(folder))
        return 0
    sizes = QUICK if args.quick else FULL
    rng = np.random.default_rng(args.seed)
    paths = {s.key: ensure_bundle(s) for s in SUBJECTS}
    video = ensure_video(sizes.frames)
    frame = first_frame(video)
    with CpuMeter() as overall:
        log(f"1. latency: {sizes.rounds} rounds x {sizes.runs} runs per (bundle, mode)")
        latency, shapes = measure_latency(paths, frame, sizes, rng)
        tensors = {s.key: latency[s.key, "in-process"].tensor for s in SUBJECTS}
        log(f"2. pipeline: {sizes.rounds} rounds over {video.name}")
        pipeline = measure_pipeline(paths, video, frame, sizes, rng)
        log(f"3. start-up: {sizes.starts} per (bundle, mode)")
        starts, start_load = measure_startup(paths, tensors, sizes, rng)
    header = (
        f"{THREADS} LiteRT thread for every engine, in-process and isolated; interleaved rounds in a fresh random order each "
        f"round{' (quick)' if args.quick else ''}. Latency: {sizes.rounds} rounds x {sizes.runs} runs after {sizes.warmup} "
        f"warm-up runs, p50/p99 over all runs; CPU/inference sums this process and the engine's child. Pipeline: "
        f"{sizes.rounds} rounds over {video.name} ({sizes.frames} frames {VIDEO_SIZE[0]}x{VIDEO_SIZE[1]} MJPG), a fresh "
        f"pipeline per round, median frames/s; infer p50 is `engine.run` inside the pipeline (`pipeline.stats`), CPU/frame sums "
        f"this process and the engine's child. Start-up: median of {sizes.starts}, this process's imports already done. "
        f"Other processes used {percent(overall.other_share)} of the CPUs over the whole run ({percent(start_load)} during start-ups)."
    )
    text = render(latency, shapes, pipeline, starts, header=header, machine=machine_line())
    print(text, end="")
    common.write_results(RESULTS_FILE, text, log=log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
