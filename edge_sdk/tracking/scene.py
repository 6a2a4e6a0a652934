"""One camera's tracks turned into events and counts: lifecycle, zones, lines, stationary objects.

What a user sees, and why:
- ``new`` once per track id, ever (a stationary object the tracker keeps under its id never gets a
  second one); ``end`` once, for a track that had its ``new``.
- ``update`` only when something about the track changed: its set of zones or its stationary flag,
  or ``update_s`` passed while it moves and is seen. A stationary track sends the one update that
  says so, then nothing until it moves again.
- Zones: the anchor (box centre, or the middle of its bottom edge) must be inside for
  ``zone_inertia`` consecutive seen frames before ``enter``, and outside as long before ``exit``;
  so jitter at an edge does not flap. A lost (coasting) track keeps its zone state; a track that
  ends inside exits. ``dwell_s`` is the time from the visit's first frame inside (not from the
  ``enter`` event, which comes ``zone_inertia`` frames later) to its latest frame inside; ``loiter``
  fires once per visit when that reaches the zone's ``loiter_s``.
- Lines: the side of a line is known once the anchor is more than ``line_margin`` from it; a
  crossing counts when the known side flips, and only if the anchor's path met the line within the
  segment. Jitter on the line counts nothing; crossing, turning back and crossing again counts both.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field

from edge_sdk.geometry import along, inside, signed_distance
from edge_sdk.results import BBox
from edge_sdk.tracking.settings import Anchor, LineSettings, TrackingSettings, ZoneSettings
from edge_sdk.tracking.tracker import TrackerStep
from edge_sdk.tracking.values import (
    Counts, Event, LineDirection, LineEvent, TrackAction, TrackedObject, TrackEvent, ZoneAction, ZoneEvent,
)

Point = tuple[float, float]

TRAIL_LENGTH = 30
# Ids that had their 'end', remembered so a late 'started' cannot announce them twice; the tracker's
# ids only grow, so the most recent ones are the only ones that could come back.
ENDED_MEMORY = 4096
# How far beyond a segment's ends (as a share of the frame) a crossing still counts, at least:
# the anchor of a box on a real crossing near an end wobbles by about this much.
END_TOLERANCE = 0.005


def anchor_point(box: BBox, anchor: Anchor) -> Point:
    if anchor is Anchor.BOTTOM:
        return (box.x1 + box.x2) / 2, box.y2
    return (box.x1 + box.x2) / 2, (box.y1 + box.y2) / 2


@dataclass(frozen=True)
class _Zone:
    name: str
    polygon: tuple[Point, ...]
    bounds: tuple[float, float, float, float]  # x1, y1, x2, y2: most anchors are rejected by this alone
    loiter_s: float | None
    labels: frozenset[str] | None
    anchor: Anchor

    @classmethod
    def of(cls, name: str, zone: ZoneSettings) -> _Zone:
        xs, ys = [x for x, _ in zone.points], [y for _, y in zone.points]
        return cls(name, tuple(zone.points), (min(xs), min(ys), max(xs), max(ys)), zone.loiter_s,
                   frozenset(zone.labels) if zone.labels is not None else None, zone.anchor)

    def holds(self, point: Point) -> bool:
        x, y = point
        x1, y1, x2, y2 = self.bounds
        return x1 <= x <= x2 and y1 <= y <= y2 and inside(point, self.polygon)


@dataclass(frozen=True)
class _Line:
    name: str
    a: Point
    b: Point
    normal: Point  # unit, towards the side an 'in' crossing ends on
    tolerance: float  # how far beyond the ends, in segment lengths, a crossing still counts
    labels: frozenset[str] | None
    anchor: Anchor

    @classmethod
    def of(cls, name: str, line: LineSettings, margin: float) -> _Line:
        (x1, y1), (x2, y2) = line.points
        length = ((x2 - x1) ** 2 + (y2 - y1) ** 2) ** 0.5
        return cls(name, (x1, y1), (x2, y2), line.in_normal(), max(margin, END_TOLERANCE) / length,
                   frozenset(line.labels) if line.labels is not None else None, line.anchor)


@dataclass
class _InZone:
    """One track in one zone."""

    inside: bool = False  # after inertia
    streak: int = 0  # consecutive seen frames whose raw state differs from ``inside``
    streak_t: float = 0.0  # time of the streak's first frame
    first_t: float = 0.0  # the visit's first frame inside
    last_t: float = 0.0  # its latest frame inside
    loitered: bool = False


@dataclass
class _OnLine:
    """One track and one line."""

    side: int = 0  # +1 on the 'in' side, -1 on the other, 0 not yet known (never left the margin)
    point: Point | None = None  # the anchor at the latest seen frame
    distance: float = 0.0  # ... and its signed distance
    met: float | None = None  # where (along the segment) its path last met the line


@dataclass
class _Track:
    obj: TrackedObject
    zones: dict[str, _InZone]
    lines: dict[str, _OnLine]
    sent_t: float  # time of its latest 'new' or 'update'
    sent_zones: tuple[str, ...] = ()
    sent_stationary: bool = False
    trail: deque = field(default_factory=lambda: deque(maxlen=TRAIL_LENGTH))

    def zone_names(self) -> tuple[str, ...]:
        return tuple(name for name, state in self.zones.items() if state.inside)


class Scene:
    """Events and counts of one camera, from its tracker's steps.

    ``counts`` carries line totals over from a run before (zone occupancy always starts at 0).
    """

    def __init__(self, settings: TrackingSettings, *, zones: dict[str, ZoneSettings], lines: dict[str, LineSettings],
                 counts: Counts | None = None) -> None:
        self._settings = settings
        self._zones = [_Zone.of(name, zone) for name, zone in zones.items()]
        self._lines = [_Line.of(name, line, settings.line_margin) for name, line in lines.items()]
        anchors = {z.anchor for z in self._zones} | {line.anchor for line in self._lines}
        self._trail_anchor = Anchor.BOTTOM if anchors == {Anchor.BOTTOM} else Anchor.CENTER
        before = counts.lines if counts is not None else {}
        self._counts = Counts(
            zones={z.name: {} for z in self._zones},
            lines={line.name: {d.value: dict(before.get(line.name, {}).get(d.value, {})) for d in LineDirection}
                   for line in self._lines},
        )
        self._open: dict[int, _Track] = {}
        self._ended: OrderedDict[int, None] = OrderedDict()

    @property
    def counts(self) -> Counts:
        """A snapshot: per-zone occupancy and per-line totals, by label."""
        return Counts(zones={name: dict(by) for name, by in self._counts.zones.items()},
                      lines={name: {d: dict(by) for d, by in per.items()} for name, per in self._counts.lines.items()})

    def update(self, step: TrackerStep, t: float) -> tuple[list[Event], bool]:
        """The events of one frame at time ``t`` (seconds), and whether the counts changed.

        In order: the 'new' of every started track; then per confirmed track its zone events, its
        line crossings and its 'update'; then per ended track its zone exits and its 'end'."""
        events: list[Event] = []
        counted = False
        for obj in step.started:
            self._start(obj, t, events)
        for obj in step.confirmed:
            track = self._open.get(obj.track_id)
            if track is None:
                track = self._start(obj, t, events)  # confirmed without a 'started' (should not happen): announce it
                if track is None:
                    continue
            track.obj = obj
            if obj.matched:
                self._zone_step(track, obj, t, events)
                counted |= self._line_step(track, obj, events)
                track.trail.append(anchor_point(obj.box, self._trail_anchor))
            self._maybe_update(track, obj, t, events)
        for obj in step.ended:
            track = self._open.get(obj.track_id)
            if track is not None:
                track.obj = obj
                self._finish(track, "lost", events)
        return events, self._recount() or counted

    def close(self, t: float, *, reason: str) -> list[Event]:
        """An 'end' (with ``reason``) for every open track, and the zone exits they imply."""
        events: list[Event] = []
        for track in list(self._open.values()):
            self._finish(track, reason, events)
        self._recount()
        return events

    def open_tracks(self) -> list[TrackedObject]:
        """Every confirmed track that has had its 'new' and not yet its 'end'."""
        return [track.obj for track in self._open.values()]

    def trails(self) -> dict[int, list[tuple[float, float]]]:
        """Each open track's recent anchor points, oldest first, for drawing (the bottom-middle
        of its box when every zone and line uses that anchor, else its centre)."""
        return {track_id: list(track.trail) for track_id, track in self._open.items() if track.trail}

    # -- lifecycle -------------------------------------------------------------------------------

    def _start(self, obj: TrackedObject, t: float, events: list[Event]) -> _Track | None:
        if obj.track_id in self._open or obj.track_id in self._ended:
            return self._open.get(obj.track_id)
        track = _Track(obj, {z.name: _InZone() for z in self._zones}, {line.name: _OnLine() for line in self._lines},
                       sent_t=t, sent_stationary=obj.stationary)
        self._open[obj.track_id] = track
        events.append(TrackEvent(TrackAction.NEW, obj))
        return track

    def _maybe_update(self, track: _Track, obj: TrackedObject, t: float, events: list[Event]) -> None:
        zones = track.zone_names()
        changed = zones != track.sent_zones or obj.stationary != track.sent_stationary
        if changed or (obj.matched and not obj.stationary and t - track.sent_t >= self._settings.update_s):
            events.append(TrackEvent(TrackAction.UPDATE, obj, zones))
            track.sent_t, track.sent_zones, track.sent_stationary = t, zones, obj.stationary

    def _finish(self, track: _Track, reason: str, events: list[Event]) -> None:
        """Exits from the zones it is in, then its 'end' (which names those zones)."""
        zones = track.zone_names()
        for name in zones:
            state = track.zones[name]
            events.append(ZoneEvent(name, ZoneAction.EXIT, track.obj.track_id, track.obj.label, state.last_t - state.first_t))
            state.inside = False
        events.append(TrackEvent(TrackAction.END, track.obj, zones, reason))
        del self._open[track.obj.track_id]
        self._ended[track.obj.track_id] = None
        if len(self._ended) > ENDED_MEMORY:
            self._ended.popitem(last=False)

    # -- zones -----------------------------------------------------------------------------------

    def _zone_step(self, track: _Track, obj: TrackedObject, t: float, events: list[Event]) -> None:
        inertia = self._settings.zone_inertia
        for zone in self._zones:
            state = track.zones[zone.name]
            now = (zone.labels is None or obj.label in zone.labels) and zone.holds(anchor_point(obj.box, zone.anchor))
            if now == state.inside:
                state.streak = 0
            else:
                if state.streak == 0:
                    state.streak_t = t
                state.streak += 1
                if state.streak >= inertia:
                    state.streak = 0
                    state.inside = now
                    if now:
                        state.first_t, state.loitered = state.streak_t, False
                        state.last_t = t
                        events.append(ZoneEvent(zone.name, ZoneAction.ENTER, obj.track_id, obj.label, t - state.first_t))
                    else:
                        events.append(ZoneEvent(zone.name, ZoneAction.EXIT, obj.track_id, obj.label,
                                                state.last_t - state.first_t))
            if state.inside and now:
                state.last_t = t
                dwell = t - state.first_t
                if zone.loiter_s is not None and not state.loitered and dwell >= zone.loiter_s:
                    state.loitered = True
                    events.append(ZoneEvent(zone.name, ZoneAction.LOITER, obj.track_id, obj.label, dwell))

    # -- lines -----------------------------------------------------------------------------------

    def _line_step(self, track: _Track, obj: TrackedObject, events: list[Event]) -> bool:
        margin = self._settings.line_margin
        counted = False
        for line in self._lines:
            state = track.lines[line.name]
            point = anchor_point(obj.box, line.anchor)
            d = signed_distance(point, line.a, line.normal)
            if state.point is not None and (state.distance > 0) != (d > 0):
                # The path met the line between the two frames: where, along the segment?
                (px, py), share = state.point, state.distance / (state.distance - d)
                state.met = along((px + (point[0] - px) * share, py + (point[1] - py) * share), line.a, line.b)
            state.point, state.distance = point, d
            side = 1 if d > margin else -1 if d < -margin else state.side
            if state.side and side != state.side:
                real = state.met is not None and -line.tolerance <= state.met <= 1 + line.tolerance
                if real and (line.labels is None or obj.label in line.labels):
                    direction = LineDirection.IN if side > 0 else LineDirection.OUT
                    events.append(LineEvent(line.name, direction, obj.track_id, obj.label))
                    by_label = self._counts.lines[line.name][direction.value]
                    by_label[obj.label] = by_label.get(obj.label, 0) + 1
                    counted = True
                state.met = None
            state.side = side
        return counted

    def _recount(self) -> bool:
        """Zone occupancy from the tracks' states; whether it changed."""
        changed = False
        for zone in self._zones:
            by_label = Counter(track.obj.label for track in self._open.values() if track.zones[zone.name].inside)
            if by_label != self._counts.zones[zone.name]:
                self._counts.zones[zone.name] = dict(by_label)
                changed = True
        return changed
