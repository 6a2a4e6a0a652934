"""Four cameras on one engine in one process, against four ``edge-sdk run`` processes, in one run.

The shipped shapes detector (``edge_sdk.converters.assets.DETECTOR``), converted once for profile
x86-cpu int8 (letterbox, no pruning) in a child process, so TensorFlow never enters this one, and
cached in ``benchmarks/results/cache/``. Four different 640x480 videos of moving shapes
(``edge_sdk.samples.shapes.moving_video``, MJPG) are cached there too.

1. Throughput and memory. (1) one ``edge-sdk run BUNDLE --config cams.yaml`` process with the four
   videos as four cameras; (2) four ``edge-sdk run BUNDLE --source video_i`` processes started
   together. Both write ``--jsonl`` to files and play the files unpaced (as fast as they go), with
   the same ``--threads``: the profile's default (2) and 1, each a row. Rounds alternate the two
   setups. Aggregate fps = all results / (last result's capture time - first result's), across
   every camera and process (the steady state; the spawn-to-exit figure, which adds four start-ups
   against one, is shown beside it). Peak RSS = each process's ``VmHWM`` from ``/proc/<pid>/status``,
   polled every 20 ms until it exits, summed over the four processes; CPU seconds from ``wait4``
   (start-up included), per result, and "cores used" = CPU seconds / spawn-to-exit seconds: on a
   shared machine the setup with more runnable threads also takes a larger share from the others.
   Fairness: each camera's results inside the window where all four cameras of (1) were producing,
   per second; slowest / fastest.
2. A camera that dies. Three file cameras plus one live camera, an ffmpeg process serving MPEG-TS
   over HTTP (``-listen 1``, testsrc 640x480), in one ``edge-sdk run`` process. Paced: the files
   play in real time (``fps:`` on the camera) at the live stream's rate, so a camera's fps means
   "kept up or not"; unpaced: the files run flat out. After the live camera's first result and a
   settling pause, the three file cameras' fps is counted over a window with all four alive, then
   ffmpeg is SIGKILLed (a crashed camera or a pulled cable: the runtime keeps reconnecting it) and
   counted again over a window of the same length. Cost = 1 - after / before, per file camera.
   Unpaced, the others may speed up when the live camera dies (its decoding and inference stop,
   and so does the ffmpeg encoder on the same machine), or slow down when the rest of a shared
   machine takes more: each window records the run's own CPU (cores) and the share of the CPUs
   the rest of the machine used (not this process, the run or ffmpeg).
3. Batching, engine only. The bundles cannot take a batch (their Reshapes have batch 1 baked in:
   LiteRT's ``resize_tensor_input`` fails, as the report says), so the Keras detector is converted
   again, in a child process, to int8 ``.tflite`` files for batch 1 and for batch 4. On 4 real
   preprocessed frames: LiteRT ``Interpreter``, one batch of 4 against 4 single invocations, same
   threads; and the same two files through OpenVINO's TFLite front end on the CPU (f32 inference
   precision, as the runtime sets it). Per-frame times, their ratio, outputs checked equal.

Prints Markdown and writes ``benchmarks/results/multicam_bench.md``. The machine line records what
else was running (other processes' share of the CPUs) while each part ran.

    .venv/bin/python benchmarks/multicam_bench.py            # ~5 minutes (+2 for the first conversions)
    .venv/bin/python benchmarks/multicam_bench.py --quick    # smoke run, ~1.5 minutes
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import cv2
import common
import numpy as np

from edge_sdk import __version__
from edge_sdk.bundle import open_bundle

HERE = Path(__file__).resolve().parent
RESULTS_FILE = HERE / "results" / "multicam_bench.md"
CACHE = HERE / "results" / "cache"
PROFILE = "x86-cpu"
CAMERAS = 4
FRAME_SIZE = (640, 480)
VIDEO_FPS = 25.0
CALIB_SCENES, VAL_SCENES = 120, 60
RESIZE = "letterbox"
LOOPBACK = "127.0.0.1"

# Targets (the issue's).
AGGREGATE_TARGET = 1.2  # one process's aggregate fps >= 1.2 x the four processes'
RSS_TARGET = 0.5  # one process's peak RSS <= 0.5 x the sum of the four
FAIRNESS_TARGET = 0.8  # slowest camera >= 0.8 x fastest, in one process
DEAD_COST_TARGET = 0.10  # a camera dying costs each other camera < 10 % of its fps


@dataclass(frozen=True)
class Sizes:
    frames: int  # per video
    rounds: int  # throughput rounds per threads setting
    settle_s: float  # dead camera: pause after the live camera's first result
    window_s: float  # dead camera: each counting window
    batch_reps: int  # batching: timed repetitions per round
    batch_rounds: int


FULL = Sizes(frames=400, rounds=5, settle_s=3.0, window_s=10.0, batch_reps=200, batch_rounds=5)
QUICK = Sizes(frames=100, rounds=1, settle_s=2.0, window_s=4.0, batch_reps=50, batch_rounds=2)


def log(message: str) -> None:
    print(f"[multicam_bench] {message}", file=sys.stderr, flush=True)


def _pipeline_bench():
    return common.sibling("pipeline_bench")


# --------------------------------------------------------------------------- bundle and videos


def _cache_key(profile: str) -> str:
    from edge_sdk.converters.assets import DETECTOR

    settings = json.dumps({"sdk": __version__, "profile": profile, "resize": RESIZE, "calib": CALIB_SCENES,
                           "val": VAL_SCENES}, sort_keys=True)
    return hashlib.sha256(DETECTOR.read_bytes() + settings.encode()).hexdigest()[:12]


def ensure_bundle(profile: str) -> Path:
    """The shipped detector converted for ``profile`` (int8, no pruning), converted now in a child process if missing."""
    folder = CACHE / f"shapes-detector-{profile}-{_cache_key(profile)}"
    common.cached_bundle(folder, [str(Path(__file__).resolve()), "--convert-to", str(folder), "--profile", profile],
                         log=log, what=f"{profile} detector")
    return folder


def convert_bundle(folder: Path, profile: str) -> None:
    """The child's work: calibration and validation scenes, then ``convert`` (TensorFlow lives here only)."""
    from edge_sdk.converters import convert
    from edge_sdk.converters.assets import DETECTOR
    from edge_sdk.samples import shapes

    work = folder.with_name(folder.name + ".data")
    shutil.rmtree(work, ignore_errors=True)
    calib = shapes.write_yolo(work / "calib", CALIB_SCENES, seed=1, photos=shapes.TRAIN_PHOTOS)
    val = shapes.write_yolo(work / "val", VAL_SCENES, seed=2, photos=shapes.HELD_OUT_PHOTOS)
    started = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        convert(DETECTOR, profile=profile, out=folder, calib=calib, val=val, resize=RESIZE, name="shapes-detector",
                min_calib=1, max_drop=100.0, max_drop_map50_95=100.0)
    log(f"converted for {profile} in {time.perf_counter() - started:.1f} s")
    shutil.rmtree(work, ignore_errors=True)


