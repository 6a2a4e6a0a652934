"""One camera's tracks turned into events and counts: lifecycle, zones, lines, stationary objects.

INTERFACE STUB: the implementation is being written; the signatures below are the contract.
"""

from __future__ import annotations

from edge_sdk.tracking.settings import LineSettings, TrackingSettings, ZoneSettings
from edge_sdk.tracking.tracker import TrackerStep
from edge_sdk.tracking.values import Counts, Event, TrackedObject


class Scene:
    """Events and counts of one camera, from its tracker's steps.

    ``counts`` carries line totals over from a run before (zone occupancy always starts at 0).
    """

    def __init__(self, settings: TrackingSettings, *, zones: dict[str, ZoneSettings], lines: dict[str, LineSettings],
                 counts: Counts | None = None) -> None:
        raise NotImplementedError

    @property
    def counts(self) -> Counts:
        raise NotImplementedError

    def update(self, step: TrackerStep, t: float) -> tuple[list[Event], bool]:
        """The events of one frame at time ``t`` (seconds), and whether the counts changed."""
        raise NotImplementedError

    def close(self, t: float, *, reason: str) -> list[Event]:
        """An 'end' (with ``reason``) for every open track, and the zone exits they imply."""
        raise NotImplementedError

    def open_tracks(self) -> list[TrackedObject]:
        """Every confirmed track that has had its 'new' and not yet its 'end'."""
        raise NotImplementedError

    def trails(self) -> dict[int, list[tuple[float, float]]]:
        """Each open track's recent anchor points, oldest first, for drawing."""
        raise NotImplementedError
