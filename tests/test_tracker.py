"""The multi-object tracker: accuracy on generated clips scored by a real MOT evaluator
(motmetrics, and HOTA from its definition), side by side with supervision's ByteTrack, and the
behaviours events are built on (occlusions, crossings, stationary objects, ids, labels)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge_sdk.results import BBox, Detection
from edge_sdk.samples import tracks
from edge_sdk.tracking.settings import TrackingSettings
from edge_sdk.tracking.tracker import Tracker

pytest.importorskip("motmetrics", reason="the tracking scores need motmetrics: pip install motmetrics")

SEEDS = (0, 1)
THRESHOLD = 0.5


@pytest.fixture(scope="module", params=SEEDS)
def clip(request):
    return tracks.make_clip(seed=request.param)


def test_generated_clip_has_what_the_scores_need(clip):
    """Enough objects, some hidden behind the bar, a share of the detections low-score, false positives."""
    assert clip.tracks >= 20
    assert any(not b.visible for frame in clip.truth for b in frame)
    scores = np.array([d.score for frame in clip.detections for d in frame])
    assert 0.15 < (scores < clip.threshold).mean() < 0.6
    truth = sum(len(f) for f in clip.truth)
    assert sum(len(f) for f in clip.detections) < truth  # dropped and hidden outnumber the false positives


def test_tracker_accuracy_on_generated_clips(clip):
    scores = tracks.score(clip, tracks.run_tracker(clip, Tracker(TrackingSettings())))
    assert scores.true_tracks == clip.tracks
    assert scores.idf1 >= 0.90, scores
    assert scores.id_switches <= scores.true_tracks / 20, scores
    assert 0 < scores.hota <= 1 and scores.mota > 0.8, scores


def test_tracker_at_least_as_good_as_supervision_bytetrack(clip):
    pytest.importorskip("supervision", reason='the reference ByteTrack: pip install "supervision>=0.26,<0.31"')
    reference = tracks.score(clip, tracks.run_bytetrack(clip))
    ours = tracks.score(clip, tracks.run_tracker(clip, Tracker(TrackingSettings())))
    # only the detections matched (what ByteTrack reports): the comparison without our coasting boxes
    matched_only = tracks.score(clip, tracks.run_tracker(clip, Tracker(TrackingSettings()), coasting=False))
    assert ours.idf1 >= reference.idf1, (ours, reference)
    assert matched_only.idf1 >= reference.idf1, (matched_only, reference)
    assert ours.hota >= reference.hota, (ours, reference)


# --------------------------------------------------------------------------- HOTA, against hand-worked cases


def _det(track_id, box):
    return Detection(0, "person", 0.9, BBox(*box), track_id=track_id)


def _truth(frames, box=(0.1, 0.1, 0.6, 0.6)):
    return [[tracks.TruthBox(1, BBox(*box), True)] for _ in range(frames)]


def test_hota_perfect_tracking_is_one():
    s = tracks.score(_truth(10), [[_det(7, (0.1, 0.1, 0.6, 0.6))] for _ in range(10)])
    assert (s.hota, s.deta, s.assa, s.mota, s.idf1) == pytest.approx((1, 1, 1, 1, 1))


def test_hota_one_object_split_in_two_tracks():
    """Every box right, two ids for one object, half each: DetA 1, AssA 5/(10+5-5) = 0.5, HOTA sqrt(0.5)."""
    s = tracks.score(_truth(10), [[_det(1 if f < 5 else 2, (0.1, 0.1, 0.6, 0.6))] for f in range(10)])
    assert s.deta == pytest.approx(1)
    assert s.assa == pytest.approx(0.5)
    assert s.hota == pytest.approx(math.sqrt(0.5))
    assert s.idf1 == pytest.approx(0.5) and s.id_switches == 1


def test_hota_counts_localisation_thresholds():
    """IoU 0.62 everywhere: a match for alpha 0.05 ... 0.60 (12 of 19 thresholds), none above."""
    s = tracks.score(_truth(6, (0.0, 0.0, 0.5, 0.5)), [[_det(3, (0.0, 0.0, 0.5, 0.31))] for _ in range(6)])
    assert s.hota == pytest.approx(12 / 19)
    assert s.mota == pytest.approx(1)  # IoU 0.62 >= 0.5: a match for CLEAR MOT


def test_hota_nothing_reported_is_zero():
    s = tracks.score(_truth(5), [[] for _ in range(5)])
    assert s.hota == 0 and s.recall == 0


# --------------------------------------------------------------------------- behaviours


FPS = 15.0


def _box(cx, cy, w=0.06, h=0.14):
    return BBox(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def _run(tracker, frames, *, fps=FPS, t0=0.0):
    """Feed ``frames`` (lists of detections); the steps."""
    return [tracker.update(dets, t0 + i / fps, threshold=THRESHOLD) for i, dets in enumerate(frames)]


def _walker(x0, speed, frames, *, y=0.5, score=0.9, class_id=0, label="person", fps=FPS):
    return [Detection(class_id, label, score, _box(x0 + speed * i / fps, y)) for i in range(frames)]


def test_id_survives_half_a_second_occlusion():
    tracker = Tracker(TrackingSettings())
    dets = _walker(0.1, 0.2, 60)
    hidden = range(25, 25 + int(0.5 * FPS))  # 0.5 s with no detection (behind something)
    steps = _run(tracker, [[] if i in hidden else [d] for i, d in enumerate(dets)])
    ids = {d.track_id for s in steps for d in s.tracked}
    assert ids == {1}
    assert not any(s.ended for s in steps)
    # while hidden it coasts: still confirmed, not matched, its predicted box moving on
    coasting = [s.coasting[0].box.center[0] for i, s in enumerate(steps) if i in hidden]
    assert all(not s.confirmed[0].matched for i, s in enumerate(steps) if i in hidden)
    assert coasting == sorted(coasting) and coasting[-1] > coasting[0] + 0.05


def test_crossing_paths_keep_ids():
    tracker = Tracker(TrackingSettings())
    right = _walker(0.1, 0.15, 90, y=0.5)
    left = _walker(0.9, -0.15, 90, y=0.51)
    steps = _run(tracker, [[a, b] for a, b in zip(right, left)])
    first = {d.track_id: d.box.center[0] for d in steps[5].tracked}
    last = {d.track_id: d.box.center[0] for d in steps[-1].tracked}
    assert set(first) == set(last) == {1, 2}
    for track_id in first:  # whoever started on the left ends on the right, and the other way
        assert (first[track_id] < 0.5) == (last[track_id] > 0.5)


def test_stationary_object_kept_through_a_long_detector_gap():
    settings = TrackingSettings(stationary_s=10.0, stationary_keep_s=60.0, max_lost_s=1.5)
    tracker = Tracker(settings)
    rng = np.random.default_rng(0)

    def parked():
        return [Detection(1, "car", 0.8, _box(0.6 + rng.normal(0, 0.002), 0.4 + rng.normal(0, 0.002), 0.15, 0.1))]

    fps = 5.0
    steps = _run(tracker, [parked() for _ in range(int(12 * fps))], fps=fps)
    assert steps[-1].confirmed[0].stationary and not steps[int(5 * fps)].confirmed[0].stationary
    gap = _run(tracker, [[] for _ in range(int(30 * fps))], fps=fps, t0=12.0)  # the detector misses it for 30 s
    assert all(len(s.confirmed) == 1 and not s.confirmed[0].matched for s in gap)
    back = _run(tracker, [parked() for _ in range(5)], fps=fps, t0=42.0)
    assert [d.track_id for s in back for d in s.tracked] == [1] * 5
    assert not any(s.started or s.ended for s in gap + back)
    # it moves off: no longer stationary
    away = _run(tracker, [[Detection(1, "car", 0.8, _box(0.6 + 0.02 * i, 0.4, 0.15, 0.1))] for i in range(10)], fps=fps, t0=43.0)
    assert [d.track_id for s in away for d in s.tracked] == [1] * 10
    assert not away[-1].confirmed[0].stationary


def test_a_moving_track_ends_after_max_lost_s_once():
    tracker = Tracker(TrackingSettings(max_lost_s=1.0))
    steps = _run(tracker, [[d] for d in _walker(0.1, 0.1, 20)] + [[] for _ in range(30)])
    ended = [(i, o.track_id) for i, s in enumerate(steps) for o in s.ended]
    assert len(ended) == 1 and ended[0][1] == 1
    assert (ended[0][0] - 19) / FPS == pytest.approx(1.0, abs=1.5 / FPS)
    assert not steps[-1].confirmed


def test_tentative_tracks_are_never_reported():
    tracker = Tracker(TrackingSettings(min_hits=3))
    blips = [[Detection(0, "person", 0.9, _box(0.3, 0.3))]] * 2 + [[]] + [[Detection(0, "person", 0.9, _box(0.7, 0.7))]] * 2
    steps = _run(tracker, blips + [[] for _ in range(40)])
    assert not any(s.tracked or s.confirmed or s.started or s.ended or s.coasting for s in steps)
    assert tracker.next_id == 1  # no id spent on them


def test_confirmed_on_the_min_hits_th_match_with_that_detection():
    tracker = Tracker(TrackingSettings(min_hits=3))
    steps = _run(tracker, [[d] for d in _walker(0.2, 0.1, 4)])
    assert [len(s.tracked) for s in steps] == [0, 0, 1, 1]
    assert [o.track_id for o in steps[2].started] == [1] and not steps[3].started
    assert steps[2].started[0].first_seen == 0.0 and steps[2].started[0].last_seen == pytest.approx(2 / FPS)


def test_ids_continue_from_first_id_and_are_never_reused():
    tracker = Tracker(TrackingSettings(max_lost_s=0.5), first_id=42)
    a, b = _walker(0.1, 0.1, 10, y=0.3), _walker(0.8, -0.1, 10, y=0.7)
    steps = _run(tracker, [[x, y] for x, y in zip(a, b)])
    assert sorted(o.track_id for s in steps for o in s.started) == [42, 43]
    assert tracker.next_id == 44
    _run(tracker, [[] for _ in range(20)], t0=1.0)  # both end
    again = _run(tracker, [[d] for d in _walker(0.1, 0.1, 5, y=0.3)], t0=3.0)  # the same place, later: a new object
    assert [o.track_id for s in again for o in s.started] == [44]


def test_class_flicker_keeps_one_track_and_a_stable_label():
    tracker = Tracker(TrackingSettings())
    frames = []
    for i, d in enumerate(_walker(0.1, 0.1, 40)):
        flip = i % 3 == 1  # a third of the frames say "dog", with a lower score
        frames.append([Detection(1, "dog", 0.6, d.box) if flip else d])
    steps = _run(tracker, frames)
    assert {d.track_id for s in steps for d in s.tracked} == {1}
    assert {d.label for s in steps for d in s.tracked} == {"person"}
    assert steps[-1].confirmed[0].label == "person" and steps[-1].confirmed[0].class_id == 0


def test_low_score_detections_extend_tracks_but_never_start_them():
    tracker = Tracker(TrackingSettings(low_threshold=0.1))
    walk = _walker(0.1, 0.1, 30)
    frames = [[d] if i < 10 else [Detection(0, "person", 0.3, d.box)] for i, d in enumerate(walk)]
    frames = [f + [Detection(0, "person", 0.3, _box(0.8, 0.2))] for f in frames]  # a low-score object all along
    steps = _run(tracker, frames)
    assert [d.track_id for d in steps[-1].tracked] == [1]  # matched by the low-score pass, 20 frames on
    assert steps[-1].tracked[0].score == 0.3
    assert tracker.next_id == 2


def test_below_low_threshold_is_ignored():
    tracker = Tracker(TrackingSettings(low_threshold=0.2))
    steps = _run(tracker, [[Detection(0, "person", 0.9, d.box)] for d in _walker(0.1, 0.1, 5)]
                 + [[Detection(0, "person", 0.15, d.box)] for d in _walker(0.15, 0.1, 5)])
    assert not steps[-1].tracked and not steps[-1].confirmed[0].matched


def test_frame_rate_changes_do_not_break_tracks():
    """Time-based motion: the same walk seen at 30 fps, then at 5 fps, keeps its id."""
    tracker = Tracker(TrackingSettings())
    times = [i / 30 for i in range(30)] + [1 + i / 5 for i in range(1, 15)]
    steps = [tracker.update([Detection(0, "person", 0.9, _box(0.1 + 0.25 * t, 0.5, 0.04, 0.1))], t, threshold=THRESHOLD)
             for t in times]
    assert {d.track_id for s in steps for d in s.tracked} == {1}


def test_twenty_objects_each_keep_their_id():
    tracker = Tracker(TrackingSettings())
    rng = np.random.default_rng(3)
    start = rng.uniform(0.15, 0.85, (20, 2))
    velocity = rng.normal(0, 0.03, (20, 2))
    frames = [[Detection(0, "person", 0.9, _box(*(start[k] + velocity[k] * i / FPS), 0.03, 0.05)) for k in range(20)]
              for i in range(45)]
    steps = _run(tracker, frames)
    assert len(steps[-1].tracked) == 20 and tracker.next_id == 21
    assert [d.box for d in steps[-1].tracked] == [d.box for d in frames[-1]]  # in the detections' order


@pytest.mark.parametrize("seed", range(4))
def test_invariants_on_random_streams(seed):
    """Whatever comes in (clutter, duplicates, boxes of any size, irregular times): ids only grow and
    are never reused, every reported id is a confirmed track, each track starts once and ends once."""
    rng = np.random.default_rng(seed)
    tracker = Tracker(TrackingSettings(min_hits=int(rng.integers(1, 4)), max_lost_s=0.5, stationary_s=1.0,
                                       stationary_keep_s=2.0), first_id=7)
    clip = tracks.make_clip(seed=seed, seconds=8, false_positives=3.0, drop=0.4)
    t, started, ended = 0.0, set(), set()
    for dets in clip.detections:
        dets = list(dets)
        if dets and rng.random() < 0.2:
            dets.append(dets[0])  # a duplicate box
        if rng.random() < 0.05:
            dets.append(Detection(0, "person", 0.9, BBox(0.5, 0.5, 0.5, 0.5)))  # a degenerate one
        t += float(rng.choice([0.0, 1 / 30, 1 / 15, 0.5]))
        step = tracker.update(dets, t, threshold=THRESHOLD)
        alive = {o.track_id for o in step.confirmed}
        assert {d.track_id for d in step.tracked} <= {o.track_id for o in step.confirmed if o.matched}
        assert len({d.track_id for d in step.tracked}) == len(step.tracked)  # one detection per track
        assert {d.track_id for d in step.coasting} <= {o.track_id for o in step.confirmed if not o.matched}
        new = {o.track_id for o in step.started}
        assert new <= alive and not new & started and all(i >= 7 for i in new)
        gone = {o.track_id for o in step.ended}
        assert gone <= started and not gone & alive and not gone & ended
        started |= new
        ended |= gone
        assert alive <= started - ended
        assert max(started, default=6) < tracker.next_id
    assert started == set(range(7, tracker.next_id))


def test_one_object_boxed_twice_with_two_classes_is_one_track():
    """Class-wise NMS keeps a "person" and a "dog" on the same object: one track, not two."""
    tracker = Tracker(TrackingSettings())
    frames = [[d, Detection(1, "dog", 0.7, BBox(d.box.x1 + 0.002, d.box.y1, d.box.x2, d.box.y2 + 0.003))]
              for d in _walker(0.1, 0.1, 20)]
    steps = _run(tracker, frames)
    assert tracker.next_id == 2 and len(steps[-1].confirmed) == 1
    assert [len(s.tracked) for s in steps[2:]] == [1] * 18
