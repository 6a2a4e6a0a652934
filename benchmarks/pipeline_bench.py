"""The runtime pipeline against its limit (the bare engine) and against the loop a tutorial writes, in one run.

Same MobileNetV2-224 int8 bundle (profile x86-cpu), same LiteRT thread count, same video file:

  (a) engine     ``open_engine(bundle).run([tensor])`` on one ready tensor: the limit;
  (b) pipeline   ``Runtime(bundle, RunConfig(source=video, threads=..., threshold=0))`` and its
                 ``results()`` to the end (the public API: one camera thread, the engine gate, results
                 handed to the caller's thread), with a sink that JSON-serialises every ``FrameResult``;
  (c) tutorial   ``cv2.VideoCapture.read`` -> ``cv2.resize`` -> ``cvtColor`` -> ``astype / 255``
                 (-> quantize if the input is integer) -> ``Interpreter`` set_tensor / invoke /
                 get_tensor (``ai_edge_litert`` directly) -> ``argmax`` -> ``print`` to a StringIO.

The three are interleaved round by round (fresh random order each round) and the median frames/s
is reported, with the CPU time each spent per frame: ``time.process_time()`` deltas over the same
span as the wall-clock timing (so (b)'s opening and warm-up are outside both), i.e. the CPU seconds
of every thread of this process (all three run in-process).
Then, each in a fresh subprocess that imports only ``edge_sdk`` (never TensorFlow), a ``Runtime``
runs over the video to measure peak resident memory and the time from process spawn to the first
``FrameResult``.

The model is an untrained MobileNetV2 (nothing is downloaded) built and converted once with
``edge_sdk.converters.convert`` (that step needs the ``[convert]`` extra and ~1 minute) and cached in
``benchmarks/results/cache/``; the video (a pan across scikit-image's sample photos) is cached there
too. Prints a Markdown table and writes it to ``benchmarks/results/pipeline_bench.md``.

    .venv/bin/python benchmarks/pipeline_bench.py            # 7 rounds over 300 frames, ~1.5 minutes (+1 min for the first conversion)
    .venv/bin/python benchmarks/pipeline_bench.py --quick    # smoke run
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
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import common
import cv2
import numpy as np

from edge_sdk import RunConfig, Runtime
from common import cpu_model  # noqa: E402 (this folder's shared helpers)
from edge_sdk.backends import open_engine
from edge_sdk.bundle import open_bundle
from edge_sdk.pipeline import InputAdapter

HERE = Path(__file__).resolve().parent
RESULTS_FILE = HERE / "results" / "pipeline_bench.md"
CACHE = HERE / "results" / "cache"
PROFILE = "x86-cpu"
FRAME_SIZE = (640, 480)  # (width, height) of the video
VIDEO_FPS = 30.0
CODECS = {"mp4v": ".mp4", "MJPG": ".avi"}

# Targets.
ENGINE_SHARE_TARGET = 0.8  # (b) >= 0.8 x (a) frames/s
TUTORIAL_SPEEDUP_TARGET = 1.0  # (b) >= 1.0 x (c) frames/s
CPU_RATIO_TARGET = 1.1  # CPU seconds per frame of (b) <= 1.1 x those of (c)
RSS_TARGET_MB = 150.0
START_TARGET_S = 1.5

# Every result is reported: the untrained head's softmax is nearly flat, so the default threshold
# (0.25) would drop them all, while the tutorial loop always prints its argmax.
THRESHOLD = 0.0


@dataclass(frozen=True)
class Sizes:
    frames: int
    rounds: int
    starts: int  # fresh-subprocess runs for RSS and start-to-first-result


FULL = Sizes(frames=300, rounds=7, starts=3)
QUICK = Sizes(frames=60, rounds=2, starts=1)


@dataclass
class Column:
    name: str
    fps: list[float] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)  # this process's CPU ms per frame, all threads
    other_load: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.fps)

    @property
    def median_cpu_ms(self) -> float:
        return statistics.median(self.cpu_ms)


def log(message: str) -> None:
    print(f"[pipeline_bench] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- helpers


def _convert_bench():
    return common.sibling("convert_bench")


class LoadMeter:
    """The share of all CPUs that processes other than this one kept busy while the block ran."""

    def __enter__(self) -> LoadMeter:
        self.share: float | None = None
        self._busy, self._own, self._start = _convert_bench().busy_cpu_seconds(), os.times(), time.monotonic()
        return self

    def __exit__(self, *exc) -> None:
        busy, own, wall = _convert_bench().busy_cpu_seconds(), os.times(), time.monotonic() - self._start
        if self._busy is None or busy is None or wall <= 0:
            return
        # This process and its waited-for children (the fresh-process runs) are not "other".
        mine = sum(own[:4]) - sum(self._own[:4])
        self.share = max(0.0, (busy - self._busy - mine) / (wall * (os.cpu_count() or 1)))


# --------------------------------------------------------------------------- model and video


def ensure_bundle(folder: Path) -> Path:
    """The cached MobileNetV2-224 int8 x86-cpu bundle, converted now (in a child process) if missing or unreadable."""
    return common.cached_bundle(folder, [str(Path(__file__).resolve()), "--convert-to", str(folder)], log=log)


def convert_bundle(folder: Path) -> None:
    """Build an untrained MobileNetV2 (no download) and convert it for x86-cpu int8 into ``folder``."""
    from edge_sdk.converters import convert

    cb = _convert_bench()
    work = folder.parent / "build"
    shutil.rmtree(work, ignore_errors=True)
    log(f"building an untrained MobileNetV2 and calibration images in {work}")
    data = cb.make_datasets(work / "data", cb.QUICK)
    with contextlib.redirect_stdout(sys.stderr):  # Keras export prints to stdout
        model = cb.build_model(work / "mobilenetv2.keras", data["train"], bn_statistics=True)
        log(f"converting for {PROFILE} int8 ...")
        started = time.perf_counter()
        convert(model, profile=PROFILE, out=folder, precision="int8", calib=data["calib"], min_calib=1)
    log(f"converted in {time.perf_counter() - started:.1f} s")
    shutil.rmtree(work, ignore_errors=True)


def panorama(height: int) -> np.ndarray:
    """scikit-image's sample photos side by side at ``height`` pixels, BGR."""
    import skimage.data

    strips = []
    for name in ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
                 "retina", "colorwheel", "logo", "camera"):
        image = np.asarray(getattr(skimage.data, name)())
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        image = np.ascontiguousarray(image[:, :, :3]).astype(np.uint8)
        width = round(image.shape[1] * height / image.shape[0])
        strips.append(cv2.cvtColor(cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2BGR))
    return np.concatenate(strips, axis=1)


