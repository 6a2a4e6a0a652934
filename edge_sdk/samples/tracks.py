"""Generated tracking clips with ground truth, and their scores with a real MOT evaluator.

A clip is boxes only, no images: objects (people and cars) enter and leave the frame, cross each
other's paths, pass behind an opaque bar, and stand still. Its detections are made from the truth
and degraded on purpose, seeded: box jitter, a share of the true detections dropped, false
positives (low and high scores), scores spread so that a tracker's low-score pass matters, and a
detector that now and then gives the other class.

``score`` rates what a tracker reported per frame with ``motmetrics`` (CLEAR MOT and identity
metrics) and HOTA (Luiten et al., 2020), computed here from its definition because motmetrics'
release (1.4.0) has none. motmetrics is a development dependency: ``pip install motmetrics``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge_sdk.geometry import iou_matrix
from edge_sdk.results import BBox, Detection

LABELS = ("person", "car")
MATCH_IOU = 0.5  # a reported box counts for a true one from this IoU (CLEAR MOT and identity metrics)
HOTA_ALPHAS = tuple(np.round(np.arange(0.05, 0.96, 0.05), 2))


@dataclass(frozen=True)
class TruthBox:
    track_id: int
    box: BBox
    visible: bool  # False: hidden behind the bar (still there: a tracker may follow it)


@dataclass(frozen=True)
class TrackClip:
    """A clip's truth and the degraded detections made from it, frame by frame."""

    fps: float
    times: tuple[float, ...]  # seconds, one per frame
    truth: tuple[tuple[TruthBox, ...], ...]  # per frame: the objects in the frame
    detections: tuple[tuple[Detection, ...], ...]  # per frame: what the degraded detector saw
    bar: BBox  # the opaque bar objects pass behind
    threshold: float  # the detector's threshold: detections below it are the low-score ones

    @property
    def frames(self) -> int:
        return len(self.times)

    @property
    def tracks(self) -> int:
        """The number of true tracks (objects)."""
        return len({b.track_id for frame in self.truth for b in frame})


@dataclass(frozen=True)
class MOTScores:
    mota: float
    idf1: float
    hota: float
    deta: float  # HOTA's detection accuracy
    assa: float  # HOTA's association accuracy
    id_switches: int
    true_tracks: int
    precision: float
    recall: float

    def row(self) -> dict:
        return {"MOTA": round(self.mota, 3), "IDF1": round(self.idf1, 3), "HOTA": round(self.hota, 3),
                "DetA": round(self.deta, 3), "AssA": round(self.assa, 3), "ID switches": self.id_switches,
                "true tracks": self.true_tracks, "precision": round(self.precision, 3), "recall": round(self.recall, 3)}


@dataclass(frozen=True)
class _Object:
    start: float  # seconds
    center: tuple[float, float]  # at start (may be outside the frame)
    velocity: tuple[float, float]  # per second
    size: tuple[float, float]
    class_id: int
    base_score: float
    wobble: float  # share of the speed that varies, slowly


def make_clip(*, seed: int = 0, seconds: float = 24.0, fps: float = 15.0, drop: float = 0.2, jitter: float = 0.05,
              false_positives: float = 0.6, flicker: float = 0.1, threshold: float = 0.5) -> TrackClip:
    """A clip of 24 objects: 12 walking across (entering and leaving at the sides), 4 crossing
    pairs meeting in the open, 2 walking down, 2 standing still; an opaque bar a third of the way
    across hides whoever is behind it.

    ``drop``: share of the visible objects' detections removed; ``jitter``: box edge noise as a
    share of the box's size; ``false_positives``: mean false detections per frame (two in three
    below ``threshold``); ``flicker``: share of detections given the other class."""
    rng = np.random.default_rng(seed)
    bar = BBox(0.27, 0.0, 0.33, 1.0)
    objects = _objects(rng, seconds)
    times = tuple(i / fps for i in range(int(round(seconds * fps))))
    truth, detections = [], []
    for t in times:
        frame_truth, frame_dets = [], []
        for track_id, obj in enumerate(objects, start=1):
            box, shown = _place(obj, t)
            if box is None:
                continue
            hidden = _covered(box, bar)
            frame_truth.append(TruthBox(track_id, box, visible=hidden < 0.5))
            if hidden >= 0.5 or rng.random() < drop:
                continue
            score = obj.base_score * shown * (1 - hidden) + rng.normal(0, 0.12)
            if score < 0.1:
                continue  # below any tracker's low threshold: a miss
            frame_dets.append(_detect(rng, box, obj.class_id, min(score, 0.99), jitter, flicker))
        for _ in range(rng.poisson(false_positives)):
            frame_dets.append(_false_positive(rng, threshold))
        rng.shuffle(frame_dets)
        truth.append(tuple(frame_truth))
        detections.append(tuple(frame_dets))
    return TrackClip(fps=fps, times=times, truth=tuple(truth), detections=tuple(detections), bar=bar, threshold=threshold)


