"""The pipeline: one engine, shared by every camera of a run, with its watchdog.

Each camera has one thread that reads, preprocesses, takes its turn on the engine (first come,
first served: :mod:`edge_sdk.gate`), decodes and filters, and hands the result to the caller's
thread. A camera is thus the naive loop a tutorial writes, and cameras overlap each other: while
one infers, the others read and preprocess. A live source's own reader thread keeps the newest
frame meanwhile.

The watchdog (:mod:`edge_sdk.watchdog`) times every inference. One that hangs past
``watchdog.hang_s`` or raises gets a fresh engine, within a restart limiter; a hung camera thread
is abandoned and replaced, and if it ever wakes it sees its turn was taken and leaves quietly. A
hang in native code can only be abandoned in this process; with ``watchdog.isolate`` the engine
runs in a child process (``edge_sdk.backends.worker``) that is killed instead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator

import numpy as np

from edge_sdk.bundle import Bundle
from edge_sdk.config import RunConfig
from edge_sdk.decoders import DecodeContext
from edge_sdk.errors import EdgeSDKError, EngineError
from edge_sdk.gate import ABANDONED, LOST, EngineGate, Turn
from edge_sdk.model import InputAdapter, Model, keep
from edge_sdk.preprocess import dequantize
from edge_sdk.results import FrameResult, Segmentation
from edge_sdk.stats import Stats
from edge_sdk.watchdog import Health, RestartLimiter, Span, Watchdog

__all__ = ["ABANDONED", "LOST", "PROBATION_FRAMES", "Health", "InputAdapter", "Model", "Pipeline", "RestartLimiter", "Turn", "keep", "open_pipeline"]

log = logging.getLogger("edge_sdk.pipeline")

PROBATION_FRAMES = 30  # a swapped-in model that fails within this many frames is swapped back out


def describe(exc: BaseException) -> str:
    """An exception as one line: its type (unless it is one of ours) and its first line."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if not isinstance(exc, EdgeSDKError) else text