def ensure_batch_models() -> Path:
    """The shipped detector as int8 ``.tflite`` files built for batch 1 and batch 4 (float I/O, as
    the bundle), converted now in a child process if missing. The bundles cannot take a batch:
    their Reshapes have batch 1 baked in (LiteRT's resize_tensor_input and OpenVINO's reshape both
    refuse), so the engine-level question is asked of models converted for each batch size."""
    folder = CACHE / f"shapes-detector-batch-{_cache_key('batch')}"
    if not all((folder / f"batch{n}.tflite").is_file() for n in (1, 4)):
        log("converting the shipped detector for batch 1 and batch 4 in a child process")
        subprocess.run([sys.executable, str(Path(__file__).resolve()), "--batch-models-to", str(folder)], check=True,
                       stdout=sys.stderr)
    return folder


def convert_batch_models(folder: Path) -> None:
    """The child's work: the Keras detector re-wrapped with a fixed batch, full-integer int8 with
    float input and output, calibrated on generated scenes."""
    from edge_sdk.converters import _tf
    from edge_sdk.converters.assets import DETECTOR
    from edge_sdk.samples import shapes

    tf, keras = _tf.tensorflow(), _tf.keras3()
    work = folder.with_name(folder.name + ".data")
    shutil.rmtree(work, ignore_errors=True)
    calib = shapes.write_yolo(work / "calib", CALIB_SCENES, seed=1, photos=shapes.TRAIN_PHOTOS)
    images = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB).astype(np.float32) / 255
              for p in sorted((calib / "images").glob("*.png"))]
    model = keras.saving.load_model(DETECTOR, compile=False)
    folder.mkdir(parents=True, exist_ok=True)
    for batch in (1, 4):
        inputs = keras.Input(batch_shape=(batch, *model.input_shape[1:]), name="image")
        converter = tf.lite.TFLiteConverter.from_keras_model(keras.Model(inputs, model(inputs)))
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda b=batch: ([np.stack(images[i:i + b])] for i in range(0, len(images) - b + 1, b))
        with contextlib.redirect_stdout(sys.stderr):
            (folder / f"batch{batch}.tflite").write_bytes(converter.convert())
    shutil.rmtree(work, ignore_errors=True)


