"""What ``edge-sdk listen`` shows: the fleet's devices, folded from the messages they publish."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field


@dataclass
class DeviceView:
    device_id: str
    status: str = "?"
    model: str = "?"
    sha256: str = ""
    fps: float | None = None
    latency_p99: float | None = None
    outbox: int | None = None
    detections: int = 0
    events: int = 0
    last_labels: str = ""
    alert: str = ""  # the newest alert: kind and reason
    messages: int = 0
    last_seen: float = field(default_factory=time.time)


class FleetView:
    """Folds (topic, payload) pairs into one row per device; anything unreadable is counted, not fatal."""

    def __init__(self, prefix: str = "edge/") -> None:
        self.prefix = prefix
        self.devices: dict[str, DeviceView] = {}
        self.unreadable = 0

    def feed(self, topic: str, payload: bytes) -> dict | None:
        """Take one message; returns its decoded JSON body (None for snapshots and garbage)."""
        if not topic.startswith(self.prefix):
            return None
        parts = topic[len(self.prefix):].split("/")
        if len(parts) < 2 or not parts[0]:
            return None
        device_id, kind = parts[0], "/".join(parts[1:])
        if len(parts) == 3 and parts[2] in ("detections", "snapshot", "events", "counts"):
            kind = parts[2]  # {device}/{camera}/detections: a message about one of the device's cameras
        view = self.devices.setdefault(device_id, DeviceView(device_id))
        view.messages += 1
        view.last_seen = time.time()
        if kind == "snapshot":
            return None
        try:
            body = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            self.unreadable += 1
            return None
        if not isinstance(body, dict):
            self.unreadable += 1
            return None
        if kind == "status":
            view.status = str(body.get("state", "?"))
        elif kind == "alert":
            view.alert = f"{body.get('kind', '?')}: {body.get('detail', '')}"
        elif kind == "info":
            model = body.get("model") or {}
            view.model, view.sha256 = str(model.get("name", "?")), str(model.get("sha256") or "")
        elif kind == "metrics":
            view.fps, view.latency_p99, view.outbox = body.get("fps"), body.get("latency_ms_p99"), body.get("outbox_depth")
        elif kind == "detections":
            found = body.get("detections") or []
            view.detections += len(found)
            labels = ", ".join(f"{d.get('label')} {d.get('score', 0):.2f}" for d in found[:3] if isinstance(d, dict))
            view.last_labels = f"{parts[1]}: {labels}" if len(parts) == 3 and labels else labels
        elif kind == "events":
            view.events += 1
            what = body.get("line") or body.get("zone") or f"track {body.get('track_id')}"
            view.last_labels = f"{parts[1]}: {body.get('label')} {body.get('direction') or body.get('action')} {what}"
        return body

    def table(self):
        from rich.table import Table

        table = Table(title=f"edge-sdk fleet: {len(self.devices)} device(s)" + (f", {self.unreadable} unreadable" if self.unreadable else ""))
        for column in ("device", "status", "model", "sha256", "fps", "p99 ms", "outbox", "detections", "events", "last", "alert", "seen"):
            table.add_column(column, max_width=48 if column == "alert" else None)
        now = time.time()
        for view in sorted(self.devices.values(), key=lambda v: v.device_id):
            style = {"online": "green", "offline": "red", "degraded": "yellow"}.get(view.status, "")
            table.add_row(
                view.device_id, f"[{style}]{view.status}[/]" if style else view.status, view.model, view.sha256[:12],
                "" if view.fps is None else f"{view.fps:.1f}", "" if view.latency_p99 is None else f"{view.latency_p99:.0f}",
                "" if view.outbox is None else str(view.outbox), str(view.detections), str(view.events), view.last_labels,
                view.alert, f"{now - view.last_seen:.0f} s ago",
            )
        return table
