"""Live sources: a reader thread keeps only the newest frame, a watchdog reports stalls, and a lost
or absent source is reopened with capped exponential backoff."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Protocol

import numpy as np

from edge_sdk.errors import SourceError
from edge_sdk.sources.backoff import Backoff
from edge_sdk.sources.base import Counters, Events, Frame, SourceState, SourceStats
from edge_sdk.sources.options import SourceOptions


class Capture(Protocol):
    """The slice of ``cv2.VideoCapture`` a live source uses; read may raise :class:`SourceError`."""

    def read(self) -> tuple[bool, np.ndarray | None]: ...

    def release(self) -> None: ...


Opener = Callable[[], Capture]
"""Opens the device or stream once, or raises :class:`SourceError` saying why not."""


class LiveSource:
    """A camera or stream behind a reader thread; see :func:`~edge_sdk.sources.open_source`."""

    live = True

    def __init__(self, name: str, opener: Opener, options: SourceOptions) -> None:
        self.name = name
        self._opener = opener
        self._options = options
        self._backoff = Backoff(options.backoff_initial_s, options.backoff_max_s)
        self._events = Events(name, options.on_event)
        self._counters = Counters()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._closed = False
        self._newest: Frame | None = None
        self._error: BaseException | None = None
        self._last_frame_at = time.monotonic()
        self._stalled = False
        self._opened_before = False
        self._threads = [
            threading.Thread(target=self._run, args=(self._read_loop,), name=f"source-reader {name}", daemon=True),
            threading.Thread(target=self._run, args=(self._watch,), name=f"source-watchdog {name}", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    # -- the consumer's side ----------------------------------------------------------------------
    def frames(self) -> Iterator[Frame]:
        """The newest frame each time; blocks while there is none. Raises :class:`SourceError`
        once retries are exhausted; returns after :meth:`close`. Not paced here: the pipeline's
        ``RunConfig.fps`` caps a live source, so ``cmd/config`` can change the rate while it runs."""
        while True:
            with self._cond:
                while self._newest is None and not self._closed and self._error is None:
                    self._cond.wait()
                if self._closed:
                    return
                if self._newest is None:
                    raise self._error
                frame, self._newest = self._newest, None
                self._counters.frames_delivered += 1
            yield frame

    def stats(self) -> SourceStats:
        return self._counters.snapshot()

    def close(self) -> None:
        """Stop the threads and release the device; waits at most one open or read timeout."""
        with self._cond:
            self._closed = True
            self._stop.set()
            self._cond.notify_all()
        limit = max(self._options.open_timeout_s, self._options.read_timeout_s) + 2.0
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(limit)

    def __enter__(self) -> LiveSource:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- the threads ------------------------------------------------------------------------------
    def _run(self, body: Callable[[], None]) -> None:
        try:
            body()
        except BaseException as exc:  # handed to the consumer, who raises it from frames()
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        with self._cond:
            if self._error is not None or self._closed:
                return
            self._error = exc
            self._stop.set()
            self._cond.notify_all()
        try:
            self._events.emit(SourceState.FAILED, str(exc))
        except SourceError:
            pass  # the callback failed while told of a failure: the first error is the one to raise

    def _read_loop(self) -> None:
        retries = self._options.retries
        failures = 0
        while True:
            cause: SourceError | None = None
            got_frames = False
            started = time.monotonic()
            try:
                capture = self._opener()
            except SourceError as exc:
                reason, cause = str(exc), exc
            else:
                try:
                    reason, got_frames = self._pump(capture)
                finally:
                    capture.release()
            if self._stop.is_set():
                return
            # A connection that ran for a while is reopened at once. One that opened but stayed
            # silent (a hung server may still accept) or dropped at once is a failed attempt, so a
            # flapping source is retried with backoff rather than in a tight loop.
            if got_frames and time.monotonic() - started >= self._options.stall_after_s:
                failures = 0
                self._events.emit(SourceState.RECONNECTING, f"{reason}; reopening {self.name}")
                continue
            failures += 1
            self._counters.errors += 1
            if retries is not None and failures > retries:
                attempts = f"{failures} failed attempt{'' if failures == 1 else 's'}"
                raise SourceError(f"gave up on {self.name} after {attempts}: {reason}") from cause
            delay = self._backoff.delay(failures - 1)
            self._events.emit(SourceState.RECONNECTING, f"{reason}; retry {failures} in {delay:.1f} s")
            self._stop.wait(delay)

    def _pump(self, capture: Capture) -> tuple[str, bool]:
        """Read until the connection is lost or the source closed; returns why, and whether any
        frame came through."""
        timeout = self._options.read_timeout_s
        got_frames = False
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                ok, image = capture.read()
            except SourceError as exc:
                return str(exc), got_frames
            took = time.monotonic() - started
            if not ok or image is None:
                return f"no frame from {self.name} within {took:.1f} s", got_frames
            if took >= timeout:
                # FFmpeg's read timeout can hand back a frame buffered before the source went quiet
                # instead of failing: the frame is stale and the connection is dead.
                with self._cond:
                    self._counters.frames_read += 1
                    self._counters.frames_dropped += 1
                return f"a read from {self.name} took {took:.1f} s (read timeout {timeout:g} s)", got_frames
            if not got_frames:
                self._connected()
                got_frames = True
            self._publish(image)
        return "closed", got_frames

    def _connected(self) -> None:
        if self._opened_before:
            self._counters.reconnects += 1
            self._events.emit(SourceState.CONNECTED, f"{self.name} reconnected")
        else:
            self._opened_before = True
            self._events.emit(SourceState.CONNECTED, f"{self.name} opened")

    def _publish(self, image: np.ndarray) -> None:
        with self._cond:
            now = time.monotonic()
            if self._newest is not None:
                self._counters.frames_dropped += 1
            self._newest = Frame.of(image, self._counters.frames_read)
            self._counters.frames_read += 1
            gap, self._last_frame_at = now - self._last_frame_at, now
            was_stalled, self._stalled = self._stalled, False
            self._cond.notify_all()
        if was_stalled:
            self._events.emit(SourceState.RESUMED, f"frames back from {self.name} after {gap:.1f} s")

    def _watch(self) -> None:
        stall_after = self._options.stall_after_s
        while True:
            with self._cond:
                while True:
                    if self._stop.is_set():
                        return
                    silent = time.monotonic() - self._last_frame_at
                    if not self._stalled and silent >= stall_after:
                        break
                    self._cond.wait(None if self._stalled else stall_after - silent)
                self._stalled = True
                self._counters.stalls += 1
            self._events.emit(SourceState.STALLED, f"no frame from {self.name} for {silent:.1f} s")
