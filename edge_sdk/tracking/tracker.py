"""The multi-object tracker: detections in, tracks with persistent ids out (ByteTrack-class).

Each frame, in NumPy, for all tracks at once:

1. **Predict.** A constant-velocity Kalman filter per track (state: box centre, width, height and
   their rates, per second), advanced by the time since the last frame, so a camera whose frame
   rate varies is followed as well as a steady one. A stationary track does not move; a lost one
   keeps its velocity but not its change of size.
2. **First pass.** Detections scoring the run's threshold or more against every track (confirmed,
   tentative and lost), by the IoU of the predicted box, greedily from the largest IoU
   (at least ``match_iou``). Matching ignores the class: a detector flickering between two labels
   keeps one track, whose label is the score-weighted vote of its matches.
3. **Second pass.** Detections from ``low_threshold`` up to the threshold (an object half hidden,
   blurred, far away) against the confirmed tracks still unmatched, with a stricter IoU
   (``SECOND_PASS_IOU``): they extend tracks but never start one.
4. **Recovery.** High-score detections still unmatched against the lost confirmed tracks by the
   box each was last *seen* at (observation-centric recovery, as OC-SORT does): an object that
   turned back or stopped while the detector missed it is where it was last seen, not where its
   old velocity would have taken it. Its motion restarts from rest, as a new track's does.
5. **Births and deaths.** An unmatched high-score detection starts a tentative track (unless it
   boxes an object already claimed this frame: the detector's NMS works class by class); one that
   matches ``min_hits`` frames is confirmed and gets the next id (``started``), unless its box
   then sits on a confirmed track's (a second box the detector keeps giving for one object: that
   tentative track is dropped); a tentative track that misses a frame is dropped without a word. A confirmed track that misses is lost: kept for
   re-association ``max_lost_s`` (``stationary_keep_s`` when stationary), then ``ended``.
6. **Stationary.** A track whose centre stayed within ``stationary_motion`` x its box's larger side
   for ``stationary_s`` is stationary until it moves away; a parked car the detector misses for
   minutes keeps its id and re-matches where it stood.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from edge_sdk.geometry import iou_matrix
from edge_sdk.results import BBox, Detection
from edge_sdk.tracking.settings import TrackingSettings
from edge_sdk.tracking.values import TrackedObject

# The low-score pass matches only boxes that overlap a track this much: a low-score detection is
# as likely noise as an object, so it must sit on the track's predicted box.
SECOND_PASS_IOU = 0.5

# An unmatched detection overlapping a matched one this much is the same object seen twice (the
# detector's NMS works class by class: a "star" and a "triangle" on one shape overlap 0.5-0.8),
# not a new track.
DUPLICATE_IOU = 0.3

# Kalman noise, as shares of the box's width (x, w) or height (y, h). Per second for the process
# (time-based, so any frame rate gets the same model), per measurement for the detector.
_POS_NOISE = 0.1  # position: std per sqrt(s)
_VEL_NOISE = 0.5  # velocity: std per s^1.5 (how fast an object can change its speed)
_MEAS_NOISE = 0.05  # a detection's box
_INIT_POS = 0.1  # a new track's position uncertainty
_INIT_VEL = 2.0  # ... and velocity uncertainty (per s): the second match sets the velocity

# Recovery by the last seen box is for an object the detector missed a moment (a turn, a bounce):
# after longer, another object may stand where it was last seen (behind a pillar's edge).
RECOVER_S = 0.5
RECOVER_IOU = 0.3  # with the last seen box; a little stricter than match_iou, which meets a prediction

_EYE8 = np.eye(8)

# A detection whose centre is further than this from a track's predicted centre, in Mahalanobis
# distance squared (the chi-square 99.9 % point for 2 degrees of freedom), is not that track's:
# stops a coasting track from taking another object that happens to overlap where it is heading.
GATE = 13.82


@dataclass(frozen=True)
class TrackerStep:
    """What one frame did to the tracks."""

    tracked: tuple[Detection, ...]  # detections matched to confirmed tracks this frame, each with its track_id
    confirmed: tuple[TrackedObject, ...]  # every confirmed track alive after this frame (matched=False: coasting)
    started: tuple[TrackedObject, ...]  # confirmed in this frame (their 'new')
    ended: tuple[TrackedObject, ...]  # dropped in this frame: lost past max_lost_s (stationary_keep_s when stationary)
    # the confirmed tracks not matched this frame, as detections at the box their motion predicts
    # (score: their last), when that box's centre is still in the frame: where a drawing or an
    # evaluation puts an object the detector missed
    coasting: tuple[Detection, ...] = ()


@dataclass
class _Track:
    """One track's bookkeeping (its Kalman state lives in the tracker's arrays, same row)."""

    first_seen: float
    last_seen: float
    score: float
    box: BBox
    votes: dict[int, float]
    labels: dict[int, str]
    class_id: int
    hits: int = 1
    track_id: int = 0  # 0 while tentative
    matched: bool = True
    stationary: bool = False
    still_anchor: tuple[float, float] = (math.nan, math.nan)
    still_since: float = 0.0

    @property
    def confirmed(self) -> bool:
        return self.track_id > 0

    def vote(self, detection: Detection) -> None:
        """The label is the class with the largest summed score; a tie keeps the current one."""
        cid = detection.class_id
        self.votes[cid] = self.votes.get(cid, 0.0) + float(detection.score)
        self.labels[cid] = detection.label
        if cid != self.class_id and self.votes[cid] > self.votes.get(self.class_id, 0.0):
            self.class_id = cid

    def watch_motion(self, t: float, settings: TrackingSettings) -> None:
        """Stationary once the centre stayed near one point for stationary_s; moving again once it left it."""
        cx, cy = self.box.center
        ax, ay = self.still_anchor
        reach = settings.stationary_motion * max(self.box.width, self.box.height)
        if math.isnan(ax) or math.hypot(cx - ax, cy - ay) > reach:
            self.still_anchor, self.still_since, self.stationary = (cx, cy), t, False
        elif t - self.still_since >= settings.stationary_s:
            self.stationary = True

    def value(self) -> TrackedObject:
        return TrackedObject(track_id=self.track_id, class_id=self.class_id, label=self.labels[self.class_id],
                             score=self.score, box=self.box, first_seen=self.first_seen, last_seen=self.last_seen,
                             stationary=self.stationary, matched=self.matched)


class Tracker:
    """Gives every detection a persistent track id.

    ``first_id`` is the id the next new track gets (a restarted run carries on from the ids it had).
    Ids go to confirmed tracks only, in order, and are never reused.
    """

    def __init__(self, settings: TrackingSettings, *, first_id: int = 1) -> None:
        if first_id < 1:
            raise ValueError(f"first_id must be at least 1, got {first_id}")
        self.settings = settings
        self._next_id = int(first_id)
        self._tracks: list[_Track] = []
        self._x = np.zeros((0, 8))  # cx, cy, w, h and their rates per second
        self._p = np.zeros((0, 8, 8))
        self._t: float | None = None

    @property
    def next_id(self) -> int:
        return self._next_id

    def __len__(self) -> int:
        """Tracks held: confirmed (matched or lost) and tentative."""
        return len(self._tracks)

    def update(self, detections: Sequence[Detection], t: float, *, threshold: float) -> TrackerStep:
        """One frame's detections (boxed, score >= settings.low_threshold) at time ``t`` (seconds,
        increasing). Detections scoring ``threshold`` or more match first and may start tracks;
        the rest only extend tracks the first pass left unmatched."""
        s = self.settings
        dt = 0.0 if self._t is None else max(0.0, t - self._t)
        self._t = t
        self._predict(dt)

        usable = [d for d in detections if d.box is not None and d.score >= s.low_threshold]
        high = [i for i, d in enumerate(usable) if d.score >= threshold]
        low = [i for i, d in enumerate(usable) if d.score < threshold]
        boxes = np.array([(d.box.x1, d.box.y1, d.box.x2, d.box.y2) for d in usable], dtype=float).reshape(-1, 4)
        predicted = self._boxes()
        iou = iou_matrix(predicted, boxes)  # tracks x detections
        iou[self._gate(boxes) > GATE] = 0.0  # too far from where the track can be, however they overlap

        matches: dict[int, int] = {}  # track row -> detection index
        everyone = list(range(len(self._tracks)))
        for row, col in _greedy(iou, everyone, high, s.match_iou):
            matches[row] = col
        leftover = [r for r in everyone if r not in matches and self._tracks[r].confirmed]
        for row, col in _greedy(iou, leftover, low, max(SECOND_PASS_IOU, s.match_iou)):
            matches[row] = col
        recovered = self._recover(matches, boxes, high, t)

        if matches:
            rows = np.fromiter((r for r in matches if r not in recovered), dtype=int)
            self._correct(rows, boxes[[matches[r] for r in rows]])

        tracked: list[tuple[int, Detection]] = []
        started: list[TrackedObject] = []
        ended: list[TrackedObject] = []
        keep = np.ones(len(self._tracks), dtype=bool)
        for row, track in enumerate(self._tracks):
            col = matches.get(row)
            if col is not None:
                detection = usable[col]
                track.box, track.score, track.last_seen, track.matched = detection.box, float(detection.score), t, True
                track.hits += 1
                track.vote(detection)
                track.watch_motion(t, s)
                if not track.confirmed and track.hits >= s.min_hits:
                    if self._duplicate(row, matches, boxes):
                        keep[row] = False  # a second box the detector keeps giving for a tracked object
                        continue
                    track.track_id = self._take_id()
                    started.append(track.value())
                if track.confirmed:
                    tracked.append((col, replace(detection, track_id=track.track_id, class_id=track.class_id,
                                                 label=track.labels[track.class_id])))
                continue
            track.matched = False
            if not track.confirmed:
                keep[row] = False  # a tentative track that misses is dropped silently
                continue
            patience = s.stationary_keep_s if track.stationary else s.max_lost_s
            if t - track.last_seen > patience:
                keep[row] = False
                ended.append(track.value())
        self._keep(keep)

        # births, best score first; a second box on an object already claimed (class-wise NMS keeps a
        # "person" and a "dog" on one box) is no new object
        claimed = list(matches.values())
        for col in sorted((c for c in high if c not in matches.values()), key=lambda c: -usable[c].score):
            if claimed and (iou_matrix(boxes[col:col + 1], boxes[claimed]) >= DUPLICATE_IOU).any():
                continue
            claimed.append(col)
            tracked.extend(self._start(usable[col], boxes[col], t, col))
            if self._tracks[-1].confirmed:
                started.append(self._tracks[-1].value())

        confirmed = tuple(tr.value() for tr in self._tracks if tr.confirmed)
        return TrackerStep(tracked=tuple(d for _, d in sorted(tracked, key=lambda pair: pair[0])), confirmed=confirmed,
                           started=tuple(started), ended=tuple(ended), coasting=self._coasting())

    # ------------------------------------------------------------------ bookkeeping

    def _recover(self, matches: dict[int, int], boxes: np.ndarray, high: list[int], t: float) -> set[int]:
        """Confirmed tracks the passes left unmatched (lost, or losing now) matched to unmatched
        high-score detections by their last seen box; their state restarts there. The rows recovered."""
        lost = [r for r, tr in enumerate(self._tracks) if r not in matches and tr.confirmed and t - tr.last_seen <= RECOVER_S]
        free = [c for c in high if c not in matches.values()]
        if not lost or not free:
            return set()
        seen = np.array([(tr.box.x1, tr.box.y1, tr.box.x2, tr.box.y2) for tr in self._tracks], dtype=float)
        rows = set()
        for row, col in _greedy(iou_matrix(seen, boxes), lost, free, RECOVER_IOU):
            matches[row] = col
            rows.add(row)
            new = _xywh(boxes[col])
            w, h = new[2], new[3]
            scale = np.array([w, h, w, h] * 2)
            # Its old velocity is what lost it: it starts again from rest, as a new track does, and
            # the next matches set its motion (two jittered boxes are no velocity to go on).
            self._x[row] = np.concatenate([new, np.zeros(4)])
            self._p[row] = np.diag((np.concatenate([np.full(4, _INIT_POS), np.full(4, _INIT_VEL)]) * scale) ** 2)
        return rows

    def _duplicate(self, row: int, matches: dict[int, int], boxes: np.ndarray) -> bool:
        """Whether tentative track ``row``'s detection sits on one a confirmed track took this frame."""
        others = [matches[r] for r, tr in enumerate(self._tracks) if r != row and r in matches and tr.confirmed]
        if not others:
            return False
        col = matches[row]
        return bool((iou_matrix(boxes[col:col + 1], boxes[others]) >= DUPLICATE_IOU).any())

    def _take_id(self) -> int:
        track_id, self._next_id = self._next_id, self._next_id + 1
        return track_id

    def _start(self, detection: Detection, box: np.ndarray, t: float, col: int) -> list[tuple[int, Detection]]:
        """A tentative track from an unmatched high-score detection (confirmed at once when min_hits is 1)."""
        track = _Track(first_seen=t, last_seen=t, score=float(detection.score), box=detection.box,
                       votes={detection.class_id: float(detection.score)}, labels={detection.class_id: detection.label},
                       class_id=detection.class_id)
        track.watch_motion(t, self.settings)
        self._tracks.append(track)
        w, h = max(box[2] - box[0], 1e-6), max(box[3] - box[1], 1e-6)
        state = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2, w, h, 0, 0, 0, 0])
        scale = np.array([w, h, w, h] * 2)
        spread = np.concatenate([np.full(4, _INIT_POS), np.full(4, _INIT_VEL)]) * scale
        self._x = np.vstack([self._x, state])
        self._p = np.concatenate([self._p, np.diag(spread ** 2)[None]])
        if self.settings.min_hits <= 1:
            track.track_id = self._take_id()
            return [(col, replace(detection, track_id=track.track_id))]
        return []

    def _keep(self, keep: np.ndarray) -> None:
        if keep.all():
            return
        self._tracks = [tr for tr, k in zip(self._tracks, keep) if k]
        self._x, self._p = self._x[keep], self._p[keep]

    def _coasting(self) -> tuple[Detection, ...]:
        out = []
        for track, (x1, y1, x2, y2) in zip(self._tracks, self._boxes()):
            if track.confirmed and not track.matched and 0 <= (x1 + x2) / 2 <= 1 and 0 <= (y1 + y2) / 2 <= 1:
                out.append(Detection(class_id=track.class_id, label=track.labels[track.class_id], score=track.score,
                                     box=BBox(float(x1), float(y1), float(x2), float(y2)), track_id=track.track_id))
        return tuple(out)

    # ------------------------------------------------------------------ Kalman, all tracks at once

    def _predict(self, dt: float) -> None:
        if not self._tracks or dt <= 0:
            return
        x, p = self._x, self._p
        still = np.array([tr.stationary for tr in self._tracks])
        lost = np.array([not tr.matched for tr in self._tracks])
        x[still, 4:] = 0.0  # a stationary object stays where it is
        x[lost, 6:] = 0.0  # a lost one keeps going, but its size stays
        f = _EYE8.copy()
        f[range(4), range(4, 8)] = dt
        x[:] = x @ f.T
        x[:, 2:4] = np.maximum(x[:, 2:4], 1e-4)
        scale = np.concatenate([x[:, [2, 3, 2, 3]]] * 2, axis=1)  # (n, 8): widths and heights
        rates = np.concatenate([np.full(4, _POS_NOISE), np.full(4, _VEL_NOISE)])
        q = (rates * scale) ** 2 * dt
        p[:] = f @ p @ f.T
        p[:, range(8), range(8)] += q

    def _correct(self, rows: np.ndarray, boxes: np.ndarray) -> None:
        """The standard Kalman update of the matched tracks with their detections' boxes."""
        z = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2,
                      boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1)
        x, p = self._x[rows], self._p[rows]
        r = (_MEAS_NOISE * np.maximum(z[:, [2, 3, 2, 3]], 1e-4)) ** 2
        s = p[:, :4, :4].copy()
        s[:, range(4), range(4)] += r
        k = np.linalg.solve(s, p[:, :4, :]).transpose(0, 2, 1)  # P H^T S^-1 (S and P symmetric)
        x = x + np.einsum("nij,nj->ni", k, z - x[:, :4])
        p = p - k @ p[:, :4, :]
        x[:, 2:4] = np.maximum(x[:, 2:4], 1e-4)
        self._x[rows], self._p[rows] = x, p

    def _gate(self, boxes: np.ndarray) -> np.ndarray:
        """Mahalanobis distance squared of every detection's centre from every track's predicted
        centre (tracks x detections). The centre only: a detector's box sizes vary more than its
        positions, and the IoU already asks for a similar size."""
        if not len(self._tracks) or not len(boxes):
            return np.zeros((len(self._tracks), len(boxes)))
        z = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
        s = self._p[:, :2, :2].copy()
        s[:, range(2), range(2)] += (_MEAS_NOISE * self._x[:, 2:4]) ** 2
        y = z[None, :, :] - self._x[:, None, :2]
        return np.einsum("nmi,nij,nmj->nm", y, np.linalg.inv(s), y)

    def _boxes(self) -> np.ndarray:
        """Every track's predicted box as (x1, y1, x2, y2) rows."""
        c, half = self._x[:, :2], self._x[:, 2:4] / 2
        return np.concatenate([c - half, c + half], axis=1)


def _xywh(box: np.ndarray) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0], box[3] - box[1]])


def _greedy(iou: np.ndarray, rows: list[int], cols: list[int], least: float) -> list[tuple[int, int]]:
    """Pairs of (row, col) from the given rows and columns, largest IoU first, each used once,
    none below ``least``. Boxes overlap few others, so this is the optimal assignment in practice,
    without SciPy (a quarter of a second to import, 40 MB) in the runtime."""
    if not rows or not cols:
        return []
    sub = iou[np.ix_(rows, cols)]
    r, c = np.nonzero(sub >= least)
    if not len(r):
        return []
    order = np.argsort(-sub[r, c], kind="stable")
    pairs, used_r, used_c = [], set(), set()
    for i in order:
        if r[i] not in used_r and c[i] not in used_c:
            used_r.add(r[i])
            used_c.add(c[i])
            pairs.append((rows[r[i]], cols[c[i]]))
    return pairs
