"""The inference watchdog: what counts as a hang, how often an engine may be restarted, and the
engine's health as the fleet sees it.

The pipeline marks the span it wants timed (an inference, or the opening of a fresh engine) with
:meth:`Watchdog.busy`; a span that runs past its limit is handed to the pipeline's ``on_hang``
from the watchdog's own thread. The watchdog does not know what a pipeline is.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


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


@dataclass(frozen=True)
class Span:
    """Something the watchdog times: what it is, its limit, and who is doing it."""

    what: str  # "an inference" or "opening a fresh engine"
    limit_s: float
    owner: object  # the gate token of the thread doing it
    engine: object | None = None  # an engine that can be aborted (a child process), or None
    since: float = 0.0


class Watchdog:
    """Times one span at a time; calls ``on_hang(span)`` from its thread when one overruns."""

    def __init__(self, on_hang: Callable[[Span], None], *, tick_s: float = 0.5) -> None:
        self._on_hang = on_hang
        self._tick = tick_s
        self._lock = threading.Lock()
        self._span: Span | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Watchdog:
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="edge-sdk-watchdog", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        self._thread = None

    def busy(self, what: str, limit_s: float, owner: object, engine: object | None = None) -> None:
        with self._lock:
            self._span = Span(what, limit_s, owner, engine, time.monotonic())

    def idle(self, owner: object) -> None:
        """The span of ``owner`` is over (a no-op when the watchdog already gave up on it)."""
        with self._lock:
            if self._span is not None and self._span.owner is owner:
                self._span = None

    def _watch(self) -> None:
        while not self._stop.wait(self._tick):
            with self._lock:
                span = self._span
                if span is None or time.monotonic() - span.since <= span.limit_s:
                    continue
                self._span = None
            self._on_hang(span)