def frame_count(path: Path) -> int:
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.grab():
        count += 1
    capture.release()
    return count


def ensure_video(folder: Path, frames: int, codec: str) -> Path:
    """A ``frames``-long 640x480 video panning across the sample photos, written once and cached."""
    width, height = FRAME_SIZE
    path = folder / f"pan-{frames}f-{width}x{height}-{codec}{CODECS[codec]}"
    if path.is_file() and frame_count(path) == frames:
        log(f"reusing video {path.name}")
        return path
    folder.mkdir(parents=True, exist_ok=True)
    strip = panorama(height)
    travel = strip.shape[1] - width
    partial = path.with_name(path.stem + ".partial" + path.suffix)
    writer = cv2.VideoWriter(str(partial), cv2.VideoWriter_fourcc(*codec), VIDEO_FPS, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"this OpenCV cannot write {codec} video")
    for i in range(frames):
        x = round(i * travel / max(1, frames - 1))
        writer.write(np.ascontiguousarray(strip[:, x : x + width]))
    writer.release()
    written = frame_count(partial)
    if written != frames:
        raise RuntimeError(f"wrote {frames} frames to {partial} but read back {written}")
    partial.replace(path)
    log(f"wrote video {path.name} ({path.stat().st_size / 1e6:.1f} MB)")
    return path


def first_frame(video: Path) -> np.ndarray:
    capture = cv2.VideoCapture(str(video))
    ok, frame = capture.read()
    capture.release()
    if not ok:
        raise RuntimeError(f"cannot read {video}")
    return frame


# --------------------------------------------------------------------------- the three measurements


class EngineLimit:
    """(a): the bundle's engine, timed on one tensor the pipeline's own adapter prepared."""

    def __init__(self, bundle_path: Path, frame: np.ndarray, threads: int, warmup: int) -> None:
        bundle = open_bundle(bundle_path)
        self.engine = open_engine(bundle, threads=threads)
        self.tensor, _ = InputAdapter(bundle.manifest.preprocessing, self.engine.input_specs()[0])(frame)
        for _ in range(warmup):
            self.engine.run([self.tensor])

    def __call__(self, frames: int) -> tuple[float, int, float]:
        cpu, started = time.process_time(), time.perf_counter()
        for _ in range(frames):
            self.engine.run([self.tensor])
        return frames / (time.perf_counter() - started), frames, time.process_time() - cpu


