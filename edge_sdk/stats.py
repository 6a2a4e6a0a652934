"""A camera's counters and recent stage timings, and the typed snapshot everyone else reads."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field

import numpy as np

STAGES = ("preprocess", "infer", "decode", "latency")


@dataclass(frozen=True)
class StatsSnapshot:
    """One camera's counters at one moment; timings in milliseconds over the last 1000 frames (None before any)."""

    frames_in: int  # frames the source handed over
    frames_done: int  # frames inferred, decoded and filtered
    frames_skipped: int  # skipped on purpose (stride or fps cap)
    frame_errors: int  # empty or malformed frames, and frames a model on probation failed
    frames_dropped: int  # frames the source dropped (a live source keeps only the newest)
    detections: int
    fps: float  # frames done per second since the start
    preprocess_ms_p50: float | None = None
    preprocess_ms_p99: float | None = None
    infer_ms_p50: float | None = None
    infer_ms_p99: float | None = None
    decode_ms_p50: float | None = None
    decode_ms_p99: float | None = None
    latency_ms_p50: float | None = None  # capture to result
    latency_ms_p99: float | None = None
    reconnects: int = 0  # times the source reconnected

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Stats:
    """Counters and recent per-stage timings of one camera, safe to read while it runs."""

    frames_in: int = 0
    frames_done: int = 0
    frames_skipped: int = 0
    frame_errors: int = 0
    detections: int = 0
    source: object = field(default=None, repr=False)  # the source being run: its stats() count the frames it dropped
    started: float = field(default_factory=time.monotonic)
    window: dict[str, deque] = field(default_factory=lambda: {k: deque(maxlen=1000) for k in STAGES})
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, timings: dict[str, float]) -> None:
        with self.lock:
            for key, value in timings.items():
                self.window[key].append(value)

    def snapshot(self) -> StatsSnapshot:
        source = _source_stats(self.source)
        with self.lock:
            timings = {}
            for key, values in self.window.items():
                if values:
                    p50, p99 = np.percentile(np.fromiter(values, dtype=np.float64), (50, 99))
                    timings[f"{key}_ms_p50"], timings[f"{key}_ms_p99"] = float(p50), float(p99)
            return StatsSnapshot(
                frames_in=self.frames_in, frames_done=self.frames_done, frames_skipped=self.frames_skipped,
                frame_errors=self.frame_errors, frames_dropped=source.frames_dropped, detections=self.detections,
                fps=self.frames_done / max(1e-9, time.monotonic() - self.started), reconnects=source.reconnects, **timings,
            )


@dataclass(frozen=True)
class _NoSource:
    frames_dropped: int = 0
    reconnects: int = 0


def _source_stats(source):
    """The counters of ``source`` (a live source drops all but the newest frame; real-time playback skips late ones)."""
    stats = getattr(source, "stats", None)
    return stats() if callable(stats) else _NoSource()
