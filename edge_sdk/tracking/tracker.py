"""The multi-object tracker: detections in, tracks with persistent ids out (ByteTrack-class).

INTERFACE STUB: the implementation is being written; the signatures below are the contract the
scene (edge_sdk.tracking.scene) and the runtime build on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edge_sdk.results import Detection
from edge_sdk.tracking.settings import TrackingSettings
from edge_sdk.tracking.values import TrackedObject


@dataclass(frozen=True)
class TrackerStep:
    """What one frame did to the tracks."""

    tracked: tuple[Detection, ...]  # detections matched to confirmed tracks this frame, each with its track_id
    confirmed: tuple[TrackedObject, ...]  # every confirmed track alive after this frame (matched=False: coasting)
    started: tuple[TrackedObject, ...]  # confirmed in this frame (their 'new')
    ended: tuple[TrackedObject, ...]  # dropped in this frame: lost past max_lost_s (stationary_keep_s when stationary)


class Tracker:
    """Gives every detection a persistent track id.

    ``first_id`` is the id the next new track gets (a restarted run carries on from the ids it had).
    """

    def __init__(self, settings: TrackingSettings, *, first_id: int = 1) -> None:
        raise NotImplementedError

    @property
    def next_id(self) -> int:
        raise NotImplementedError

    def update(self, detections: Sequence[Detection], t: float, *, threshold: float) -> TrackerStep:
        """One frame's detections (boxed, score >= settings.low_threshold) at time ``t`` (seconds,
        increasing). Detections scoring ``threshold`` or more match first and may start tracks;
        the rest only extend tracks the first pass left unmatched."""
        raise NotImplementedError
