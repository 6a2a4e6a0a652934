"""Cameras on one engine: each camera a thread running the naive loop, results to the caller's thread.

A camera that fails or ends does not stop the others; the run ends when every camera has ended,
and fails only when the engine is given up on or every camera failed.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Protocol

from edge_sdk.errors import EdgeSDKError, EngineError
from edge_sdk.gate import ABANDONED, LOST, Turn
from edge_sdk.stats import Stats

if TYPE_CHECKING:
    from edge_sdk.config import RunConfig
    from edge_sdk.results import FrameResult
    from edge_sdk.sources import Source, SourceEvent


class SharedEngine(Protocol):
    """What a run of cameras needs of the engine they share (``edge_sdk.pipeline.Pipeline`` is one)."""

    config: RunConfig
    model: object

    def start(self, fatal: Callable[[BaseException], None]) -> None:
        """A run begins; ``fatal`` stops it when the engine is given up on."""
        ...

    def stop(self) -> None: ...

    def turn(self, turn: Turn, model, frame, tensor, placement, index: int, timestamp: float, t0: float, t1: float,
             filters) -> FrameResult | object | None:
        """One camera's turn on the engine: a result, None, LOST or ABANDONED."""
        ...

class Stage(Protocol):
    """A step after the engine, per camera (tracking is one): it may see more than the camera reports."""

    def widen(self, filters):
        """The filters the decoder should apply (e.g. a lower threshold) for ``filters``."""
        ...

    def process(self, result: FrameResult, frame, filters) -> FrameResult: ...

    def finish(self, *, reason: str = "stopped") -> list: ...


class CameraState(str, Enum):
    """What a camera is doing, as status, metrics, /healthz and the live view show it; compares
    equal to its plain string value."""

    STARTING = "starting"
    RUNNING = "running"
    STALLED = "stalled"
    RECONNECTING = "reconnecting"
    ENDED = "ended"  # its file or folder played to the end, or the run stopped
    DONE = "done"  # it delivered max_frames
    FAILED = "failed"  # its source could not be opened after its retries, or broke

    def __str__(self) -> str:
        return self.value


STARTING, RUNNING, STALLED, RECONNECTING, ENDED, DONE, FAILED = CameraState
_FROM_SOURCE = {"connected": RUNNING, "resumed": RUNNING, "stalled": STALLED, "reconnecting": RECONNECTING,
                "ended": ENDED, "failed": FAILED}


class Camera:
    """One frame source with its own filters, counters, state and newest frame.

    ``source`` is an open :class:`~edge_sdk.sources.Source`, or a function that opens one (called
    in the camera's own thread, so a camera that cannot open holds up no other). ``settings``
    holds the camera's filters and pacing (threshold, labels, zones, min_area, fps, stride); None
    reads them from the pipeline's run configuration. Replace ``settings`` to change them live.
    """

    def __init__(self, camera_id: str, source: Source | Callable[[], Source], *, settings=None, stats: Stats | None = None) -> None:
        self.id = camera_id
        self.settings = settings
        self.stats = stats if stats is not None else Stats()
        self.state, self.detail = STARTING, None
        self.error: BaseException | None = None
        self.latest_frame = None
        self.latest_detections: tuple = ()
        self.latest_segmentation = None  # a semantic-segmentation model's newest class map (results.Segmentation)
        self.listeners: list[Callable[[Camera], None]] = []  # told of every change of state
        self.source_listeners: list[Callable[[SourceEvent], None]] = []  # told of each of the source's events
        self.stage: Stage | None = None  # runs on each result in the camera's thread (tracking)
        self.source: Source | None = None if callable(source) and not hasattr(source, "frames") else source
        self._opener = None if self.source is not None else source
        self._frames: Iterator | None = None
        self._thread: threading.Thread | None = None
        self._last = -1e9  # when the last frame was taken, for the fps cap
        self._produced = 0

    def filters(self, fallback):
        return self.settings if self.settings is not None else fallback

    def set_state(self, state: CameraState, detail: str | None) -> None:
        if state == self.state and detail == self.detail:
            return
        self.state, self.detail = state, detail
        for listener in list(self.listeners):
            listener(self)

    def on_source_event(self, event: SourceEvent) -> None:
        """Pass as the source's ``on_event``: the camera's state follows its source."""
        for listener in list(self.source_listeners):
            listener(event)
        state = _FROM_SOURCE.get(getattr(event.state, "value", str(event.state)))
        if state is not None and self.state not in (FAILED, DONE):
            self.set_state(state, event.detail)

    def _open(self) -> Iterator:
        if self.source is None:
            self.source = self._opener()
        self.stats.source = self.source
        return iter(self.source.frames())

    def close(self) -> None:
        if self.source is not None:
            self.source.close()

    def forget(self) -> None:
        """Drop the listeners and the opener (which refer back to whoever made the camera)."""
        self.listeners.clear()
        self.source_listeners.clear()
        self._opener = self._frames = None


@dataclass(frozen=True)
class _End:
    camera: Camera


_STOP = object()
WAKE_S = 0.5  # the longest the consuming thread waits for a result before looking at its signals again


