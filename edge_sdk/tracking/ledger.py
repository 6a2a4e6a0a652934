"""What a restart must know of the run before: each camera's open tracks, its next track id and
its line totals, in one small JSON file beside the outbox.

A run killed (power, SIGKILL, OOM) never sent the ``end`` of the tracks it had open; the next run
reads them here and ends them with reason ``restart``, carries the line totals on, and gives new
tracks ids the old run never used. The ledger follows the events once they are in the outbox (not
the tracker, which is ahead of them by the results in flight), so the totals a restart carries on
are those of the line events the fleet will receive. The file is rewritten whole (temporary file,
then rename) when a track opens or ends or a line is crossed: a kill leaves the old file or the
new one, never half.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from edge_sdk.results import BBox
from edge_sdk.tracking.values import LineEvent, TrackAction, TrackedObject, TrackEvent

log = logging.getLogger("edge_sdk.tracking")

VERSION = 1


@dataclass(frozen=True)
class CameraRecord:
    open_tracks: tuple[TrackedObject, ...] = ()
    next_id: int = 1
    lines: dict | None = None  # Counts.lines: the line totals the run before published


def _track(data: dict) -> TrackedObject:
    return TrackedObject(
        track_id=int(data["track_id"]), class_id=int(data.get("class_id", -1)), label=str(data["label"]),
        score=float(data["score"]), box=BBox(*(float(v) for v in data["box"])), first_seen=float(data["first_seen"]),
        last_seen=float(data["last_seen"]), stationary=bool(data.get("stationary", False)), matched=False,
    )


class Ledger:
    """The record of what was published: kept from the events themselves, after they are in the
    outbox, so that what a restart ends and carries on matches what the fleet was told."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._cameras: dict[str, dict] = {}

    def load(self) -> dict[str, CameraRecord]:
        """Every camera's record from the file; {} when there is none. A damaged file is set aside
        (the run must start) and said so in the log."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            cameras = data["cameras"] if data.get("version") == VERSION else {}
            records = {
                camera: CameraRecord(open_tracks=tuple(_track(t) for t in entry.get("open", {}).values()),
                                     next_id=int(entry.get("next_id", 1)), lines=entry.get("lines") or None)
                for camera, entry in cameras.items()
            }
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            aside = self.path.with_suffix(".damaged")
            log.warning("the track ledger %s is unreadable (%s); moved to %s, starting afresh", self.path, exc, aside)
            try:
                os.replace(self.path, aside)
            except OSError:
                pass
            return {}
        self._cameras = {camera: {"open": {}, "next_id": r.next_id, "lines": r.lines or {}} for camera, r in records.items()}
        return records

    def apply(self, camera: str, events, *, next_id: int) -> None:
        """Events of ``camera`` now in the outbox: a track opened or ended, a line crossed. Writes
        the file when they change what a restart must know; never raises (a full disk costs the
        restart's knowledge, not the run)."""
        with self._lock:
            entry = self._cameras.setdefault(camera, {"open": {}, "next_id": 1, "lines": {}})
            changed = False
            entry["next_id"] = max(entry["next_id"], next_id)
            for event in events:
                if isinstance(event, TrackEvent) and event.action is TrackAction.NEW:
                    entry["open"][str(event.track.track_id)] = {**event.track.summary(), "class_id": event.track.class_id}
                elif isinstance(event, TrackEvent) and event.action is TrackAction.END:
                    entry["open"].pop(str(event.track.track_id), None)
                elif isinstance(event, LineEvent):
                    by_label = entry["lines"].setdefault(event.line, {}).setdefault(event.direction.value, {})
                    by_label[event.label] = by_label.get(event.label, 0) + 1
                else:
                    continue
                changed = True
            if changed:
                self._write()

    def _write(self) -> None:
        text = json.dumps({"version": VERSION, "cameras": self._cameras}, separators=(",", ":"))
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("could not write the track ledger %s: %s", self.path, exc)
