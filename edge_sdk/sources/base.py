"""What every frame source hands out: frames, events, counters, and the protocol they share."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from types import TracebackType
from typing import Protocol, runtime_checkable

import numpy as np

from edge_sdk.errors import SourceError


class SourceState(str, Enum):
    """What a source reports through ``on_event``; compares equal to its plain string value."""

    CONNECTED = "connected"
    """The source was opened (first time or after a reconnect)."""
    STALLED = "stalled"
    """No frame for ``stall_after_s`` seconds."""
    RESUMED = "resumed"
    """The first frame after a stall; the detail says how long the gap was."""
    RECONNECTING = "reconnecting"
    """The connection was lost or could not be made; the next attempt follows."""
    SKIPPED = "skipped"
    """An unreadable image was skipped (counted in ``stats().errors``)."""
    ENDED = "ended"
    """A file or folder has no more frames."""
    FAILED = "failed"
    """Retries are exhausted; ``frames()`` raises :class:`~edge_sdk.errors.SourceError`."""

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class SourceEvent:
    """A change in a source's health, for logs and the device's status topic."""

    state: SourceState
    detail: str
    timestamp: float
    """Wall-clock time (``time.time()``)."""

    def __str__(self) -> str:
        return f"{self.state.value}: {self.detail}"


EventCallback = Callable[[SourceEvent], None]


@dataclass(frozen=True, eq=False)
class Frame:
    """One image from a source, as it arrived: BGR ``uint8`` HxWx3, or grayscale HxW."""

    image: np.ndarray
    index: int
    """Position in the source since it was opened, counting dropped and skipped frames."""
    timestamp: float
    """Wall-clock time (``time.time()``) the frame was read."""
    source_size: tuple[int, int]
    """``(width, height)`` of the frame as the source produced it."""
    media_s: float | None = None
    """Recorded sources with a frame rate: the frame's time in the recording (index / rate), which
    tracking uses as its clock, so a file played faster than real time keeps its dwell times; None
    for live sources, whose clock is ``timestamp``."""

    @classmethod
    def of(cls, image: np.ndarray, index: int, *, media_s: float | None = None) -> Frame:
        return cls(image, index, time.time(), (int(image.shape[1]), int(image.shape[0])), media_s)

    @property
    def is_gray(self) -> bool:
        return self.image.ndim == 2


@runtime_checkable
class Source(Protocol):
    """A stream of frames the pipeline pulls from; close it (or use ``with``) when done."""

    live: bool

    def frames(self) -> Iterator[Frame]:
        """Block for the next frame; ends at the end of a file or folder or on :meth:`close`."""
        ...

    def close(self) -> None: ...

    def stats(self) -> SourceStats:
        """What the source has read, handed out, dropped, and how often it reconnected, stalled or failed."""
        ...

    def __enter__(self) -> Source: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


@dataclass(frozen=True)
class SourceStats:
    """A source's counters at one moment."""

    frames_read: int  # from the device, stream or file
    frames_delivered: int  # handed to the pipeline
    frames_dropped: int  # a live source keeps only the newest; real-time playback skips late ones
    reconnects: int
    stalls: int
    errors: int  # failed attempts to open or read, and unreadable images skipped


@dataclass
class Counters:
    """The mutable tallies behind ``stats()``; read without a lock (plain ints)."""

    frames_read: int = 0
    frames_delivered: int = 0
    frames_dropped: int = 0
    reconnects: int = 0
    stalls: int = 0
    errors: int = 0

    def snapshot(self) -> SourceStats:
        return SourceStats(**vars(self))


class Events:
    """Delivers events to the user's callback one at a time, from whichever thread reports them."""

    def __init__(self, name: str, callback: EventCallback | None) -> None:
        self._name = name
        self._callback = callback
        self._lock = threading.Lock()

    def emit(self, state: SourceState, detail: str) -> None:
        if self._callback is None:
            return
        event = SourceEvent(state, detail, time.time())
        with self._lock:
            try:
                self._callback(event)
            except Exception as exc:
                raise SourceError(f"{self._name}: the on_event callback raised {exc!r}") from exc