def _objects(rng: np.random.Generator, seconds: float) -> list[_Object]:
    def size(class_id):
        return (rng.uniform(0.035, 0.06), rng.uniform(0.1, 0.17)) if class_id == 0 else (rng.uniform(0.1, 0.15), rng.uniform(0.06, 0.1))

    def mover(start, y, speed, class_id, *, rightwards=None, down=False):
        w, h = size(class_id)
        if down:
            x = rng.uniform(0.4, 0.9)
            return _Object(start, (x, -h / 2), (rng.uniform(-0.01, 0.01), speed), (w, h), class_id, rng.uniform(0.5, 0.9),
                           rng.uniform(0, 0.3))
        right = rng.random() < 0.5 if rightwards is None else rightwards
        x = -w / 2 if right else 1 + w / 2
        return _Object(start, (x, y), ((1 if right else -1) * speed, rng.uniform(-0.015, 0.015)), (w, h), class_id,
                       rng.uniform(0.5, 0.9), rng.uniform(0, 0.3))

    objects = []
    for _ in range(12):  # across, at any time
        objects.append(mover(rng.uniform(0, seconds - 6), rng.uniform(0.15, 0.85), rng.uniform(0.1, 0.2), int(rng.random() < 0.3)))
    for _ in range(4):  # crossing pairs: the same row, opposite ways, same speed: they meet mid-frame
        start, y, speed = rng.uniform(0, seconds - 8), rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.16)
        objects.append(mover(start, y, speed, 0, rightwards=True))
        objects.append(mover(start, y + rng.uniform(-0.02, 0.02), speed, 0, rightwards=False))
    for _ in range(2):
        objects.append(mover(rng.uniform(0, seconds - 8), 0.0, rng.uniform(0.1, 0.15), 0, down=True))
    for _ in range(2):  # parked from the start, in the open
        w, h = size(1)
        objects.append(_Object(0.0, (rng.uniform(0.45, 0.85), rng.uniform(0.2, 0.8)), (0.0, 0.0), (w, h), 1,
                               rng.uniform(0.5, 0.9), 0.0))
    return objects


def _place(obj: _Object, t: float) -> tuple[BBox | None, float]:
    """The object's box at ``t``, clipped to the frame, and the share of it inside; None when
    it is not in the frame (or less than a third of it is)."""
    dt = t - obj.start
    if dt < 0:
        return None, 0.0
    # the speed varies slowly (the distance is the integral of v * (1 + wobble * sin(t)))
    travelled = dt + obj.wobble * (1 - math.cos(dt))
    cx, cy = obj.center[0] + obj.velocity[0] * travelled, obj.center[1] + obj.velocity[1] * travelled
    w, h = obj.size
    full = BBox(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
    box = full.clip()
    shown = box.area / full.area
    return (box, shown) if shown >= 1 / 3 else (None, 0.0)


def _covered(box: BBox, bar: BBox) -> float:
    ix = max(0.0, min(box.x2, bar.x2) - max(box.x1, bar.x1))
    iy = max(0.0, min(box.y2, bar.y2) - max(box.y1, bar.y1))
    return ix * iy / box.area if box.area > 0 else 0.0


def _detect(rng, box: BBox, class_id: int, score: float, jitter: float, flicker: float) -> Detection:
    w, h = box.width, box.height
    noise = rng.normal(0, jitter, 4) * (w, h, w, h)
    x1, y1, x2, y2 = box.x1 + noise[0], box.y1 + noise[1], box.x2 + noise[2], box.y2 + noise[3]
    jittered = BBox(min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)).clip()
    if rng.random() < flicker:
        class_id = 1 - class_id
    return Detection(class_id=class_id, label=LABELS[class_id], score=float(score), box=jittered)


