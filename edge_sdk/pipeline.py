"""The pipeline: frames in, results out, with capture, inference and output overlapping.

Three threads share the work: capture + preprocessing, inference + decoding + filtering, and the
caller's thread for output. OpenCV and the engines release the GIL, so the stages really overlap;
bounded queues between them keep memory flat and, for files, make the reader wait rather than drop.

A watchdog times the inference stage. An inference that hangs past ``watchdog.hang_s`` or raises
gets a fresh engine and a fresh stage thread, within a restart limiter; the stage it replaces, if
it ever wakes, sees it was superseded and leaves without touching the queues. A hang in native code
can only be abandoned in this process; with ``watchdog.isolate`` the engine runs in a child process
(``edge_sdk.backends.worker``) that is killed instead.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from edge_sdk.bundle import Bundle
from edge_sdk.config import RunConfig
from edge_sdk.decoders import DecodeContext, get_decoder
from edge_sdk.errors import EdgeSDKError, EngineError
from edge_sdk.preprocess import Normalization, Placement, Preprocessing, dequantize, fit, normalize, quantize
from edge_sdk.results import Detection, FrameResult

log = logging.getLogger("edge_sdk.pipeline")

_DONE = object()
PROBATION_FRAMES = 30  # a swapped-in model that fails within this many frames is swapped back out


class InputAdapter:
    """Frame -> the exact tensor the engine takes, built once per engine.

    When the model's input quantization undoes the [0, 1] scaling (scale 1/255), pixels go into
    the model as they are, shifted by the zero point: no float copy of the frame is ever made.
    """

    def __init__(self, spec: Preprocessing, input_spec: dict) -> None:
        self.spec = spec
        self.dtype = np.dtype(input_spec["dtype"])
        self.quant = input_spec["quantization"] if self.dtype != np.float32 else None
        self.direct = (
            self.quant is not None
            and spec.normalization is Normalization.UNIT
            and spec.layout == "NHWC"
            and abs(self.quant[0] * 255.0 - 1.0) < 1e-4
        )

    def __call__(self, frame: np.ndarray) -> tuple[np.ndarray, Placement]:
        image, placement = fit(frame, self.spec)
        if image.ndim == 2:
            image = image[:, :, None]
        if self.direct:
            info = np.iinfo(self.dtype)
            shifted = image.astype(np.int16) + int(self.quant[1])
            return np.clip(shifted, info.min, info.max).astype(self.dtype)[None], placement
        x = normalize(image, self.spec)
        if self.quant is not None:
            x = quantize(x, scale=self.quant[0], zero_point=self.quant[1], dtype=self.dtype)
        return x, placement


def _inside(point: tuple[float, float], polygon: list[tuple[float, float]]) -> bool:
    x, y = point
    inside = False
    j = len(polygon) - 1
    for i in range(len(polygon)):
        xi, yi = polygon[i]
        xj, yj = polygon[j]
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            inside = not inside
        j = i
    return inside


def keep(detection: Detection, config: RunConfig) -> bool:
    """The run's filters: score, label allow-list, zones and minimum area."""
    if detection.score < config.threshold:
        return False
    if config.labels is not None and detection.label not in config.labels:
        return False
    if detection.box is not None:
        if detection.box.area < config.min_area:
            return False
        if config.zones and not any(_inside(detection.box.center, zone) for zone in config.zones):
            return False
    return True


@dataclass
class Health:
    """The inference stage's health as the fleet sees it: ``ok``, ``degraded`` (restarting or just
    restarted) or ``failed`` (the restart limiter gave up), and what happened."""

    state: str = "ok"
    detail: str | None = None
    restarts: int = 0  # fresh engines opened after a hang or a failure
    hangs: int = 0
    failures: int = 0  # inferences that raised
    lost_frames: int = 0  # frames that were in a hung or failed inference


