"""One camera's scene: tracks from hand-built tracker steps turned into lifecycle, zone and line events and counts."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from edge_sdk.results import BBox
from edge_sdk.tracking.scene import Scene
from edge_sdk.tracking.settings import LineSettings, TrackingSettings, ZoneSettings
from edge_sdk.tracking.tracker import TrackerStep
from edge_sdk.tracking.values import Counts, LineEvent, TrackEvent, TrackedObject, ZoneEvent

FPS = 10
SQUARE = [(0.4, 0.4), (0.6, 0.4), (0.6, 0.6), (0.4, 0.6)]
LOST = "lost"  # a frame of a path where the tracker coasts (no detection matched)


def straight(a, b, n):
    """``n`` points from ``a`` to ``b``, both included."""
    return [(a[0] + (b[0] - a[0]) * i / (n - 1), a[1] + (b[1] - a[1]) * i / (n - 1)) for i in range(n)]


def still(point, n):
    return [point] * n


def box_at(point, size=0.1, *, bottom=False):
    """A box whose centre (or, with ``bottom``, the middle of its bottom edge) is ``point``."""
    x, y = point
    if bottom:
        return BBox(x - size / 2, y - size, x + size / 2, y)
    return BBox(x - size / 2, y - size / 2, x + size / 2, y + size / 2)


class Clip:
    """Objects on paths, played into a scene frame by frame as a tracker would report them.

    Each object: an id, a label, the frame it is confirmed at and its anchor per frame (``LOST``:
    coasting). It ends in the frame after its path does, unless ``ends=False``.
    """

    def __init__(self, scene: Scene, *, fps: float = FPS):
        self.scene, self.fps = scene, fps
        self.objects: dict[int, dict] = {}
        self.events: list[tuple[float, object]] = []
        self.changed: list[float] = []

    def add(self, track_id, path, *, label="person", start=0, stationary_from=None, moving_from=None, ends=True,
            bottom=False, size=0.1):
        self.objects[track_id] = dict(path=path, label=label, start=start, stationary_from=stationary_from,
                                      moving_from=moving_from, ends=ends, bottom=bottom, size=size)
        return self

    def _object(self, track_id, spec, frame, t):
        i = frame - spec["start"]
        seen = [p for p in spec["path"][: i + 1] if p != LOST]
        point = spec["path"][i] if i < len(spec["path"]) else LOST
        stationary = spec["stationary_from"] is not None and frame >= spec["stationary_from"] and not (
            spec["moving_from"] is not None and frame >= spec["moving_from"])
        return TrackedObject(track_id, 0, spec["label"], 0.9, box_at(seen[-1], spec["size"], bottom=spec["bottom"]),
                             first_seen=spec["start"] / self.fps, last_seen=t, stationary=stationary,
                             matched=point != LOST)

    def play(self, frames=None, *, first=0):
        last = max(spec["start"] + len(spec["path"]) for spec in self.objects.values())
        frames = frames if frames is not None else last + 1 - first
        for frame in range(first, first + frames):
            t = frame / self.fps
            confirmed, started, ended = [], [], []
            for track_id, spec in self.objects.items():
                i = frame - spec["start"]
                if 0 <= i < len(spec["path"]):
                    obj = self._object(track_id, spec, frame, t)
                    confirmed.append(obj)
                    if i == 0:
                        started.append(obj)
                elif i == len(spec["path"]) and spec["ends"]:
                    ended.append(self._object(track_id, spec, frame - 1, t))
            events, changed = self.scene.update(TrackerStep((), tuple(confirmed), tuple(started), tuple(ended)), t)
            self.events += [(t, e) for e in events]
            if changed:
                self.changed.append(t)
        return self

    def of(self, kind, **match):
        return [(t, e) for t, e in self.events if isinstance(e, kind)
                and all(getattr(e, k) == v or getattr(getattr(e, k), "value", None) == v for k, v in match.items())]


def scene(*, zones=None, lines=None, counts=None, **options):
    options.setdefault("zone_inertia", 3)
    return Scene(TrackingSettings(**options), zones={k: ZoneSettings.model_validate(v) for k, v in (zones or {}).items()},
                 lines={k: LineSettings.model_validate(v) for k, v in (lines or {}).items()}, counts=counts)


# -- zones -----------------------------------------------------------------------------------------

def test_enter_and_exit_after_inertia_with_the_dwell_from_the_first_frame_inside():
    clip = Clip(scene(zones={"pad": {"points": SQUARE}}))
    path = straight((0.11, 0.5), (0.91, 0.5), 41)  # 0.02 a frame: inside from x=0.41 (frame 15) to 0.59 (frame 24)
    first_in = next(i for i, p in enumerate(path) if 0.4 < p[0] < 0.6)
    last_in = max(i for i, p in enumerate(path) if 0.4 < p[0] < 0.6)
    clip.add(1, path).play()
    zone_events = clip.of(ZoneEvent)
    assert [e.action.value for _, e in zone_events] == ["enter", "exit"]
    assert (first_in, last_in) == (15, 24)
    (t_enter, enter), (t_exit, leave) = zone_events
    assert t_enter == pytest.approx((first_in + 2) / FPS)  # the third consecutive frame inside
    assert t_exit == pytest.approx((last_in + 3) / FPS)
    assert enter.dwell_s == pytest.approx(2 / FPS)
    assert leave.dwell_s == pytest.approx((last_in - first_in) / FPS)
    assert (enter.zone, enter.track_id, enter.label) == ("pad", 1, "person")
    # the track's updates follow its zones
    updates = [e.zones for _, e in clip.of(TrackEvent, action="update")]
    assert updates == [("pad",), ()]


def test_jitter_at_a_zone_edge_does_not_flap():
    clip = Clip(scene(zones={"pad": {"points": SQUARE}}))
    wobble = [(0.39 if i % 2 else 0.41, 0.5) for i in range(40)]  # in and out every other frame
    approach = straight((0.1, 0.5), (0.39, 0.5), 10)
    settle = [(0.45, 0.5)] * 10 + [(0.39, 0.5), (0.39, 0.5), (0.45, 0.5)] * 5  # two frames out, back in
    clip.add(1, approach + wobble + settle + straight((0.45, 0.5), (0.9, 0.5), 10)).play()
    actions = [e.action.value for _, e in clip.of(ZoneEvent)]
    assert actions == ["enter", "exit"]


def test_inertia_one_follows_every_frame():
    clip = Clip(scene(zones={"pad": {"points": SQUARE}}, zone_inertia=1))
    clip.add(1, [(0.3, 0.5), (0.5, 0.5), (0.3, 0.5), (0.5, 0.5), (0.3, 0.5)]).play()
    assert [e.action.value for _, e in clip.of(ZoneEvent)] == ["enter", "exit", "enter", "exit"]


def test_loiter_once_per_visit():
    clip = Clip(scene(zones={"pad": {"points": SQUARE, "loiter_s": 3}}))
    visit = still((0.5, 0.5), 60)  # 6 s inside
    away = still((0.1, 0.1), 10)
    clip.add(1, away + visit + away + visit + away).play()
    zone_events = [(t, e.action.value, e.dwell_s) for t, e in clip.of(ZoneEvent)]
    assert [a for _, a, _ in zone_events] == ["enter", "loiter", "exit"] * 2
    loiters = [(t, dwell) for t, a, dwell in zone_events if a == "loiter"]
    # dwell counts from the visit's first frame inside (frame 10 and frame 80)
    assert loiters[0] == (pytest.approx(1.0 + 3.0), pytest.approx(3.0))
    assert loiters[1] == (pytest.approx(8.0 + 3.0), pytest.approx(3.0))
    exits = [dwell for _, a, dwell in zone_events if a == "exit"]
    assert exits == [pytest.approx(5.9), pytest.approx(5.9)]


def test_a_zone_counts_only_its_labels_and_occupancy_is_by_label():
    clip = Clip(scene(zones={"cars": {"points": SQUARE, "labels": ["car"]}, "all": {"points": SQUARE}}))
    clip.add(1, still((0.5, 0.5), 20), label="person").add(2, still((0.5, 0.5), 20), label="car")
    clip.add(3, still((0.55, 0.55), 20), label="car").play(10)
    assert {(e.zone, e.track_id) for _, e in clip.of(ZoneEvent, action="enter")} == {
        ("cars", 2), ("cars", 3), ("all", 1), ("all", 2), ("all", 3)}
    counts = clip.scene.counts
    assert counts.zones == {"cars": {"car": 2}, "all": {"person": 1, "car": 2}}
    assert counts.to_json()["zones"]["all"] == {"total": 3, "by_label": {"car": 2, "person": 1}}


def test_anchor_bottom_uses_where_the_object_stands():
    # A tall box standing just below the zone: its centre is outside, its feet are inside.
    feet = (0.5, 0.58)
    zones = {"bottom": {"points": SQUARE, "anchor": "bottom"}, "center": {"points": SQUARE}}
    clip = Clip(scene(zones=zones))
    clip.add(1, still(feet, 10), bottom=True, size=0.4).play()
    assert [e.zone for _, e in clip.of(ZoneEvent, action="enter")] == ["bottom"]


def test_a_coasting_track_keeps_its_zone_and_exits_when_it_ends():
    clip = Clip(scene(zones={"pad": {"points": SQUARE}}))
    clip.add(1, still((0.5, 0.5), 10) + [LOST] * 20).play()
    zone_events = clip.of(ZoneEvent)
    assert [e.action.value for _, e in zone_events] == ["enter", "exit"]
    t_exit, leave = zone_events[1]
    assert t_exit == pytest.approx(3.0)  # when the track ended, not when it was lost
    assert leave.dwell_s == pytest.approx(0.9)  # its first to its last frame seen inside
    ends = clip.of(TrackEvent, action="end")
    assert len(ends) == 1 and ends[0][1].reason == "lost" and ends[0][1].zones == ("pad",)
    assert ends[0][0] == t_exit and clip.events.index(zone_events[1]) < clip.events.index(ends[0])


# -- lines -----------------------------------------------------------------------------------------

VERTICAL = [(0.5, 0.1), (0.5, 0.9)]
HORIZONTAL = [(0.1, 0.5), (0.9, 0.5)]
SLANTED = [(0.2, 0.8), (0.8, 0.2)]  # bottom-left to top-right


@pytest.mark.parametrize(("points", "in_", "start", "end", "direction"), [
    (VERTICAL, "right", (0.2, 0.5), (0.8, 0.5), "in"),
    (VERTICAL, "right", (0.8, 0.5), (0.2, 0.5), "out"),
    (VERTICAL, "left", (0.8, 0.4), (0.2, 0.6), "in"),
    (HORIZONTAL, "down", (0.5, 0.2), (0.5, 0.8), "in"),
    (HORIZONTAL, "down", (0.5, 0.8), (0.5, 0.2), "out"),
    (HORIZONTAL, "up", (0.3, 0.8), (0.6, 0.2), "in"),
    # the slanted line's 'right' side is below-right of it
    (SLANTED, "right", (0.2, 0.2), (0.8, 0.8), "in"),
    (SLANTED, "down", (0.2, 0.2), (0.8, 0.8), "in"),
    (SLANTED, "left", (0.2, 0.2), (0.8, 0.8), "out"),
    (SLANTED, "up", (0.7, 0.7), (0.3, 0.3), "in"),
])
def test_a_crossing_counts_once_in_its_direction(points, in_, start, end, direction):
    clip = Clip(scene(lines={"gate": {"points": points, "in": in_}}))
    clip.add(1, straight(start, end, 30)).play()
    crossings = clip.of(LineEvent)
    assert [(e.line, e.direction.value, e.track_id) for _, e in crossings] == [("gate", direction, 1)]
    other = "out" if direction == "in" else "in"
    assert clip.scene.counts.lines["gate"] == {direction: {"person": 1}, other: {}}
    assert clip.changed == [crossings[0][0]]


def test_line_totals_by_label_with_a_labels_filter():
    lines = {"gate": {"points": VERTICAL, "in": "right"}, "cars": {"points": VERTICAL, "in": "right", "labels": ["car"]}}
    clip = Clip(scene(lines=lines))
    rightwards, leftwards = straight((0.2, 0.5), (0.8, 0.5), 20), straight((0.8, 0.3), (0.2, 0.3), 20)
    clip.add(1, rightwards, label="car").add(2, rightwards, label="person", start=5)
    clip.add(3, leftwards, label="car", start=3).add(4, rightwards, label="car", start=30).play()
    counts = clip.scene.counts
    assert counts.lines["gate"] == {"in": {"car": 2, "person": 1}, "out": {"car": 1}}
    assert counts.lines["cars"] == {"in": {"car": 2}, "out": {"car": 1}}
    assert counts.to_json()["lines"]["gate"] == {"in": 3, "out": 1, "in_by_label": {"car": 2, "person": 1},
                                                 "out_by_label": {"car": 1}}
    assert len(clip.of(LineEvent, line="gate")) == 4 and len(clip.of(LineEvent, line="cars")) == 3


def test_jitter_on_the_line_counts_nothing():
    clip = Clip(scene(lines={"gate": {"points": VERTICAL, "in": "right"}}, line_margin=0.02))
    approach = straight((0.2, 0.5), (0.49, 0.5), 15)
    wobble = [(0.5 + (0.015 if i % 2 else -0.015), 0.5 + i * 0.002) for i in range(60)]  # inside the margin
    clip.add(1, approach + wobble + straight((0.49, 0.62), (0.2, 0.62), 15)).play()
    assert clip.of(LineEvent) == []
    # ... and then a real crossing after the same jitter counts once
    clip2 = Clip(scene(lines={"gate": {"points": VERTICAL, "in": "right"}}, line_margin=0.02))
    clip2.add(1, approach + wobble + straight((0.51, 0.62), (0.8, 0.62), 15)).play()
    assert [e.direction.value for _, e in clip2.of(LineEvent)] == ["in"]


def test_a_crossing_beyond_the_segment_is_no_crossing():
    short = {"points": [(0.5, 0.4), (0.5, 0.6)], "in": "right"}
    clip = Clip(scene(lines={"gate": short}))
    clip.add(1, straight((0.2, 0.8), (0.8, 0.8), 30))  # below the segment's end
    clip.add(2, straight((0.2, 0.15), (0.8, 0.25), 30))  # above it
    clip.add(3, straight((0.2, 0.55), (0.8, 0.45), 30))  # through it
    clip.add(4, straight((0.2, 0.3), (0.8, 0.9), 30))  # diagonally, through its middle
    clip.play()
    assert sorted(e.track_id for _, e in clip.of(LineEvent)) == [3, 4]


def test_crossing_turning_back_and_crossing_again_counts_both():
    clip = Clip(scene(lines={"gate": {"points": VERTICAL, "in": "right"}}))
    clip.add(1, straight((0.2, 0.5), (0.7, 0.5), 20) + straight((0.7, 0.5), (0.3, 0.5), 20)).play()
    assert [e.direction.value for _, e in clip.of(LineEvent)] == ["in", "out"]
    assert clip.scene.counts.lines["gate"] == {"in": {"person": 1}, "out": {"person": 1}}


def test_a_line_with_anchor_bottom_follows_the_feet():
    lines = {"feet": {"points": HORIZONTAL, "in": "down", "anchor": "bottom"}, "centre": {"points": HORIZONTAL, "in": "down"}}
    clip = Clip(scene(lines=lines))
    # a tall box walking down: its centre crosses y=0.5, its feet start below the line already
    clip.add(1, straight((0.5, 0.56), (0.5, 0.9), 20), bottom=True, size=0.4).play()
    assert [e.line for _, e in clip.of(LineEvent)] == ["centre"]
    clip2 = Clip(scene(lines=lines))
    clip2.add(1, straight((0.5, 0.3), (0.5, 0.9), 20), bottom=True, size=0.4).play()
    assert sorted(e.line for _, e in clip2.of(LineEvent)) == ["centre", "feet"]


def test_a_crossing_while_lost_counts_when_the_track_is_seen_again():
    clip = Clip(scene(lines={"gate": {"points": VERTICAL, "in": "right"}}))
    clip.add(1, straight((0.2, 0.5), (0.4, 0.5), 10) + [LOST] * 5 + straight((0.6, 0.5), (0.8, 0.5), 10)).play()
    assert [e.direction.value for _, e in clip.of(LineEvent)] == ["in"]


def test_an_object_born_on_the_line_is_not_counted_for_moving_off_it():
    clip = Clip(scene(lines={"gate": {"points": VERTICAL, "in": "right"}}, line_margin=0.05))
    clip.add(1, straight((0.49, 0.5), (0.8, 0.5), 20)).play()
    assert clip.of(LineEvent) == []


# -- lifecycle -------------------------------------------------------------------------------------

def test_one_new_and_one_end_per_object_and_exact_counts_on_a_clip_of_several():
    lines = {"gate": {"points": VERTICAL, "in": "right"}}
    clip = Clip(scene(zones={"pad": {"points": SQUARE, "loiter_s": 2}}, lines=lines))
    clip.add(1, straight((0.1, 0.5), (0.9, 0.5), 50), label="car")
    clip.add(2, straight((0.9, 0.45), (0.1, 0.55), 40), label="person", start=7)
    clip.add(3, straight((0.3, 0.2), (0.7, 0.3), 20) + [LOST] * 8 + straight((0.7, 0.3), (0.8, 0.3), 10), start=12)
    clip.add(4, still((0.5, 0.55), 90), label="car", start=3, stationary_from=40)  # parked in the zone, on the line
    clip.add(5, straight((0.7, 0.85), (0.3, 0.85), 30) + straight((0.3, 0.85), (0.7, 0.85), 30), label="dog", start=20)
    clip.play()
    news = Counter(e.track.track_id for _, e in clip.of(TrackEvent, action="new"))
    ends = Counter(e.track.track_id for _, e in clip.of(TrackEvent, action="end"))
    assert news == ends == Counter({1: 1, 2: 1, 3: 1, 4: 1, 5: 1})
    assert clip.scene.counts.lines["gate"] == {"in": {"car": 1, "person": 1, "dog": 1}, "out": {"person": 1, "dog": 1}}
    assert clip.scene.open_tracks() == [] and clip.scene.counts.zones == {"pad": {}}
    for _, event in clip.events:  # every event is a JSON message
        json.dumps(event.to_json())


def test_an_id_is_announced_once_even_if_started_again():
    clip = Clip(scene())
    obj = TrackedObject(7, 0, "car", 0.9, box_at((0.5, 0.5)), 0.0, 0.0)
    s = clip.scene
    first, _ = s.update(TrackerStep((), (obj,), (obj,), ()), 0.0)
    again, _ = s.update(TrackerStep((), (obj,), (obj,), ()), 0.1)
    end, _ = s.update(TrackerStep((), (), (), (obj,)), 0.2)
    late, _ = s.update(TrackerStep((), (obj,), (obj,), ()), 0.3)
    gone, _ = s.update(TrackerStep((), (), (), (obj,)), 0.4)
    assert [e.action.value for e in first + again + end + late + gone] == ["new", "end"]


def test_updates_are_throttled_to_update_s_while_moving():
    clip = Clip(scene(update_s=5))
    clip.add(1, straight((0.1, 0.5), (0.9, 0.5), 180)).play()  # 18 s
    updates = [t for t, _ in clip.of(TrackEvent, action="update")]
    assert updates == [pytest.approx(5.0), pytest.approx(10.0), pytest.approx(15.0)]


def test_a_stationary_object_says_so_once_and_then_is_quiet_until_it_moves():
    clip = Clip(scene(update_s=5, zones={"pad": {"points": SQUARE}}))
    path = straight((0.1, 0.5), (0.5, 0.5), 20) + still((0.5, 0.5), 600) + straight((0.5, 0.5), (0.9, 0.5), 20)
    clip.add(1, path, stationary_from=100, moving_from=620).play()
    track_events = [(round(t, 3), e.action.value, e.track.stationary, e.zones) for t, e in clip.of(TrackEvent)]
    assert track_events[0] == (0.0, "new", False, ())
    stationary = [i for i, (_, a, s, _) in enumerate(track_events) if s]
    assert len(stationary) == 1 and track_events[stationary[0]][:3] == (10.0, "update", True)
    assert track_events[stationary[0] + 1][:3] == (62.0, "update", False)  # moving again
    assert all(t <= 10.0 or t >= 62.0 for t, *_ in track_events)
    assert track_events[-1][1] == "end"


def test_close_ends_every_open_track_with_the_reason():
    clip = Clip(scene(zones={"pad": {"points": SQUARE}}))
    clip.add(1, still((0.5, 0.5), 20), ends=False).add(2, still((0.1, 0.1), 20), ends=False).play(20)
    assert {o.track_id for o in clip.scene.open_tracks()} == {1, 2}
    events = clip.scene.close(2.0, reason="stopped")
    assert [(type(e).__name__, e.action.value) for e in events] == [
        ("ZoneEvent", "exit"), ("TrackEvent", "end"), ("TrackEvent", "end")]
    assert {e.track.track_id: e.reason for e in events if isinstance(e, TrackEvent)} == {1: "stopped", 2: "stopped"}
    assert clip.scene.open_tracks() == [] and clip.scene.trails() == {}
    assert clip.scene.counts.zones == {"pad": {}}
    assert clip.scene.close(2.1, reason="stopped") == []


# -- counts and trails -----------------------------------------------------------------------------

def test_counts_carry_line_totals_over_and_change_only_when_something_changed():
    before = Counts(zones={"pad": {"car": 4}}, lines={"gate": {"in": {"car": 5}, "out": {"car": 2}}, "gone": {"in": {"car": 1}}})
    clip = Clip(scene(zones={"pad": {"points": SQUARE}}, lines={"gate": {"points": VERTICAL, "in": "right"}}, counts=before))
    assert clip.scene.counts == Counts(zones={"pad": {}}, lines={"gate": {"in": {"car": 5}, "out": {"car": 2}}})
    clip.add(1, straight((0.2, 0.5), (0.8, 0.5), 31), label="car").play()
    assert clip.scene.counts.lines["gate"] == {"in": {"car": 6}, "out": {"car": 2}}
    enters = [t for t, _ in clip.of(ZoneEvent, action="enter")]
    exits = [t for t, _ in clip.of(ZoneEvent, action="exit")]
    crossing = [t for t, _ in clip.of(LineEvent)]
    assert clip.changed == sorted(set(enters + exits + crossing))
    # the snapshot is a copy
    clip.scene.counts.lines["gate"]["in"]["car"] = 100
    assert clip.scene.counts.lines["gate"]["in"]["car"] == 6


def test_trails_keep_the_last_30_points_oldest_first():
    clip = Clip(scene())
    path = straight((0.1, 0.5), (0.9, 0.5), 50)
    clip.add(1, path, ends=False).play(50)
    trail = clip.scene.trails()[1]
    assert len(trail) == 30
    assert trail == [pytest.approx(p) for p in path[-30:]]