def _false_positive(rng, threshold: float) -> Detection:
    w, h = rng.uniform(0.03, 0.12), rng.uniform(0.05, 0.15)
    x, y = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
    score = rng.uniform(threshold, threshold + 0.3) if rng.random() < 1 / 3 else rng.uniform(0.1, threshold)
    class_id = int(rng.integers(2))
    return Detection(class_id=class_id, label=LABELS[class_id], score=float(score), box=BBox(x, y, x + w, y + h))


# --------------------------------------------------------------------------- scoring


def _boxes(boxes: Sequence[BBox]) -> np.ndarray:
    return np.array([(b.x1, b.y1, b.x2, b.y2) for b in boxes], dtype=float).reshape(-1, 4)


def score(truth: TrackClip | Sequence[Sequence[TruthBox]], tracked_per_frame: Sequence[Sequence[Detection]]) -> MOTScores:
    """CLEAR MOT (MOTA), identity (IDF1) and HOTA of what a tracker reported, frame by frame
    (detections with their ``track_id``), against the truth. Boxes match from IoU 0.5 (MOTA,
    IDF1); HOTA averages over IoU 0.05 to 0.95."""
    try:
        import motmetrics
    except ImportError as exc:  # a development dependency, not the runtime's
        raise ImportError("scoring tracks needs motmetrics: pip install motmetrics") from exc

    frames = truth.truth if isinstance(truth, TrackClip) else truth
    if len(frames) != len(tracked_per_frame):
        raise ValueError(f"{len(tracked_per_frame)} frames of tracks for {len(frames)} frames of truth")
    acc = motmetrics.MOTAccumulator(auto_id=True)
    sims = []
    for gt, hyp in zip(frames, tracked_per_frame):
        hyp = [d for d in hyp if d.box is not None and d.track_id is not None]
        sim = iou_matrix(_boxes([b.box for b in gt]), _boxes([d.box for d in hyp]))
        dist = np.where(sim >= MATCH_IOU, 1 - sim, np.nan)
        gt_ids, hyp_ids = [b.track_id for b in gt], [d.track_id for d in hyp]
        acc.update(gt_ids, hyp_ids, dist)
        sims.append((np.array(gt_ids, dtype=int), np.array(hyp_ids, dtype=int), sim))
    summary = motmetrics.metrics.create().compute(
        acc, metrics=["mota", "idf1", "num_switches", "num_unique_objects", "precision", "recall"], name="clip")
    row = summary.iloc[0]
    hota, deta, assa = hota_score(sims)
    return MOTScores(mota=float(row["mota"]), idf1=float(row["idf1"]), hota=hota, deta=deta, assa=assa,
                     id_switches=int(row["num_switches"]), true_tracks=int(row["num_unique_objects"]),
                     precision=float(np.nan_to_num(row["precision"])), recall=float(np.nan_to_num(row["recall"])))