@dataclass
class Stats:
    """Counters and recent per-stage timings, safe to read while the pipeline runs."""

    frames_in: int = 0
    frames_done: int = 0
    frames_skipped: int = 0  # by stride or fps cap
    frame_errors: int = 0
    detections: int = 0
    health: Health = field(default_factory=Health)
    source: object = field(default=None, repr=False)  # the source being run: its stats() count the frames it dropped
    started: float = field(default_factory=time.monotonic)
    window: dict[str, deque] = field(default_factory=lambda: {k: deque(maxlen=1000) for k in ("preprocess", "infer", "decode", "latency")})
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, timings: dict[str, float]) -> None:
        with self.lock:
            for key, value in timings.items():
                self.window[key].append(value)

    def snapshot(self) -> dict:
        with self.lock:
            out = {
                "frames_in": self.frames_in, "frames_done": self.frames_done, "frames_skipped": self.frames_skipped,
                "frame_errors": self.frame_errors, "detections": self.detections,
                "frames_dropped": _source_dropped(self.source),
                "fps": self.frames_done / max(1e-9, time.monotonic() - self.started),
                "engine_state": self.health.state, "engine_detail": self.health.detail,
                "engine_restarts": self.health.restarts, "engine_hangs": self.health.hangs,
                "engine_failures": self.health.failures, "engine_lost_frames": self.health.lost_frames,
            }
            for key, values in self.window.items():
                if values:
                    arr = np.fromiter(values, dtype=np.float64)
                    out[f"{key}_ms_p50"] = float(np.percentile(arr, 50))
                    out[f"{key}_ms_p99"] = float(np.percentile(arr, 99))
        return out


def _source_dropped(source) -> int:
    """Frames ``source`` dropped (a live source keeps only the newest; real-time playback skips late ones)."""
    stats = getattr(source, "stats", None)
    return int(stats().get("frames_dropped", 0)) if callable(stats) else 0


class RestartLimiter:
    """At most ``limit`` restarts within ``window_s``, each after a growing pause (0, 1, 2, 4, 8 s):
    a fault that comes back at once is not hammered, and one that keeps coming back is given up on."""

    PAUSES_S = (0.0, 1.0, 2.0, 4.0, 8.0)

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit, self.window_s = limit, window_s
        self.times: deque[float] = deque()

    def next(self, now: float) -> float | None:
        """The pause before the next restart, or None when the limit is reached."""
        while self.times and now - self.times[0] > self.window_s:
            self.times.popleft()
        if len(self.times) >= self.limit:
            return None
        self.times.append(now)
        return self.PAUSES_S[min(len(self.times) - 1, len(self.PAUSES_S) - 1)]


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if not isinstance(exc, EdgeSDKError) else text


@dataclass(frozen=True)
class Model:
    """A bundle's engine with the preprocessing and decoding that belong to it; swapped as one."""

    bundle: Bundle
    engine: object
    adapter: InputAdapter
    outputs: list
    decode: Callable
    labels: tuple[str, ...]

    @classmethod
    def build(cls, bundle: Bundle, engine) -> Model:
        manifest = bundle.manifest
        return cls(
            bundle=bundle, engine=engine, adapter=InputAdapter(manifest.preprocessing, engine.input_specs()[0]),
            outputs=engine.output_specs(), decode=get_decoder(manifest.decoder.kind), labels=tuple(bundle.labels()),
        )