class PipelineRun:
    """(b): a fresh ``Runtime`` per round (opened and warmed outside the timing) on the video, a JSON sink."""

    def __init__(self, bundle_path: Path, video: Path, frame: np.ndarray, threads: int, warmup: int) -> None:
        self.bundle_path, self.video, self.frame = bundle_path, video, frame
        self.threads, self.warmup = threads, warmup
        self.snapshots: list[dict] = []

    def __call__(self, frames: int) -> tuple[float, int, float]:
        config = RunConfig(source=str(self.video), threads=self.threads, threshold=THRESHOLD)
        with Runtime(self.bundle_path, config) as runtime:
            for _ in range(self.warmup):
                runtime.pipeline.infer(self.frame)
            sink = io.StringIO()
            count = 0
            cpu, started = time.process_time(), time.perf_counter()
            for result in runtime.results():
                sink.write(json.dumps(result.to_json()))
                sink.write("\n")
                count += 1
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
            self.snapshots.append(runtime.stats().cameras[0].stats.as_dict())
        del runtime
        gc.collect()
        return count / elapsed, count, cpu


class TutorialLoop:
    """(c): the sequential loop from a tutorial, on its own ai_edge_litert Interpreter."""

    def __init__(self, bundle_path: Path, video: Path, frame: np.ndarray, threads: int, warmup: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        bundle = open_bundle(bundle_path)
        self.video = video
        self.labels = bundle.labels() or [str(i) for i in range(1000)]
        self.interpreter = Interpreter(model_path=str(bundle.model_path), num_threads=threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        for _ in range(warmup):
            self.step(frame, io.StringIO(), 0)

    def step(self, frame: np.ndarray, out: io.StringIO, index: int) -> None:
        _, height, width, _ = self.input["shape"]
        image = cv2.resize(frame, (int(width), int(height)))
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        x = image.astype(np.float32) / 255.0
        dtype = self.input["dtype"]
        if dtype != np.float32:
            scale, zero_point = self.input["quantization"]
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)
        self.interpreter.set_tensor(self.input["index"], x[None])
        self.interpreter.invoke()
        scores = self.interpreter.get_tensor(self.output["index"])[0]
        top = int(np.argmax(scores))
        print(f"frame {index}: {self.labels[top]} ({scores[top]:.3f})", file=out)

    def __call__(self, frames: int) -> tuple[float, int, float]:
        out = io.StringIO()
        count = 0
        cpu, started = time.process_time(), time.perf_counter()
        capture = cv2.VideoCapture(str(self.video))
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            self.step(frame, out, count)
            count += 1
        capture.release()
        return count / (time.perf_counter() - started), count, time.process_time() - cpu


# --------------------------------------------------------------------------- fresh-process measurements

CHILD = r"""
import json, sys, time
entered = time.monotonic()
from edge_sdk import RunConfig, Runtime
imported = time.monotonic()
bundle, video, threads, threshold = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
first = None
count = 0
with Runtime(bundle, RunConfig(source=video, threads=threads, threshold=threshold)) as runtime:
    opened = time.monotonic()
    for result in runtime.results():
        if first is None:
            first = time.monotonic()
        json.dumps(result.to_json())
        count += 1
    done = time.monotonic()
status = {}
with open("/proc/self/status") as handle:
    for line in handle:
        key, _, value = line.partition(":")
        status[key] = value
print(json.dumps({
    "entered": entered, "imported": imported, "opened": opened, "first": first, "done": done, "frames": count,
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork+exec, so it can report the parent's peak.
    "peak_rss_kb": int(status["VmHWM"].split()[0]), "rss_end_kb": int(status["VmRSS"].split()[0]),
    "tensorflow": sorted(m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow.")),
}))
"""


def fresh_process_run(bundle_path: Path, video: Path, threads: int) -> dict:
    """One run of the pipeline over the video in a new interpreter; times are from the spawn (CLOCK_MONOTONIC is system-wide)."""
    spawned = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(bundle_path), str(video), str(threads), str(THRESHOLD)],
        capture_output=True, text=True, cwd=str(CACHE), timeout=600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the fresh-process run failed:\n{proc.stderr[-2000:]}")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    if data["first"] is None:
        raise RuntimeError("the fresh-process run produced no result")
    return {
        "python_start_s": data["entered"] - spawned,
        "import_s": data["imported"] - data["entered"],
        "open_s": data["opened"] - data["imported"],
        "first_frame_s": data["first"] - data["opened"],
        "start_to_first_s": data["first"] - spawned,
        "fps": data["frames"] / (data["done"] - data["first"]) if data["frames"] > 1 else float("nan"),
        "frames": data["frames"],
        "peak_rss_mb": data["peak_rss_kb"] / 1024,
        "rss_end_mb": data["rss_end_kb"] / 1024,
        "tensorflow": data["tensorflow"],
    }