def hota_score(frames: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[float, float, float]:
    """HOTA, DetA and AssA (Luiten et al., "HOTA: A Higher Order Metric for Evaluating
    Multi-Object Tracking", IJCV 2020), averaged over the localisation thresholds alpha = 0.05 to 0.95.

    ``frames``: per frame, the true ids, the reported ids and their IoU matrix (true x reported).
    Per frame, true and reported boxes are paired to maximise IoU weighted by how much their
    tracks overlap over the whole clip (as the reference implementation, TrackEval, does); a pair
    counts at alpha when its IoU reaches alpha. DetA = TP / (TP + FN + FP); AssA = the mean over
    the TPs of TPA / (TPA + FNA + FPA) of their pair of ids; HOTA = sqrt(DetA * AssA)."""
    from scipy.optimize import linear_sum_assignment  # comes with motmetrics

    gt_index = {i: n for n, i in enumerate(sorted({int(i) for g, _, _ in frames for i in g}))}
    tr_index = {i: n for n, i in enumerate(sorted({int(i) for _, h, _ in frames for i in h}))}
    n_gt, n_tr = len(gt_index), len(tr_index)
    frames = [(np.array([gt_index[int(i)] for i in g], dtype=int), np.array([tr_index[int(i)] for i in h], dtype=int), s)
              for g, h, s in frames]
    # how much each pair of tracks overlaps over the clip, for the matching
    potential, gt_count, tr_count = np.zeros((n_gt, n_tr)), np.zeros(n_gt), np.zeros(n_tr)
    for g, h, sim in frames:
        gt_count[g] += 1
        tr_count[h] += 1
        if sim.size:
            denom = sim.sum(0)[None, :] + sim.sum(1)[:, None] - sim
            potential[np.ix_(g, h)] += np.divide(sim, denom, out=np.zeros_like(sim), where=denom > 1e-10)
    alignment = potential / np.maximum(gt_count[:, None] + tr_count[None, :] - potential, 1e-10)

    alphas = np.array(HOTA_ALPHAS)
    tp, fn, fp = np.zeros(len(alphas)), np.zeros(len(alphas)), np.zeros(len(alphas))
    pair_tp = np.zeros((len(alphas), n_gt, n_tr))
    for g, h, sim in frames:
        if not len(g) or not len(h):
            fn += len(g)
            fp += len(h)
            continue
        rows, cols = linear_sum_assignment(-(alignment[np.ix_(g, h)] * sim))
        for a, alpha in enumerate(alphas):
            ok = sim[rows, cols] >= alpha - 1e-10
            n = int(ok.sum())
            tp[a] += n
            fn[a] += len(g) - n
            fp[a] += len(h) - n
            pair_tp[a, g[rows[ok]], h[cols[ok]]] += 1
    deta = tp / np.maximum(tp + fn + fp, 1)
    assa = np.zeros(len(alphas))
    for a in range(len(alphas)):
        m = pair_tp[a]
        per_pair = m / np.maximum(gt_count[:, None] + tr_count[None, :] - m, 1)
        assa[a] = (m * per_pair).sum() / max(tp[a], 1)
    hota = np.sqrt(deta * assa)
    return float(hota.mean()), float(deta.mean()), float(assa.mean())


# --------------------------------------------------------------------------- running trackers on a clip


def run_tracker(clip: TrackClip, tracker, *, coasting: bool = True) -> list[list[Detection]]:
    """What ``tracker`` (an ``edge_sdk.tracking.tracker.Tracker``) reports per frame of ``clip``:
    the detections it matched, and (``coasting``) the boxes it predicts for the tracks it missed."""
    out = []
    for t, detections in zip(clip.times, clip.detections):
        step = tracker.update(detections, t, threshold=clip.threshold)
        out.append(list(step.tracked) + (list(step.coasting) if coasting else []))
    return out


def bytetrack_reference(*, fps: float, threshold: float, max_lost_s: float = 1.5, min_hits: int = 3):
    """supervision's ByteTrack (the reference the issue names), set up as our tracker's defaults:
    same threshold, same time kept lost, same hits to confirm, same least IoU (0.2). supervision
    0.31 dropped ByteTrack: ``pip install "supervision>=0.26,<0.31"`` (no opencv-python since 0.30)."""
    import warnings

    import supervision

    with warnings.catch_warnings():  # "deprecated since 0.28": it moves to the trackers package (which needs opencv-python)
        warnings.simplefilter("ignore", FutureWarning)
        return supervision.ByteTrack(track_activation_threshold=threshold, lost_track_buffer=int(round(max_lost_s * 30)),
                                     minimum_matching_threshold=0.8, frame_rate=int(round(fps)),
                                     minimum_consecutive_frames=min_hits)


def bytetrack_inputs(detections: Sequence[Detection], size: tuple[int, int] = (640, 480)):
    """One frame's detections as supervision's ``Detections`` (pixels of a ``size`` frame)."""
    import supervision

    if not detections:
        return supervision.Detections.empty()
    w, h = size
    return supervision.Detections(
        xyxy=np.array([(d.box.x1 * w, d.box.y1 * h, d.box.x2 * w, d.box.y2 * h) for d in detections], dtype=float),
        confidence=np.array([d.score for d in detections], dtype=float),
        class_id=np.array([d.class_id for d in detections], dtype=int))


def run_bytetrack(clip: TrackClip, size: tuple[int, int] = (640, 480)) -> list[list[Detection]]:
    """What supervision's ByteTrack reports per frame of ``clip`` (its tracked detections)."""
    tracker = bytetrack_reference(fps=clip.fps, threshold=clip.threshold)
    w, h = size
    out = []
    for detections in clip.detections:
        r = tracker.update_with_detections(bytetrack_inputs(detections, size))
        out.append([Detection(int(c), LABELS[int(c)], float(s), BBox(b[0] / w, b[1] / h, b[2] / w, b[3] / h), track_id=int(i))
                    for b, s, c, i in zip(r.xyxy, r.confidence, r.class_id, r.tracker_id)])
    return out