class Pipeline:
    """A bundle's engine, preprocessing and decoder, applied to a frame source.

    ``config`` and the model may be replaced while ``run`` is going (fleet commands): each frame
    reads them once, so a frame is never half old, half new.
    """

    def __init__(self, bundle: Bundle, engine, *, config: RunConfig) -> None:
        self.model = Model.build(bundle, engine)
        self.config = config
        self.stats = Stats()
        self.latest_frame: np.ndarray | None = None  # the newest frame inferred, for snapshots and model trials
        self.latest_detections: tuple[Detection, ...] = ()
        self._previous: Model | None = None  # restored if the model on probation fails
        self._probation = 0
        self._on_swap_failure: Callable[[BaseException], None] | None = None
        self.health = self.stats.health
        self.health_listeners: list[Callable[[Health], None]] = []  # told of every change, from the pipeline's threads
        self._retired: deque[Model] = deque(maxlen=8)  # models whose engine was replaced; queued frames move on

    def close(self) -> None:
        """Free the engines (a child process ends); the pipeline cannot run after this."""
        for model in {id(m): m for m in (self.model, self._previous) if m is not None}.values():
            _close_engine(model.engine)

    def open_engine(self, bundle: Bundle):
        """A fresh engine for ``bundle`` as the run's configuration asks (in a child process when isolated)."""
        return _open_engine(bundle, self.config)

    @property
    def bundle(self) -> Bundle:
        return self.model.bundle

    @property
    def engine(self):
        return self.model.engine

    @property
    def adapter(self) -> InputAdapter:
        return self.model.adapter

    def _set_health(self, state: str, detail: str | None) -> None:
        with self.stats.lock:
            self.health.state, self.health.detail = state, detail
        for listener in list(self.health_listeners):
            try:
                listener(self.health)
            except Exception:  # noqa: BLE001 - a listener's bug must not stop inference
                log.exception("health listener failed")

    def swap(self, model: Model, *, on_failure: Callable[[BaseException], None] | None = None) -> Model:
        """Run ``model`` from the next frame on; returns the old one. If ``model`` then fails on a
        frame, the old model comes back and ``on_failure`` is told why."""
        old, self.model = self.model, model
        self._previous, self._on_swap_failure, self._probation = old, on_failure, PROBATION_FRAMES
        return old

    def infer(self, frame: np.ndarray, *, index: int = 0, timestamp: float | None = None, model: Model | None = None) -> FrameResult:
        """One frame through preprocessing, the engine, the decoder and the filters."""
        model = model or self.model
        t0 = time.perf_counter()
        tensor, placement = model.adapter(frame)
        t1 = time.perf_counter()
        return self._finish(model, frame, tensor, placement, index, timestamp or time.time(), t0, t1)

    def _finish(self, model: Model, frame, tensor, placement, index, timestamp, t0, t1) -> FrameResult:
        config = self.config
        t_infer = time.perf_counter()  # not t1: the tensor may have waited in the queue since
        raw = model.engine.run([tensor])
        t2 = time.perf_counter()
        outputs = [
            dequantize(out, scale=spec["quantization"][0], zero_point=spec["quantization"][1])
            if spec["quantization"] is not None and np.dtype(spec["dtype"]) != np.float32 else out
            for out, spec in zip(raw, model.outputs)
        ]
        context = DecodeContext(
            labels=model.labels, placement=placement, preprocessing=model.adapter.spec,
            score_threshold=config.threshold, options=dict(model.bundle.manifest.decoder.options),
        )
        detections = tuple(d for d in model.decode(outputs, context) if keep(d, config))
        t3 = time.perf_counter()
        timings = {"preprocess": (t1 - t0) * 1e3, "infer": (t2 - t_infer) * 1e3, "decode": (t3 - t2) * 1e3}
        height, width = frame.shape[:2]
        return FrameResult(index=index, timestamp=timestamp, frame_size=(width, height), detections=detections, timings_ms=timings)

    def _guarded(self, model: Model, frame, tensor, placement, index, timestamp, t0, t1) -> FrameResult | None:
        """``_finish``, except that a model on probation that fails is replaced by the one before."""
        try:
            result = self._finish(model, frame, tensor, placement, index, timestamp, t0, t1)
        except Exception as exc:
            previous, notify = self._previous, self._on_swap_failure
            if previous is None or model is not self.model:
                raise
            self.model, self._previous, self._on_swap_failure = previous, None, None
            if notify is not None:
                notify(exc)
            return None
        if self._previous is not None and model is self.model:
            self._probation -= 1
            if self._probation <= 0:
                self._previous = self._on_swap_failure = None  # the new model has proved itself
        self.latest_frame, self.latest_detections = frame, result.detections
        return result

    def run(self, source, *, on_result: Callable[[FrameResult], None] | None = None) -> Iterator[FrameResult]:
        """Results of ``source`` as they come; stops at ``config.max_frames`` or the source's end."""
        prepared: queue.Queue = queue.Queue(maxsize=2)
        finished: queue.Queue = queue.Queue(maxsize=4)
        stop = threading.Event()
        failures: list[BaseException] = []
        self.stats.source = source

        def put(q: queue.Queue, item) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def capture() -> None:
            last = -1e9
            try:
                for seen, frame in enumerate(source.frames()):
                    if stop.is_set():
                        break
                    self.stats.frames_in += 1
                    config, model = self.config, self.model
                    # The one cap on a live source (cmd/config changes it); files are paced by the
                    # source itself when --fps asks for real-time playback.
                    min_gap = 1.0 / config.fps if config.fps and source.live else 0.0
                    now = time.monotonic()
                    if seen % config.stride or now - last < min_gap:
                        self.stats.frames_skipped += 1
                        continue
                    last = now
                    t0 = time.perf_counter()
                    try:
                        tensor, placement = model.adapter(frame.image)
                    except ValueError:
                        self.stats.frame_errors += 1  # an empty or malformed frame: skip it, keep going
                        continue
                    if not put(prepared, (model, frame, tensor, placement, t0, time.perf_counter())):
                        break
            except BaseException as exc:  # surfaced in the caller's thread
                failures.append(exc)
            finally:
                put(prepared, _DONE)

        watchdog = self.config.watchdog
        limiter = RestartLimiter(watchdog.max_restarts, watchdog.window_s)
        lock = threading.Lock()
        # The current stage's generation, and what it is doing while the watchdog should time it:
        # (since, limit_s, what, engine to abort or None).
        current: dict = {"generation": 0, "busy": None, "thread": None}

        def spawn(generation: int, reason: str | None) -> None:
            thread = threading.Thread(target=stage, args=(generation, reason), name=f"edge-sdk-inference-{generation}", daemon=True)
            current["thread"] = thread
            thread.start()

        def supersede() -> int:
            """Under ``lock``: the current stage is abandoned; the next generation takes over."""
            current["generation"] += 1
            current["busy"] = None
            return current["generation"]

        def reopen(generation: int, reason: str) -> str:
            """Open a fresh engine for the current model, within the limiter: "ready", "stop" (given up,
            or the run is ending) or "superseded" (the watchdog gave up on this very attempt)."""
            while True:
                pause = limiter.next(time.monotonic())
                if pause is None:
                    detail = f"{reason}; {watchdog.max_restarts} restarts within {watchdog.window_s:g} s, giving up"
                    self._set_health("failed", detail)
                    failures.append(EngineError(f"the inference engine keeps failing: {detail}"))
                    return "stop"
                self._set_health("degraded", f"{reason}; restarting the engine ({len(limiter.times)} of {watchdog.max_restarts} within {watchdog.window_s:g} s)")
                if stop.wait(pause):
                    return "stop"
                old = self.model
                with lock:
                    current["busy"] = (time.monotonic(), watchdog.start_s, "opening a fresh engine", None)
                try:
                    fresh: Model | None = Model.build(old.bundle, self.open_engine(old.bundle))
                    problem = None
                except Exception as exc:  # noqa: BLE001 - any failure to open is a reason to try again
                    fresh, problem = None, f"the fresh engine did not open: {_describe(exc)}"
                with lock:
                    superseded = generation != current["generation"]
                    current["busy"] = None
                if superseded:
                    if fresh is not None:
                        _close_engine(fresh.engine)
                    return "superseded"
                if fresh is None:
                    reason = problem
                    continue
                self._retired.append(old)
                if self._previous is old:
                    self._previous = fresh
                self.model = fresh
                _close_engine(old.engine)
                with self.stats.lock:
                    self.health.restarts += 1
                return "ready"

        def stage(generation: int, reason: str | None) -> None:
            """The inference stage. After a fault a fresh stage opens a fresh engine first; the
            stage it replaces, if ever it wakes up, sees it was superseded and leaves quietly."""
            handed_over = False
            recovering = reason
            try:
                if reason is not None and (outcome := reopen(generation, reason)) != "ready":
                    handed_over = outcome == "superseded"
                    return
                while (item := prepared.get()) is not _DONE:
                    model, frame, tensor, placement, t0, t1 = item
                    if any(model is r for r in self._retired):
                        model = self.model  # prepared for the engine that was replaced: same preprocessing
                    with lock:
                        current["busy"] = (time.monotonic(), watchdog.hang_s, "an inference", model.engine)
                    error: BaseException | None = None
                    try:
                        result = self._guarded(model, frame.image, tensor, placement, frame.index, frame.timestamp, t0, t1)
                    except Exception as exc:  # noqa: BLE001 - the watchdog decides what a failure costs
                        error = exc
                    with lock:
                        superseded = generation != current["generation"]
                        current["busy"] = None
                        successor = supersede() if error is not None and not superseded else None
                    if superseded:
                        handed_over = True  # the watchdog gave up on this stage while it was stuck
                        return
                    if error is not None:
                        why = f"the engine failed: {_describe(error)}"
                        with self.stats.lock:
                            self.health.failures += 1
                            self.health.lost_frames += 1
                        if recovering is not None and why == recovering:
                            # A fresh engine that fails its first frame as the last one did will not be
                            # mended by another restart: stop and say so.
                            self._set_health("failed", f"{why}; a fresh engine failed the same way")
                            failures.append(EngineError(f"the inference engine failed again after a restart: {_describe(error)}"))
                            return
                        handed_over = True
                        spawn(successor, why)
                        return
                    if recovering is not None:
                        recovering = None
                        self._set_health("ok", f"recovered: a fresh engine is running ({self.health.restarts} restarts so far)")
                    if result is None:
                        self.stats.frame_errors += 1
                        continue
                    if not put(finished, result):
                        return
            except BaseException as exc:
                failures.append(exc)
            finally:
                if not handed_over:
                    put(finished, _DONE)

        def watch() -> None:
            tick = min(0.5, watchdog.hang_s / 4)
            while not stop.wait(tick):
                with lock:
                    busy = current["busy"]
                    if busy is None or time.monotonic() - busy[0] <= busy[1]:
                        continue
                    successor = supersede()
                since, limit, what, engine = busy
                reason = f"{what} took over {limit:g} s (hung)"
                with self.stats.lock:
                    self.health.hangs += 1
                    self.health.lost_frames += what == "an inference"
                abort = getattr(engine, "abort", None)
                if abort is not None:
                    abort(reason)  # an engine in a child process: killed now, its stage wakes and leaves
                spawn(successor, reason)

        threads = [threading.Thread(target=capture, name="edge-sdk-capture", daemon=True),
                   threading.Thread(target=watch, name="edge-sdk-watchdog", daemon=True)]
        for thread in threads:
            thread.start()
        spawn(0, None)
        try:
            while (result := finished.get()) is not _DONE:
                self.stats.frames_done += 1
                self.stats.detections += len(result.detections)
                latency = (time.time() - result.timestamp) * 1e3
                self.stats.record({**result.timings_ms, "latency": latency})
                if on_result is not None:
                    on_result(result)
                yield result
                if self.config.max_frames is not None and self.stats.frames_done >= self.config.max_frames:
                    break
        finally:
            stop.set()
            # Once stop is set, the capture thread's final _DONE is never queued; without this one
            # the inference thread, if waiting on an empty queue, would block the join below for 10 s.
            try:
                prepared.put_nowait(_DONE)
            except queue.Full:
                pass  # not empty: the inference thread is not waiting and stops at its next put
            source.close()
            for thread in (*threads, current["thread"]):  # a stage the watchdog gave up on is not waited for
                thread.join(timeout=10)
        if failures:
            error = failures[0]
            if isinstance(error, EdgeSDKError):
                raise error
            raise EngineError(f"the pipeline stopped: {type(error).__name__}: {error}") from error


def _open_engine(bundle: Bundle, config: RunConfig):
    options = {"device": config.device, "threads": config.threads, "cpu_fallback": config.cpu_fallback}
    if config.watchdog.isolate:
        from edge_sdk.backends.worker import EngineProcess

        return EngineProcess(bundle.path, start_timeout=config.watchdog.start_s, **options)
    from edge_sdk.backends import open_engine

    return open_engine(bundle, **options)


def _close_engine(engine) -> None:
    """Free a replaced engine: a child process is ended; an in-process one is left to the collector
    (a hung one may still be inside a call)."""
    close = getattr(engine, "close", None)
    if close is not None:
        try:
            close()
        except Exception:  # noqa: BLE001 - it failed already; freeing it must not fail the restart
            log.debug("closing a replaced engine failed", exc_info=True)


def open_pipeline(bundle_path, *, config: RunConfig) -> Pipeline:
    """Verify a bundle, open the engine it asks for as its profile says, and build the pipeline."""
    from edge_sdk.bundle import open_bundle

    bundle = open_bundle(bundle_path)
    return Pipeline(bundle, _open_engine(bundle, config), config=config)
