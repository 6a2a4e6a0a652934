"""Tracks, events and counts as values: what the tracker and a camera's scene hand on."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from edge_sdk.results import BBox


class TrackAction(str, Enum):
    NEW = "new"  # the track was confirmed (min_hits matches): once per object
    UPDATE = "update"  # its zones or stationary state changed, or update_s passed
    END = "end"  # it was lost for max_lost_s (stationary_keep_s when stationary), or the run stopped


class ZoneAction(str, Enum):
    ENTER = "enter"
    EXIT = "exit"
    LOITER = "loiter"  # still inside after the zone's loiter_s; once per visit


class LineDirection(str, Enum):
    IN = "in"
    OUT = "out"


@dataclass(frozen=True)
class TrackedObject:
    """One confirmed track at one frame: who it is, where, since when."""

    track_id: int
    class_id: int
    label: str
    score: float  # the score of its latest matched detection
    box: BBox  # its latest matched box (a lost track keeps its last one)
    first_seen: float  # event-clock seconds (see Scene.update) of its first detection
    last_seen: float  # ... of its latest matched detection
    stationary: bool = False
    matched: bool = True  # a detection was matched to it in this frame (False: lost, coasting)

    def summary(self) -> dict:
        return {"track_id": self.track_id, "label": self.label, "score": round(float(self.score), 5),
                "box": [round(v, 5) for v in (self.box.x1, self.box.y1, self.box.x2, self.box.y2)],
                "first_seen": round(self.first_seen, 6), "last_seen": round(self.last_seen, 6),
                "stationary": self.stationary}


@dataclass(frozen=True)
class TrackEvent:
    """A track's lifecycle: new once confirmed, updates when something about it changed, end once."""

    action: TrackAction
    track: TrackedObject
    zones: tuple[str, ...] = ()  # the zones it is in
    reason: str | None = None  # end: "lost", "stopped" (the run ended) or "restart" (the run before was killed)

    def to_json(self) -> dict:
        body = {"type": "track", "action": self.action.value, **self.track.summary(), "zones": list(self.zones)}
        if self.reason is not None:
            body["reason"] = self.reason
        return body


@dataclass(frozen=True)
class ZoneEvent:
    zone: str
    action: ZoneAction
    track_id: int
    label: str
    dwell_s: float  # seconds from the visit's first frame inside to its latest (on enter: the inertia frames)

    def to_json(self) -> dict:
        return {"type": "zone", "zone": self.zone, "action": self.action.value, "track_id": self.track_id,
                "label": self.label, "dwell_s": round(self.dwell_s, 3)}


@dataclass(frozen=True)
class LineEvent:
    line: str
    direction: LineDirection
    track_id: int
    label: str

    def to_json(self) -> dict:
        return {"type": "line", "line": self.line, "direction": self.direction.value, "track_id": self.track_id,
                "label": self.label}


Event = TrackEvent | ZoneEvent | LineEvent


@dataclass
class Counts:
    """Per-zone occupancy and per-line totals, by label: the retained ``counts`` message."""

    zones: dict[str, dict[str, int]] = field(default_factory=dict)  # zone -> label -> objects inside now
    lines: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)  # line -> "in"/"out" -> label -> total

    def to_json(self) -> dict:
        return {
            "zones": {name: {"total": sum(by.values()), "by_label": dict(sorted(by.items()))} for name, by in self.zones.items()},
            "lines": {name: {"in": sum(d.get("in", {}).values()), "out": sum(d.get("out", {}).values()),
                             "in_by_label": dict(sorted(d.get("in", {}).items())),
                             "out_by_label": dict(sorted(d.get("out", {}).items()))} for name, d in self.lines.items()},
        }
