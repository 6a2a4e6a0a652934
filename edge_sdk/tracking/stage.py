"""Tracking as a step of a camera's loop: a frame's result in; the same result with track ids,
events and counts out."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from edge_sdk.annotate import Overlay
from edge_sdk.results import FrameResult
from edge_sdk.tracking.scene import Scene
from edge_sdk.tracking.settings import LineSettings, TrackingSettings, ZoneSettings
from edge_sdk.tracking.tracker import Tracker
from edge_sdk.tracking.values import Counts, Event

Finished = Callable[[list[Event], Counts], None]


class TrackingStage:
    """One camera's tracker and scene.

    The clock of a recorded source with a frame rate is its media time (anchored at the wall-clock
    time of its first frame), so a file played faster than real time keeps its dwell times; a live
    source's is the time each frame was read.
    """

    def __init__(self, settings: TrackingSettings, *, zones: dict[str, ZoneSettings], lines: dict[str, LineSettings],
                 first_id: int = 1, counts: Counts | None = None) -> None:
        self.settings = settings
        self.zones, self.lines = zones, lines
        self.tracker = Tracker(settings, first_id=first_id)
        self.scene = Scene(settings, zones=zones, lines=lines, counts=counts)
        self.on_finish: Finished | None = None  # told of the ends (and counts) when the camera stops
        self._origin: float | None = None
        self._last_t: float | None = None
        self._lock = threading.Lock()
        self._finished = False
        self._last: FrameResult | None = None
        self.closing: FrameResult | None = None  # after finish(): the camera's last result, with the ends
        self._widened: tuple[object, object] | None = None

    def widen(self, filters):
        """The camera's filters with the threshold lowered to the tracker's low_threshold: the
        decoder must pass the low-score detections that the second association pass uses."""
        low = self.settings.low_threshold
        if filters.threshold <= low:
            return filters
        cached = self._widened
        if cached is None or cached[0] is not filters:
            cached = self._widened = (filters, filters.model_copy(update={"threshold": low}))
        return cached[1]

    def clock(self, timestamp: float, media_s: float | None) -> float:
        if media_s is None:
            return timestamp
        if self._origin is None:
            self._origin = timestamp - media_s
        return self._origin + media_s

    def process(self, result: FrameResult, frame, filters) -> FrameResult:
        """``result`` (decoded with :meth:`widen`'s filters) tracked: its detections are the tracked
        ones, with ids, scoring at least ``filters.threshold`` or extending a track."""
        t = self.clock(frame.timestamp, getattr(frame, "media_s", None))
        with self._lock:
            if self._finished:
                return replace(result, detections=())
            self._last_t = t
            self._last = result
            boxed = [d for d in result.detections if d.box is not None]
            step = self.tracker.update(boxed, t, threshold=filters.threshold)
            events, changed = self.scene.update(step, t)
            counts = copy.deepcopy(self.scene.counts) if changed else None
        return replace(result, detections=step.tracked, events=tuple(events), counts=counts)

    def finish(self, *, reason: str = "stopped") -> list[Event]:
        """End every open track (once): the camera stopped. The ends, and the counts as they stand, go to ``on_finish``."""
        with self._lock:
            if self._finished:
                return []
            self._finished = True
            events = self.scene.close(self._last_t if self._last_t is not None else time.time(), reason=reason)
            counts = copy.deepcopy(self.scene.counts)
            if self._last is not None:
                self.closing = replace(self._last, detections=(), events=tuple(events), counts=counts, timings_ms={}, final=True)
        if self.on_finish is not None:
            self.on_finish(events, counts)
        return events

    def counts(self) -> Counts:
        """A copy of the camera's counts, taken between frames."""
        with self._lock:
            return copy.deepcopy(self.scene.counts)

    @property
    def next_id(self) -> int:
        return self.tracker.next_id

    def overlay(self) -> Overlay:
        with self._lock:
            trails = self.scene.trails()
            counts = self.scene.counts.to_json()
        return Overlay(zones={name: list(z.points) for name, z in self.zones.items()},
                       lines={name: list(line.points) for name, line in self.lines.items()},
                       line_in={name: line.in_normal() for name, line in self.lines.items()},
                       trails=trails, counts=counts)