class Pipeline:
    """A bundle's engine, preprocessing and decoder, applied to one or several cameras.

    ``config`` and the model may be replaced while a run is going (fleet commands): each frame
    reads them once, so a frame is never half old, half new.
    """

    def __init__(self, bundle: Bundle, engine, *, config: RunConfig) -> None:
        self.model = Model.build(bundle, engine)
        self.config = config
        self.stats = Stats()  # the camera of :meth:`run`
        self.health = Health()
        self.health_listeners: list[Callable[[Health], None]] = []  # told of every change, from the pipeline's threads
        self.latest_frame: np.ndarray | None = None  # the newest frame inferred (any camera), for model trials
        self.latest_detections: tuple = ()
        self.gate = EngineGate()
        self._health_lock = threading.Lock()
        self._previous: Model | None = None  # restored if the model on probation fails
        self._probation = 0
        self._on_swap_failure: Callable[[BaseException], None] | None = None
        self._on_swap_success: Callable[[], None] | None = None
        self._retired: deque[Model] = deque(maxlen=8)  # models whose engine was replaced; prepared frames move on
        self._limiter = RestartLimiter(config.watchdog.max_restarts, config.watchdog.window_s)
        self._recovering: str | None = None  # why the running engine is a fresh one, until it has inferred a frame
        self._stopping = threading.Event()
        self._fatal: Callable[[BaseException], None] | None = None  # the run's way to stop on a fatal error
        self._watchdog: Watchdog | None = None

    # -- lifecycle ----------------------------------------------------------------------------------

    def close(self) -> None:
        """Free the engines (a child process ends); the pipeline cannot run after this."""
        for model in {id(m): m for m in (self.model, self._previous) if m is not None}.values():
            _close_engine(model.engine)

    def open_engine(self, bundle: Bundle):
        """A fresh engine for ``bundle`` as the run's configuration asks (in a child process when isolated)."""
        return _open_engine(bundle, self.config)

    def start(self, fatal: Callable[[BaseException], None]) -> None:
        """A run begins: the watchdog starts, and ``fatal`` is how the pipeline stops it."""
        self._fatal = fatal
        self._stopping.clear()
        self.gate.open()
        self._watchdog = Watchdog(self._on_hang, tick_s=min(0.5, self.config.watchdog.hang_s / 4)).start()

    def stop(self) -> None:
        """The run ends: waiting cameras are let go and the watchdog stops."""
        self._stopping.set()
        self.gate.close()
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None

    @property
    def bundle(self) -> Bundle:
        return self.model.bundle

    @property
    def engine(self):
        return self.model.engine

    @property
    def adapter(self) -> InputAdapter:
        return self.model.adapter

    # -- models ---------------------------------------------------------------------------------

    def swap(self, model: Model, *, on_failure: Callable[[BaseException], None] | None = None,
             on_success: Callable[[], None] | None = None) -> Model:
        """Run ``model`` from the next frame on; returns the old one. If ``model`` then fails on a
        frame within :data:`PROBATION_FRAMES`, the old model comes back and ``on_failure`` is told
        why; once it has passed them, ``on_success`` is told (both from a camera's thread)."""
        old, self.model = self.model, model
        self._previous, self._on_swap_failure, self._probation = old, on_failure, PROBATION_FRAMES
        self._on_swap_success = on_success
        return old

    def replace(self, model: Model) -> Model:
        """Run ``model`` from the next frame on, without probation (a rollback the fleet asked
        for); a model on probation is dropped without telling its callbacks. Returns the old one."""
        old, self.model = self.model, model
        self._previous = self._on_swap_failure = self._on_swap_success = None
        return old

    @property
    def on_probation(self) -> bool:
        return self._previous is not None

    def current(self, model: Model) -> Model:
        """``model``, or the running one if ``model``'s engine was replaced since (same preprocessing)."""
        return self.model if any(model is r for r in self._retired) else model

    # -- inference ------------------------------------------------------------------------------

    def infer(self, frame: np.ndarray, *, index: int = 0, timestamp: float | None = None, model: Model | None = None,
              filters=None) -> FrameResult:
        """One frame through preprocessing, the engine, the decoder and the filters (outside any run's watchdog)."""
        model = model or self.model
        t0 = time.perf_counter()
        tensor, placement = model.adapter(frame)
        t1 = time.perf_counter()
        shared = model is self.model
        token = Turn()
        if shared and not self.gate.acquire(token):
            raise EngineError("the pipeline is stopping")
        try:
            return self.finish(model, frame, tensor, placement, index, timestamp or time.time(), t0, t1, filters or self.config)
        finally:
            if shared:
                self.gate.release(token)

    def finish(self, model: Model, frame, tensor, placement, index, timestamp, t0, t1, filters) -> FrameResult:
        t_infer = time.perf_counter()  # not t1: the camera may have waited for its turn since
        raw = model.engine.run([tensor])
        t2 = time.perf_counter()
        outputs = [
            dequantize(out, scale=spec["quantization"][0], zero_point=spec["quantization"][1])
            if spec["quantization"] is not None and np.dtype(spec["dtype"]) != np.float32 else out
            for out, spec in zip(raw, model.outputs)
        ]
        context = DecodeContext(
            labels=model.labels, placement=placement, preprocessing=model.adapter.spec,
            score_threshold=filters.threshold, options=dict(model.bundle.manifest.decoder.options),
        )
        decoded = model.decode(outputs, context)
        segmentation = decoded if isinstance(decoded, Segmentation) else None
        detections = () if segmentation is not None else tuple(d for d in decoded if keep(d, filters))
        t3 = time.perf_counter()
        timings = {"preprocess": (t1 - t0) * 1e3, "infer": (t2 - t_infer) * 1e3, "decode": (t3 - t2) * 1e3}
        height, width = frame.shape[:2]
        return FrameResult(index=index, timestamp=timestamp, frame_size=(width, height), detections=detections,
                           timings_ms=timings, segmentation=segmentation)

    def turn(self, turn: Turn, model: Model, frame, tensor, placement, index, timestamp, t0, t1, filters):
        """A camera's turn on the engine, timed by the watchdog: a result, None when a model on
        probation failed (the previous one is back), :data:`LOST` when the inference failed, or
        :data:`ABANDONED` when this thread must leave (the watchdog gave up on it, or the run ends)."""
        if not self.gate.acquire(turn):
            return ABANDONED
        model = self.current(model)
        watchdog = self._watchdog
        if watchdog is not None:
            watchdog.busy("an inference", self.config.watchdog.hang_s, turn, model.engine)
        try:
            result = self._guarded(model, frame, tensor, placement, index, timestamp, t0, t1, filters)
        except Exception as exc:  # noqa: BLE001 - the watchdog decides what a failure costs
            if watchdog is not None:
                watchdog.idle(turn)
            return LOST if self._failed(turn, exc) else ABANDONED
        if watchdog is not None:
            watchdog.idle(turn)
        if not self.gate.release(turn):
            return ABANDONED  # the watchdog gave up on this turn while it was stuck; a new thread took over
        if self._recovering is not None:
            self._recovering = None
            self._set_health("ok", f"recovered: a fresh engine is running ({self.health.restarts} restarts so far)")
        return result

    def _guarded(self, model: Model, frame, tensor, placement, index, timestamp, t0, t1, filters) -> FrameResult | None:
        """``finish``, except that a model on probation that fails is replaced by the one before."""
        try:
            result = self.finish(model, frame, tensor, placement, index, timestamp, t0, t1, filters)
        except Exception as exc:
            previous, notify = self._previous, self._on_swap_failure
            if previous is None or model is not self.model:
                raise
            self.model, self._previous, self._on_swap_failure, self._on_swap_success = previous, None, None, None
            if notify is not None:
                notify(exc)
            return None
        if self._previous is not None and model is self.model:
            self._probation -= 1
            if self._probation <= 0:
                success = self._on_swap_success
                self._previous = self._on_swap_failure = self._on_swap_success = None  # the new model has proved itself
                if success is not None:
                    try:
                        success()
                    except Exception:  # noqa: BLE001 - telling the fleet must not cost a frame
                        log.exception("probation success listener failed")
        self.latest_frame, self.latest_detections = frame, result.detections
        return result

    # -- faults ---------------------------------------------------------------------------------

    def _set_health(self, state: str, detail: str | None) -> None:
        with self._health_lock:
            self.health.state, self.health.detail = state, detail
        for listener in list(self.health_listeners):
            try:
                listener(self.health)
            except Exception:  # noqa: BLE001 - a listener's bug must not stop inference
                log.exception("health listener failed")

    def _count(self, **increments: int) -> None:
        with self._health_lock:
            for key, value in increments.items():
                setattr(self.health, key, getattr(self.health, key) + value)

    def _give_up(self, state_detail: str, error: EngineError) -> None:
        self._set_health("failed", state_detail)
        if self._fatal is not None:
            self._fatal(error)

    def _failed(self, turn: Turn, exc: BaseException) -> bool:
        """An inference raised while ``turn`` held the engine: a recovery takes the engine over.
        False when the watchdog had already given up on ``turn``."""
        why = f"the engine failed: {describe(exc)}"
        recovery = Turn()
        if not self.gate.hand_over(turn, recovery):
            return False  # the watchdog already gave up on this turn (and killed the engine it was in)
        self._count(failures=1, lost_frames=1)
        if self._recovering is not None and why == self._recovering:
            # A fresh engine that fails its first frame as the last one did will not be mended by
            # another restart: stop and say so.
            self._give_up(f"{why}; a fresh engine failed the same way",
                          EngineError(f"the inference engine failed again after a restart: {describe(exc)}"))
            return True
        self._spawn_recovery(why, recovery)
        return True

    def _on_hang(self, span: Span) -> None:
        """From the watchdog's thread: ``span`` ran past its limit. Its thread is abandoned."""
        reason = f"{span.what} took over {span.limit_s:g} s (hung)"
        inference = span.what == "an inference"
        self._count(hangs=1, lost_frames=int(inference))
        recovery = Turn()
        self.gate.seize(recovery)  # first: the stuck call, once woken, must find its turn taken
        abort = getattr(span.engine, "abort", None)
        if abort is not None:
            abort(reason)  # an engine in a child process: killed now, the stuck call wakes and leaves
        if span.owner.abandoned is not None:
            span.owner.abandoned()  # the camera whose thread is stuck gets a new one
        self._spawn_recovery(reason, recovery)

    def _spawn_recovery(self, reason: str, recovery: Turn) -> None:
        threading.Thread(target=self._recover, args=(reason, recovery), name="edge-sdk-engine-recovery", daemon=True).start()

    def _recover(self, reason: str, recovery: Turn) -> None:
        """Open a fresh engine for the current model within the limiter, holding the engine's turn."""
        watchdog = self.config.watchdog
        first_reason = reason
        while True:
            pause = self._limiter.next(time.monotonic())
            if pause is None:
                detail = f"{reason}; {watchdog.max_restarts} restarts within {watchdog.window_s:g} s, giving up"
                self._give_up(detail, EngineError(f"the inference engine keeps failing: {detail}"))
                return
            self._set_health("degraded", f"{reason}; restarting the engine ({len(self._limiter.times)} of "
                                         f"{watchdog.max_restarts} within {watchdog.window_s:g} s)")
            if self._stopping.wait(pause):
                return
            old = self.model
            if self._watchdog is not None:
                self._watchdog.busy("opening a fresh engine", watchdog.start_s, recovery)
            try:
                fresh: Model | None = Model.build(old.bundle, self.open_engine(old.bundle))
                problem = None
            except Exception as exc:  # noqa: BLE001 - any failure to open is a reason to try again
                fresh, problem = None, f"the fresh engine did not open: {describe(exc)}"
            if self._watchdog is not None:
                self._watchdog.idle(recovery)
            if not self.gate.owned_by(recovery):
                if fresh is not None:
                    _close_engine(fresh.engine)  # the watchdog gave up on this very attempt
                return
            if fresh is None:
                reason = problem
                continue
            self._retired.append(old)
            if self._previous is old:
                self._previous = fresh
            self.model = fresh
            _close_engine(old.engine)
            self._count(restarts=1)
            self._recovering = first_reason
            self.gate.release(recovery)
            return

    # -- runs -----------------------------------------------------------------------------------

    def run(self, source, *, on_result: Callable[[FrameResult], None] | None = None) -> Iterator[FrameResult]:
        """Results of ``source`` as they come; stops at ``config.max_frames`` or the source's end."""
        from edge_sdk.camera import Camera, CameraRun

        camera = Camera("main", source, stats=self.stats)
        run = CameraRun(self, [camera], raise_camera_errors=True)
        for result in run.results():
            if on_result is not None:
                on_result(result)
            yield result


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