def ensure_videos(frames: int) -> list[Path]:
    """Four different moving-shapes videos (own seed, own number of shapes), written once and cached."""
    from edge_sdk.samples import shapes

    pb = _pipeline_bench()
    width, height = FRAME_SIZE
    paths = []
    CACHE.mkdir(parents=True, exist_ok=True)
    for i in range(CAMERAS):
        path = CACHE / f"shapes-{i}-{frames}f-{width}x{height}.avi"
        if not (path.is_file() and pb.frame_count(path) == frames):
            partial = path.with_name(path.stem + ".partial.avi")
            shapes.moving_video(partial, frames=frames, seed=100 + i, width=width, height=height, fps=VIDEO_FPS, objects=3 + i)
            partial.replace(path)
            log(f"wrote video {path.name}")
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- child processes


def edge_sdk_command() -> list[str]:
    script = Path(sys.executable).with_name("edge-sdk")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "edge_sdk.cli"]


@dataclass
class Child:
    """One ``edge-sdk run`` process, watched for its peak RSS and reaped for its CPU time."""

    name: str
    proc: subprocess.Popen
    jsonl: Path
    stderr: Path
    peak_kb: int = 0
    cpu_s: float = 0.0
    returncode: int | None = None
    ended: float | None = None

    def poll(self) -> bool:
        """Read the high-water mark, then reap if it ended; True while it runs."""
        if self.returncode is not None:
            return False
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_kb = max(self.peak_kb, int(line.split()[1]))
                    break
        pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
        if pid == 0:
            return True
        self.returncode = self.proc.returncode = os.waitstatus_to_exitcode(status)
        self.cpu_s = usage.ru_utime + usage.ru_stime
        self.ended = time.monotonic()
        return False