class CameraRun:
    """One pass of a pipeline over several cameras; iterate :meth:`results` to run it.

    Each camera stops after ``max_frames`` results (None: the pipeline's ``config.max_frames``,
    read as the run goes, so a fleet command can change it).
    """

    def __init__(self, pipeline: SharedEngine, cameras: list[Camera], *, max_frames: int | None = None,
                 raise_camera_errors: bool = False) -> None:
        self.pipeline, self.cameras, self.max_frames = pipeline, cameras, max_frames
        self.raise_camera_errors = raise_camera_errors
        self.out: queue.Queue = queue.Queue(maxsize=max(4, 2 * len(cameras)))
        self.stop = threading.Event()
        self.failures: list[BaseException] = []

    def results(self) -> Iterator[FrameResult]:
        """Every camera's results as they come, until every camera has ended or :meth:`close`."""
        self.pipeline.start(self._fatal)
        for camera in self.cameras:
            self.spawn(camera)
        running = len(self.cameras)
        try:
            while running and not self.stop.is_set():
                try:
                    # A timeout, so Ctrl-C is acted on within WAKE_S: CPython runs signal handlers in
                    # the main thread, and a SIGINT delivered to another thread does not wake a wait
                    # without one until the next result arrives (none may, while a source is stalled).
                    item = self.out.get(timeout=WAKE_S)
                except queue.Empty:
                    continue
                if item is _STOP:
                    break
                if isinstance(item, _End):
                    running -= 1
                    continue
                camera, result = item
                stats = camera.stats
                stats.frames_done += 1
                stats.detections += len(result.detections)
                stats.record({**result.timings_ms, "latency": (time.time() - result.timestamp) * 1e3})
                yield result
        finally:
            self.close()
        self._raise()

    def request_stop(self) -> None:
        """Ask the run to end, from any thread; :meth:`results` returns soon after."""
        self._fatal_or_stop(None)

    def close(self) -> None:
        """Stop every camera, free the sources, and wait for the cameras' threads (not a hung one)."""
        self.stop.set()
        self.pipeline.stop()
        for camera in self.cameras:
            camera.close()
        deadline = time.monotonic() + 10  # for all of them: a stop must not take 10 s per camera
        for camera in self.cameras:
            thread = camera._thread
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=max(0.1, deadline - time.monotonic()))

    def _raise(self) -> None:
        if self.failures:
            error = self.failures[0]
            if isinstance(error, EdgeSDKError):
                raise error
            raise EngineError(f"the pipeline stopped: {type(error).__name__}: {error}") from error
        failed = [c for c in self.cameras if c.error is not None]
        if failed and (self.raise_camera_errors or len(failed) == len(self.cameras)):
            error = failed[0].error
            if isinstance(error, EdgeSDKError):
                raise error
            raise EngineError(f"camera {failed[0].id} stopped: {type(error).__name__}: {error}") from error

    def _fatal(self, error: BaseException) -> None:
        self._fatal_or_stop(error)

    def _fatal_or_stop(self, error: BaseException | None) -> None:
        if error is not None:
            self.failures.append(error)
        self.stop.set()
        try:
            self.out.put_nowait(_STOP)
        except queue.Full:
            pass  # the caller's thread is not waiting; it sees the stop after the next item

    def spawn(self, camera: Camera) -> None:
        """Start a thread for ``camera`` (again, when the watchdog abandoned its stuck one)."""
        if self.stop.is_set():
            return
        thread = threading.Thread(target=self._work, args=(camera,), name=f"edge-sdk-camera-{camera.id}", daemon=True)
        camera._thread = thread
        thread.start()

    def _put(self, item) -> bool:
        try:
            self.out.put_nowait(item)
            return True
        except queue.Full:
            pass
        while not self.stop.is_set():
            try:
                self.out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self, camera: Camera) -> None:
        try:
            if camera._frames is None:
                camera._frames = camera._open()
            if not self._loop(camera) and not self.stop.is_set():
                return  # abandoned: a new thread carries on with this camera
            if camera.state not in (DONE, ENDED):
                camera.set_state(ENDED, "the run stopped" if self.stop.is_set() else None)
        except BaseException as exc:  # noqa: BLE001 - a camera's failure ends that camera only
            camera.error = exc
            camera.set_state(FAILED, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        if camera.stage is not None:
            camera.stage.finish(reason="stopped")  # its open tracks end with the camera
        self._put(_End(camera))

    def _loop(self, camera: Camera) -> bool:
        """Frames of ``camera`` through the engine until its end; False when this thread was abandoned."""
        pipeline, stats = self.pipeline, camera.stats
        turn = Turn(abandoned=lambda: self.spawn(camera))
        for frame in camera._frames:
            if self.stop.is_set():
                return True
            stats.frames_in += 1
            settings = camera.filters(pipeline.config)
            # The one cap on a live source (cmd/config changes it); files are paced by the source
            # itself when --fps asks for real-time playback.
            min_gap = 1.0 / settings.fps if settings.fps and camera.source.live else 0.0
            now = time.monotonic()
            if (stats.frames_in - 1) % settings.stride or now - camera._last < min_gap:
                stats.frames_skipped += 1
                continue
            camera._last = now
            model = pipeline.model
            stage = camera.stage
            t0 = time.perf_counter()
            try:
                tensor, placement = model.adapter(frame.image)
            except ValueError:
                stats.frame_errors += 1  # an empty or malformed frame: skip it, keep going
                continue
            t1 = time.perf_counter()
            result = pipeline.turn(turn, model, frame.image, tensor, placement, frame.index, frame.timestamp, t0, t1,
                                   stage.widen(settings) if stage is not None else settings)
            if result is ABANDONED:
                return False
            if result is LOST:
                continue
            if result is None:
                stats.frame_errors += 1
                continue
            result = result.for_camera(camera.id)
            if stage is not None:
                result = stage.process(result, frame, settings)
            camera.latest_frame, camera.latest_detections = frame.image, result.detections
            camera.latest_segmentation = result.segmentation
            if camera.state == STARTING:
                camera.set_state(RUNNING, None)
            if not self._put((camera, result)):
                return True
            camera._produced += 1
            limit = self.max_frames if self.max_frames is not None else pipeline.config.max_frames
            if limit is not None and camera._produced >= limit:
                camera.set_state(DONE, f"{camera._produced} frames")
                return True
        return True
