"""Recorded sources (video files, image folders): read at their own pace, or paced to ``fps``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Protocol

import numpy as np

from edge_sdk.errors import SourceError
from edge_sdk.sources.base import Counters, Events, Frame, SourceState, SourceStats
from edge_sdk.sources.options import SourceOptions

Reader = Callable[[], np.ndarray]
"""Decodes one frame on demand (a dropped frame is never decoded); raises :class:`SourceError`."""


class Pass(Protocol):
    """One pass over a file or folder: a reader per frame, then StopIteration. A pass that knows
    its frame rate (a video file) has ``fps``; frames then carry their media time."""

    def __next__(self) -> Reader: ...

    def close(self) -> None: ...


class PlaybackSource:
    """Frames of a file or folder, in order, never dropped unless ``fps`` asks for real time."""

    live = False

    def __init__(self, name: str, open_pass: Callable[[], Pass], options: SourceOptions, *, detail: str) -> None:
        self.name = name
        self._open_pass = open_pass
        self._options = options
        self._events = Events(name, options.on_event)
        self._counters = Counters()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pass: Pass | None = open_pass()
        self._pass_good = 0
        try:
            self._events.emit(SourceState.CONNECTED, detail)
        except SourceError:
            self.close()
            raise

    def frames(self) -> Iterator[Frame]:
        """Every frame in order (looping if asked); with ``fps``, paced to the wall clock, dropping
        the frames whose time has passed."""
        interval = 1.0 / self._options.fps if self._options.fps else 0.0
        start = time.monotonic()
        slot = 0
        while True:
            with self._lock:
                if self._stop.is_set():
                    return
                read = self._next_reader()
            if read is None:
                break
            index = self._counters.frames_read
            self._counters.frames_read += 1
            if interval:
                late = time.monotonic() - (start + slot * interval)
                slot += 1
                if late >= interval:
                    self._counters.frames_dropped += 1
                    self._pass_good += 1
                    continue
                if late < 0 and self._stop.wait(-late):
                    return
            with self._lock:
                if self._stop.is_set():
                    return
                try:
                    image = read()
                except SourceError as exc:
                    self._counters.errors += 1
                    skipped = str(exc)
                else:
                    skipped = None
            if skipped is not None:
                self._events.emit(SourceState.SKIPPED, skipped)
                continue
            self._pass_good += 1
            self._counters.frames_delivered += 1
            rate = self._options.fps or getattr(self._pass, "fps", None)
            yield Frame.of(image, index, media_s=index / rate if rate else None)
        if not self._stop.is_set():
            self._events.emit(SourceState.ENDED, f"end of {self.name} after {self._counters.frames_read} frames")

    def stats(self) -> SourceStats:
        return self._counters.snapshot()

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            if self._pass is not None:
                self._pass.close()
                self._pass = None

    def __enter__(self) -> PlaybackSource:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _next_reader(self) -> Reader | None:
        while self._pass is not None:
            try:
                return next(self._pass)
            except StopIteration:
                self._pass.close()
                self._pass = None
            # A pass without one readable frame would make looping spin forever.
            if self._options.loop and self._pass_good:
                self._pass_good = 0
                self._pass = self._open_pass()
        return None