# --------------------------------------------------------------------------- report


def machine_line(threads: int) -> str:
    cpu = cpu_model()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"machine: {cpu}, {os.cpu_count()} cores ({usable} usable), {platform.system()} {platform.machine()}; "
        f"python {platform.python_version()}, ai-edge-litert {metadata.version('ai-edge-litert')}, "
        f"opencv {cv2.__version__}, numpy {np.__version__}; threads={threads}"
    )


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}%"


def render(columns: dict[str, Column], starts: list[dict], snapshots: list[dict], *, header: str, machine: str) -> str:
    a, b, c = (columns[k].median for k in ("a", "b", "c"))
    cpu_a, cpu_b, cpu_c = (columns[k].median_cpu_ms for k in ("a", "b", "c"))
    rss = statistics.median(s["peak_rss_mb"] for s in starts)
    first = statistics.median(s["start_to_first_s"] for s in starts)
    lines = [
        "# pipeline_bench", "", header, "", machine, "",
        "| (a) engine fps | (b) pipeline fps | (c) tutorial fps | b/a | b/c | (a) CPU ms/frame | (b) CPU ms/frame "
        "| (c) CPU ms/frame | CPU b/c | peak RSS MB | start to first result s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {a:.1f} | {b:.1f} | {c:.1f} | {b / a:.2f} | {b / c:.2f} | {cpu_a:.2f} | {cpu_b:.2f} | {cpu_c:.2f} "
        f"| {cpu_b / cpu_c:.2f} | {rss:.0f} | {first:.2f} |",
        "",
        f"(b) >= {TUTORIAL_SPEEDUP_TARGET} x (c) fps: {b / c:.2f} x {verdict(b >= TUTORIAL_SPEEDUP_TARGET * c)}",
        f"(b) >= {ENGINE_SHARE_TARGET} x (a) fps: {b / a:.2f} x {verdict(b >= ENGINE_SHARE_TARGET * a)}",
        f"CPU s/frame (b) <= {CPU_RATIO_TARGET} x (c): {cpu_b / cpu_c:.2f} x {verdict(cpu_b <= CPU_RATIO_TARGET * cpu_c)}",
        f"RSS <= {RSS_TARGET_MB:.0f} MB: {rss:.0f} MB {verdict(rss <= RSS_TARGET_MB)}",
        f"start to first result <= {START_TARGET_S} s: {first:.2f} s {verdict(first <= START_TARGET_S)}",
        "",
    ]
    names = {"a": "(a) engine", "b": "(b) pipeline", "c": "(c) tutorial"}
    for key, column in columns.items():
        lines.append(
            f"- {names[key]}: frames/s per round {', '.join(f'{v:.1f}' for v in column.fps)} "
            f"({column.frames[0]} frames each); CPU ms/frame {', '.join(f'{v:.2f}' for v in column.cpu_ms)}; "
            f"other processes used {', '.join(percent(v) for v in column.other_load)} of the CPUs"
        )
    if snapshots:
        keys = ("preprocess", "infer", "decode", "latency")
        stage = ", ".join(
            f"{k} {statistics.median(s[f'{k}_ms_p50'] for s in snapshots):.2f}/{statistics.median(s[f'{k}_ms_p99'] for s in snapshots):.2f}"
            for k in keys if f"{k}_ms_p50" in snapshots[0]
        )
        lines.append(
            f"- (b) stage times ms p50/p99 (Runtime.stats(), median over rounds): {stage} "
            "(infer is timed from the camera's turn on the engine; latency is capture to result in the caller's thread)"
        )
    for i, s in enumerate(starts):
        lines.append(
            f"- fresh process {i + 1}: python up {s['python_start_s']:.2f} s, import edge_sdk {s['import_s']:.2f} s, "
            f"Runtime open {s['open_s']:.2f} s, first result {s['first_frame_s']:.2f} s later -> {s['start_to_first_s']:.2f} s; "
            f"{s['frames']} frames at {s['fps']:.1f} fps; peak RSS {s['peak_rss_mb']:.0f} MB (at the end {s['rss_end_mb']:.0f} MB); "
            f"tensorflow imported: {'yes ' + ','.join(s['tensorflow'][:3]) if s['tensorflow'] else 'no'}"
        )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="LiteRT threads for all three measurements (default 2)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 7, 2 with --quick)")
    parser.add_argument("--frames", type=int, default=None, help="video length in frames (default 300, 60 with --quick)")
    parser.add_argument("--starts", type=int, default=None, help="fresh-process runs for RSS and start time (default 3, 1 with --quick)")
    parser.add_argument("--codec", choices=sorted(CODECS), default="mp4v", help="video codec (default mp4v)")
    parser.add_argument("--quick", action="store_true", help="a short video and fewer rounds: a smoke run")
    parser.add_argument("--seed", type=int, default=0, help="seed of the per-round order")
    parser.add_argument("--convert-to", type=Path, default=None, help=argparse.SUPPRESS)  # internal: the conversion child
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    args.rounds = args.rounds or sizes.rounds
    args.frames = args.frames or sizes.frames
    args.starts = args.starts or sizes.starts
    if min(args.threads, args.rounds, args.frames, args.starts) < 1:
        parser.error("--threads, --rounds, --frames and --starts must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.convert_to is not None:
        convert_bundle(args.convert_to)
        return 0
    bundle_path = ensure_bundle(CACHE / f"mobilenetv2-224-int8-{PROFILE}")
    video = ensure_video(CACHE, args.frames, args.codec)
    frame = first_frame(video)
    warmup = 10
    log(f"opening the engine and the tutorial interpreter ({args.threads} threads)")
    runners = {
        "a": EngineLimit(bundle_path, frame, args.threads, warmup),
        "b": PipelineRun(bundle_path, video, frame, args.threads, warmup),
        "c": TutorialLoop(bundle_path, video, frame, args.threads, warmup),
    }
    columns = {key: Column(key) for key in runners}
    rng = np.random.default_rng(args.seed)
    with LoadMeter() as overall:
        for r in range(args.rounds):
            order = [list(runners)[i] for i in rng.permutation(len(runners))]
            for key in order:
                with LoadMeter() as meter:
                    fps, count, cpu = runners[key](args.frames)
                columns[key].fps.append(fps)
                columns[key].frames.append(count)
                columns[key].cpu_ms.append(1e3 * cpu / count)
                columns[key].other_load.append(meter.share)
            log(f"round {r + 1}/{args.rounds} ({''.join(order)}): " + ", ".join(f"{k} {columns[k].fps[-1]:.1f} fps" for k in runners))
    for key, column in columns.items():
        if key != "a" and any(n != args.frames for n in column.frames):
            raise RuntimeError(f"({key}) processed {column.frames} frames, expected {args.frames}")
    del runners["a"], runners["c"]
    gc.collect()
    starts = []
    for i in range(args.starts):
        with LoadMeter() as meter:
            starts.append(fresh_process_run(bundle_path, video, args.threads))
        log(f"fresh process {i + 1}/{args.starts}: first result after {starts[-1]['start_to_first_s']:.2f} s, "
            f"peak RSS {starts[-1]['peak_rss_mb']:.0f} MB (other processes {percent(meter.share)})")
    header = (
        f"MobileNetV2-224 int8 bundle (untrained, profile {PROFILE}, {bundle_path.name}); video {video.name} "
        f"({args.frames} frames {FRAME_SIZE[0]}x{FRAME_SIZE[1]} {args.codec}); {args.threads} LiteRT threads everywhere; "
        f"median of {args.rounds} interleaved rounds{' (quick)' if args.quick else ''}; RSS and start time: median of "
        f"{args.starts} fresh process{'es' if args.starts > 1 else ''}; result threshold {THRESHOLD}; "
        f"other processes used {percent(overall.share)} of the CPUs while timing"
    )
    text = render(columns, starts, runners["b"].snapshots, header=header, machine=machine_line(args.threads))
    print(text, end="")
    common.write_results(RESULTS_FILE, text, log=log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