def spawn(name: str, args: list[str], folder: Path) -> Child:
    jsonl, stderr = folder / f"{name}.jsonl", folder / f"{name}.stderr"
    jsonl.unlink(missing_ok=True)
    with open(stderr, "wb") as err:
        # A wide COLUMNS keeps the CLI's (rich) notices one line each in the captured stderr.
        proc = subprocess.Popen([*edge_sdk_command(), "run", *args, "--jsonl", str(jsonl)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, cwd=folder,
                                env={**os.environ, "COLUMNS": "400"})
    return Child(name, proc, jsonl, stderr)


def watch(children: list[Child], *, timeout: float, every: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while any([c.poll() for c in children]):
        if time.monotonic() > deadline:
            for c in children:
                if c.returncode is None:
                    c.proc.kill()
            raise RuntimeError(f"edge-sdk run did not finish within {timeout:.0f} s")
        time.sleep(every)
    for c in children:
        if c.returncode != 0:
            raise RuntimeError(f"{c.name} exited with {c.returncode}:\n{c.stderr.read_text()[-2000:]}")


def read_results(path: Path, default_camera: str) -> dict[str, np.ndarray]:
    """Capture times of the results in a JSON-lines file, per camera."""
    times: dict[str, list[float]] = {}
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.endswith("}"):
                continue  # a line still being written
            record = json.loads(line)
            camera = record.get("camera") or default_camera
            times.setdefault(camera if camera != "main" else default_camera, []).append(record["ts"])
    return {k: np.sort(np.asarray(v)) for k, v in times.items()}


# --------------------------------------------------------------------------- 1. throughput and memory


@dataclass
class Setup:
    mode: str  # "one process" or "four processes"
    threads: str  # "profile" or a number
    frames: int
    aggregate_fps: float  # first result to last, every camera
    wall_fps: float  # spawn to the last exit
    peak_rss_mb: float  # summed over processes
    cpu_s: float  # summed over processes
    wall_s: float  # spawn to the last exit
    camera_fps: dict[str, float]  # inside the common window
    other_load: float | None

    @property
    def fairness(self) -> float:
        values = list(self.camera_fps.values())
        return min(values) / max(values)


def common_window_fps(times: dict[str, np.ndarray]) -> dict[str, float]:
    """Each camera's results per second inside the window where every camera was producing."""
    start = max(t[0] for t in times.values())
    end = min(t[-1] for t in times.values())
    if end - start <= 0:
        return {k: float("nan") for k in times}
    return {k: float(np.count_nonzero((t >= start) & (t <= end)) / (end - start)) for k, t in times.items()}


def run_setup(mode: str, threads: str, bundle: Path, videos: list[Path], folder: Path, frames: int) -> Setup:
    pb = _pipeline_bench()
    thread_args = [] if threads == "profile" else ["--threads", threads]
    with pb.LoadMeter() as meter:
        started = time.monotonic()
        if mode == "one process":
            config = folder / "cams.yaml"
            config.write_text(json.dumps({"cameras": [{"id": f"cam{i}", "source": str(v)} for i, v in enumerate(videos)]}))
            children = [spawn("one", [str(bundle), "--config", str(config), *thread_args], folder)]
        else:
            children = [spawn(f"cam{i}", [str(bundle), "--source", str(v), *thread_args], folder) for i, v in enumerate(videos)]
        watch(children, timeout=600)
        wall = max(c.ended for c in children) - started
    times: dict[str, np.ndarray] = {}
    for c in children:
        times.update(read_results(c.jsonl, c.name))
    total = sum(len(t) for t in times.values())
    if total != frames * CAMERAS or len(times) != CAMERAS:
        raise RuntimeError(f"{mode}: {total} results from {sorted(times)}, expected {frames} from each of {CAMERAS} cameras")
    span = max(t[-1] for t in times.values()) - min(t[0] for t in times.values())
    return Setup(mode, threads, total, total / span, total / wall, sum(c.peak_kb for c in children) / 1024,
                 sum(c.cpu_s for c in children), wall, common_window_fps(times), meter.share)


def throughput(bundle: Path, videos: list[Path], frames: int, rounds: int, thread_settings: list[str]) -> list[list[Setup]]:
    """Per threads setting and mode, every round's measurement (modes alternate which goes first)."""
    out = []
    with tempfile.TemporaryDirectory(prefix="multicam-") as tmp:
        folder = Path(tmp)
        for threads in thread_settings:
            runs: dict[str, list[Setup]] = {"one process": [], "four processes": []}
            for r in range(rounds):
                order = list(runs) if r % 2 == 0 else list(runs)[::-1]
                for mode in order:
                    setup = run_setup(mode, threads, bundle, videos, folder, frames)
                    runs[mode].append(setup)
                    log(f"threads {threads}, round {r + 1}/{rounds}, {mode}: {setup.aggregate_fps:.1f} fps aggregate, "
                        f"peak RSS {setup.peak_rss_mb:.0f} MB, cameras "
                        + ", ".join(f"{v:.1f}" for v in setup.camera_fps.values()))
            out.extend(runs.values())
    return out


def median_setup(runs: list[Setup]) -> Setup:
    """The round with the median aggregate fps (its other figures come with it)."""
    ranked = sorted(runs, key=lambda s: s.aggregate_fps)
    return ranked[(len(ranked) - 1) // 2]


# --------------------------------------------------------------------------- 2. a camera that dies


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def listening(port: int) -> bool:
    """Whether a socket listens on ``port`` on IPv4 loopback (from /proc/net/tcp: state 0A)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.split(":")[1], 16) == port:
                return True
    return False


def start_stream(rate: float) -> tuple[subprocess.Popen, str]:
    """ffmpeg serving a 640x480 test pattern as MPEG-TS to one HTTP client, in real time."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise RuntimeError("ffmpeg is not installed: the dead-camera part needs it (apt-get install ffmpeg)")
    port = free_port()
    url = f"http://{LOOPBACK}:{port}/live.ts"
    width, height = FRAME_SIZE
    proc = subprocess.Popen(
        [ffmpeg, "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i", f"testsrc=size={width}x{height}:rate={rate:g}",
         "-c:v", "mpeg2video", "-q:v", "5", "-g", "5", "-f", "mpegts", "-listen", "1", url],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if listening(port):  # not a test connection: ``-listen 1`` would serve it and close
            return proc, url
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("ffmpeg did not start listening within 10 s")


def process_cpu(pid: int) -> float:
    """CPU seconds of a running process (all its threads), from /proc/<pid>/stat; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Window:
    """What a time window cost: the run's CPU, and the share of all CPUs the rest of the machine
    used (everything but this process, the ``edge-sdk run`` child and the ffmpeg server)."""

    def __init__(self, run_pid: int, server_pid: int) -> None:
        self.pids = (run_pid, server_pid)
        self.run_cores = self.other_share = None

    def __enter__(self) -> Window:
        cb = _pipeline_bench()._convert_bench()
        self._start = (time.monotonic(), cb.busy_cpu_seconds(), sum(os.times()[:2]), [process_cpu(p) for p in self.pids])
        return self

    def __exit__(self, *exc) -> None:
        cb = _pipeline_bench()._convert_bench()
        wall0, busy0, own0, pids0 = self._start
        wall, busy, own = time.monotonic() - wall0, cb.busy_cpu_seconds(), sum(os.times()[:2]) - own0
        pids = [process_cpu(p) - p0 for p, p0 in zip(self.pids, pids0)]
        self.run_cores = pids[0] / wall
        if busy is not None and busy0 is not None:
            self.other_share = max(0.0, (busy - busy0 - own - max(0.0, pids[0]) - max(0.0, pids[1])) / (wall * (os.cpu_count() or 1)))


@dataclass
class DeadCamera:
    mode: str
    before: dict[str, float]  # file cameras' fps, all four alive
    after: dict[str, float]  # the same cameras after the live one died
    live_before: float
    live_after: float
    notices: list[str]
    windows: tuple[Window, Window]  # all alive, one dead

    @property
    def costs(self) -> dict[str, float]:
        return {k: 1 - self.after[k] / self.before[k] for k in self.before}


def _count(times: np.ndarray, start: float, end: float) -> float:
    return float(np.count_nonzero((times >= start) & (times < end)) / (end - start))


def dead_camera(bundle: Path, videos: list[Path], *, paced: bool, rate: float, sizes: Sizes) -> DeadCamera:
    stream, url = start_stream(rate)
    files = videos[:CAMERAS - 1]
    cameras = [{"id": f"file{i}", "source": str(v), "loop": True, **({"fps": rate} if paced else {})} for i, v in enumerate(files)]
    cameras.append({"id": "live", "source": url})
    with tempfile.TemporaryDirectory(prefix="multicam-dead-") as tmp:
        folder = Path(tmp)
        config = folder / "dead.yaml"
        config.write_text(json.dumps({"cameras": cameras}))
        child = spawn("dead", [str(bundle), "--config", str(config)], folder)
        try:
            deadline = time.monotonic() + 60
            while "live" not in read_results(child.jsonl, "?"):
                if not child.poll() or time.monotonic() > deadline:
                    raise RuntimeError(f"the live camera produced nothing:\n{child.stderr.read_text()[-2000:]}")
                time.sleep(0.1)
            time.sleep(sizes.settle_s)
            t_before = time.time()
            with Window(child.proc.pid, stream.pid) as alive:
                time.sleep(sizes.window_s)
            stream.kill()  # SIGKILL: a crash or a pulled cable; the runtime goes on reconnecting
            stream.wait()
            t_kill = time.time()
            time.sleep(1.0)  # for the loss to be noticed
            with Window(child.proc.pid, stream.pid) as dead:
                time.sleep(sizes.window_s)
            t_end = time.time()
        finally:
            stream.kill()
            child.proc.send_signal(signal.SIGINT)
            with contextlib.suppress(RuntimeError):
                watch([child], timeout=30)
            if child.returncode is None:
                child.proc.kill()
                child.proc.wait()
        times = read_results(child.jsonl, "?")
        notices = list(dict.fromkeys(line.split(";")[0] for line in child.stderr.read_text().splitlines()
                                     if line.startswith("camera live")))[:4]
    before = {k: _count(times[k], t_before, t_kill) for k in times if k != "live"}
    after = {k: _count(times[k], t_end - sizes.window_s, t_end) for k in times if k != "live"}
    live = times.get("live", np.array([]))
    return DeadCamera("paced" if paced else "unpaced", before, after, _count(live, t_before, t_kill),
                      _count(live, t_end - sizes.window_s, t_end), notices, (alive, dead))


# --------------------------------------------------------------------------- 3. batching, engine only


@dataclass
class Batching:
    engine: str
    threads: int
    single_ms: float  # per frame, four single invocations
    batch_ms: float  # per frame, one batch of four
    max_diff: float  # largest |batch output - single output|
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.single_ms / self.batch_ms


def _frames_for(bundle: Path, videos: list[Path]) -> list[np.ndarray]:
    """Four real frames (one per video), preprocessed by the runtime's own adapter."""
    from edge_sdk.backends import open_engine
    from edge_sdk.pipeline import InputAdapter

    opened = open_bundle(bundle)
    engine = open_engine(opened, threads=1)
    adapter = InputAdapter(opened.manifest.preprocessing, engine.input_specs()[0])
    tensors = [adapter(_pipeline_bench().first_frame(v))[0] for v in videos[:4]]
    del engine
    return tensors


def _time_pair(single, batch, reps: int, rounds: int) -> tuple[float, float]:
    singles, batches = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(reps):
            single()
        singles.append((time.perf_counter() - started) / (4 * reps) * 1e3)
        started = time.perf_counter()
        for _ in range(reps):
            batch()
        batches.append((time.perf_counter() - started) / (4 * reps) * 1e3)
    return statistics.median(singles), statistics.median(batches)


def _max_diff(batched: list[np.ndarray], singles: list[list[np.ndarray]]) -> float:
    return max(float(np.max(np.abs(batched[o][k].astype(np.float64) - singles[k][o][0].astype(np.float64))))
               for k in range(len(singles)) for o in range(len(batched)))


def batching_litert(models: Path, tensors: list[np.ndarray], threads: int, sizes: Sizes) -> Batching:
    from ai_edge_litert.interpreter import Interpreter

    one = Interpreter(model_path=str(models / "batch1.tflite"), num_threads=threads)
    four = Interpreter(model_path=str(models / "batch4.tflite"), num_threads=threads)
    one.allocate_tensors()
    four.allocate_tensors()
    index_one, index_four = one.get_input_details()[0]["index"], four.get_input_details()[0]["index"]
    outputs_one = [d["index"] for d in one.get_output_details()]
    outputs_four = [d["index"] for d in four.get_output_details()]
    singles = [t.astype(np.float32).reshape(one.get_input_details()[0]["shape"]) for t in tensors]
    stacked = np.concatenate(singles, axis=0)

    def single() -> list:
        out = []
        for x in singles:
            one.set_tensor(index_one, x)
            one.invoke()
            out.append([one.get_tensor(i).copy() for i in outputs_one])
        return out

    def batch() -> list:
        four.set_tensor(index_four, stacked)
        four.invoke()
        return [four.get_tensor(i).copy() for i in outputs_four]

    diff = _max_diff(batch(), single())
    single_ms, batch_ms = _time_pair(single, batch, sizes.batch_reps, sizes.batch_rounds)
    return Batching("LiteRT (XNNPACK), int8 .tflite", threads, single_ms, batch_ms, diff)


def batching_openvino(models: Path, tensors: list[np.ndarray], threads: int, sizes: Sizes) -> Batching:
    """The same two .tflite files through OpenVINO's TFLite front end on the CPU."""
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    one = core.compile_model(core.read_model(str(models / "batch1.tflite")), "CPU", config).create_infer_request()
    four = core.compile_model(core.read_model(str(models / "batch4.tflite")), "CPU", config).create_infer_request()
    outputs = len(one.model_outputs)
    singles = [t.astype(np.float32).reshape(1, *t.shape[-3:]) for t in tensors]
    stacked = np.concatenate(singles, axis=0)

    def single() -> list:
        out = []
        for x in singles:
            one.infer({0: x})
            out.append([one.get_output_tensor(i).data.copy() for i in range(outputs)])
        return out

    def batch() -> list:
        four.infer({0: stacked})
        return [four.get_output_tensor(i).data.copy() for i in range(outputs)]

    diff = _max_diff(batch(), single())
    single_ms, batch_ms = _time_pair(single, batch, sizes.batch_reps, sizes.batch_rounds)
    return Batching(f"OpenVINO {metadata.version('openvino')} CPU, same .tflite", threads, single_ms, batch_ms, diff)


def bundle_takes_batch(bundle: Path) -> str:
    """Whether the bundle's own model accepts a batch of 4 (LiteRT resize_tensor_input), in words."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(open_bundle(bundle).model_path))
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], [4, *detail["shape"][1:]])
    try:
        interpreter.allocate_tensors()
    except RuntimeError as exc:
        return f"no: {' '.join(str(exc).split())[:160]}"
    return "yes"


# --------------------------------------------------------------------------- report


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}%"


def machine_line(threads: str) -> str:
    line = _pipeline_bench().machine_line(2).rsplit(";", 1)[0]
    return f"{line}; openvino {metadata.version('openvino')}; threads per process: {threads}"


def _throughput_lines(setups: list[list[Setup]]) -> list[str]:
    lines: list[str] = []
    pairs: dict[str, dict[str, Setup]] = {}
    for runs in setups:
        s = median_setup(runs)
        pairs.setdefault(s.threads, {})[s.mode] = s
        lines.append(f"| {s.threads} | {s.mode} | {s.frames} | {s.aggregate_fps:.1f} | {s.wall_fps:.1f} | {s.peak_rss_mb:.0f} "
                     f"| {1e3 * s.cpu_s / s.frames:.2f} | {s.cpu_s / s.wall_s:.2f} | {' / '.join(f'{v:.1f}' for v in s.camera_fps.values())} | {s.fairness:.2f} "
                     f"| {percent(s.other_load)} |")
    lines.append("")
    for threads, pair in pairs.items():
        one, four = pair["one process"], pair["four processes"]
        agg, rss = one.aggregate_fps / four.aggregate_fps, one.peak_rss_mb / four.peak_rss_mb
        lines += [
            f"threads {threads}: aggregate fps one/four >= {AGGREGATE_TARGET}: {agg:.2f} x {verdict(agg >= AGGREGATE_TARGET)} "
            f"(spawn to exit: {one.wall_fps / four.wall_fps:.2f} x)",
            f"threads {threads}: peak RSS one/four <= {RSS_TARGET}: {rss:.2f} x {verdict(rss <= RSS_TARGET)}",
            f"threads {threads}: fairness slowest/fastest camera in one process >= {FAIRNESS_TARGET}: {one.fairness:.2f} "
            f"{verdict(one.fairness >= FAIRNESS_TARGET)}",
        ]
    lines.append("")
    by_threads: dict[str, dict[str, list[Setup]]] = {}
    for runs in setups:
        by_threads.setdefault(runs[0].threads, {})[runs[0].mode] = runs
    for threads, modes in by_threads.items():
        ratios = [o.aggregate_fps / f.aggregate_fps for o, f in zip(modes["one process"], modes["four processes"])]
        lines.append(f"- threads {threads}: aggregate fps one/four per round {', '.join(f'{r:.2f}' for r in ratios)}")
    for runs in setups:
        lines.append(f"- threads {runs[0].threads}, {runs[0].mode}: aggregate fps per round "
                     f"{', '.join(f'{s.aggregate_fps:.1f}' for s in runs)}; peak RSS MB {', '.join(f'{s.peak_rss_mb:.0f}' for s in runs)}; "
                     f"slowest/fastest {', '.join(f'{s.fairness:.2f}' for s in runs)}; other processes "
                     f"{', '.join(percent(s.other_load) for s in runs)}")
    return lines


def render(setups: list[list[Setup]], dead: list[DeadCamera], batching: list[Batching], batch_note: str, *, header: str,
           machine: str) -> str:
    lines = ["# multicam_bench", "", header, "", machine]
    if setups:
        lines += ["", "## One process with 4 cameras vs 4 processes", "",
             "| threads | setup | results | aggregate fps (first to last result) | fps (spawn to exit) | peak RSS MB "
             "| CPU ms/frame | cores used | per-camera fps (common window) | slowest/fastest | other processes |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    lines += _throughput_lines(setups)
    if dead:
        lines += ["", "## A camera that dies (3 video files + 1 live HTTP MPEG-TS stream, one process)", "",
                  "| files | camera | fps, 4 alive | fps, live camera dead | change |", "|---|---|---:|---:|---:|"]
        for d in dead:
            for k in sorted(d.before):
                lines.append(f"| {d.mode} | {k} | {d.before[k]:.1f} | {d.after[k]:.1f} | {-100 * d.costs[k]:+.1f}% |")
            lines.append(f"| {d.mode} | live | {d.live_before:.1f} | {d.live_after:.1f} | |")
            alive, gone = d.windows
            lines.append(f"| {d.mode} | (the run's cores; other processes) | {alive.run_cores:.2f}; {percent(alive.other_share)} "
                         f"| {gone.run_cores:.2f}; {percent(gone.other_share)} | |")
        lines.append("")
        for d in dead:
            worst = max(d.costs.values())
            lines.append(f"{d.mode}: the dead camera costs the others < {DEAD_COST_TARGET:.0%}: worst change {-100 * worst:+.1f}% "
                         f"{verdict(worst < DEAD_COST_TARGET)}")
        lines.append("")
        for d in dead:
            for notice in d.notices:
                lines.append(f"- {d.mode}, stderr: `{notice.strip()}`")
    if batching:
        lines += ["", "## Batching, engine only: 4 single invocations vs one batch of 4", "",
                  "| engine | threads | single ms/frame | batch of 4 ms/frame | single/batch | max output diff |",
                  "|---|---:|---:|---:|---:|---:|"]
        for b in batching:
            lines.append(f"| {b.engine}{' ' + b.note if b.note else ''} | {b.threads} | {b.single_ms:.2f} | {b.batch_ms:.2f} "
                         f"| {b.ratio:.2f} | {b.max_diff:.2g} |")
        lines += ["", "The models: the shipped detector converted to int8 (float I/O) once for batch 1 and once for batch 4, "
                  f"4 real preprocessed frames. Does the x86-cpu bundle itself take a batch of 4? {batch_note}"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short videos, one round, short windows: a smoke run")
    parser.add_argument("--threads", default="profile,1", help="comma-separated threads settings per process (default 'profile,1')")
    parser.add_argument("--rate", type=float, default=25.0, help="dead camera: the live stream's fps and the paced files' (default 25)")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: throughput, dead, batching")
    parser.add_argument("--convert-to", type=Path, default=None, help=argparse.SUPPRESS)  # internal: the conversion child
    parser.add_argument("--profile", default=PROFILE, help=argparse.SUPPRESS)
    parser.add_argument("--batch-models-to", type=Path, default=None, help=argparse.SUPPRESS)  # internal: the batch-model child
    args = parser.parse_args(argv)
    args.sizes = QUICK if args.quick else FULL
    args.thread_settings = [t.strip() for t in args.threads.split(",") if t.strip()]
    for t in args.thread_settings:
        if t != "profile" and not (t.isdigit() and int(t) >= 1):
            parser.error(f"--threads: {t!r} is neither 'profile' nor a positive number")
    args.skip = {p.strip() for p in args.skip.split(",") if p.strip()}
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.convert_to is not None:
        convert_bundle(args.convert_to, args.profile)
        return 0
    if args.batch_models_to is not None:
        convert_batch_models(args.batch_models_to)
        return 0
    sizes = args.sizes
    bundle = ensure_bundle(PROFILE)
    batch_models = ensure_batch_models() if "batching" not in args.skip else None
    videos = ensure_videos(sizes.frames)
    pb = _pipeline_bench()
    setups, dead, batching = [], [], []
    with pb.LoadMeter() as overall:
        if "throughput" not in args.skip:
            setups = throughput(bundle, videos, sizes.frames, sizes.rounds, args.thread_settings)
        if "dead" not in args.skip:
            for paced in (True, False):
                dead.append(dead_camera(bundle, videos, paced=paced, rate=args.rate, sizes=sizes))
                d = dead[-1]
                log(f"dead camera, {d.mode}: before {d.before}, after {d.after}, live {d.live_before:.1f} -> {d.live_after:.1f}")
    batch_note = ""
    if "batching" not in args.skip:
        tensors = _frames_for(bundle, videos)
        batch_note = bundle_takes_batch(bundle)
        for threads in sorted({2 if t == "profile" else int(t) for t in args.thread_settings}, reverse=True):
            batching.append(batching_litert(batch_models, tensors, threads, sizes))
            try:
                batching.append(batching_openvino(batch_models, tensors, threads, sizes))
            except Exception as exc:  # reported, not fatal: LiteRT's figure still stands
                batching.append(Batching("OpenVINO", threads, float("nan"), float("nan"), float("nan"), note=f"failed: {exc}"))
            log("batching: " + "; ".join(f"{b.engine} {b.threads}t {b.single_ms:.2f} vs {b.batch_ms:.2f} ms/frame" for b in batching[-2:]))
    manifest = open_bundle(bundle).manifest
    header = (
        f"Shipped shapes detector, {getattr(manifest.precision, 'value', manifest.precision)} {PROFILE} bundle ({bundle.name}, input "
        f"{'x'.join(str(d) for d in manifest.inputs[0].shape)}); {CAMERAS} MJPG videos of moving shapes, {sizes.frames} frames "
        f"{FRAME_SIZE[0]}x{FRAME_SIZE[1]} each, unpaced for throughput; median round of {sizes.rounds}"
        f"{' (quick)' if args.quick else ''}; dead camera: {sizes.window_s:g} s windows at {args.rate:g} fps; "
        f"other processes used {percent(overall.share)} of the CPUs during parts 1-2"
    )
    text = render(setups, dead, batching, batch_note, header=header, machine=machine_line(", ".join(args.thread_settings)))
    print(text, end="")
    common.write_results(RESULTS_FILE, text, log=log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
