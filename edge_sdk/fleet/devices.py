"""The devices a broker has seen, from their retained ``info`` and ``status``: what each runs, since when."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class SeenDevice:
    """One device as its newest retained messages describe it."""

    id: str
    status: str | None = None  # online, offline, degraded; None before its status was seen
    model: str | None = None  # the model's name
    sha256: str | None = None  # the model file's sha256
    version: int | None = None  # the installed update's signed version; None: the bundle it was started with
    update: dict | None = None  # its last model update: {state, version, sha256, detail, ts}
    last_seen: float | None = None  # the device's newest timestamp on info or status

    def to_json(self) -> dict:
        return {"device": self.id, "status": self.status, "model": self.model, "sha256": self.sha256,
                "version": self.version, "update": self.update, "last_seen": self.last_seen}


class FleetWatch:
    """Keeps each device's newest ``info`` and ``status`` as messages are fed to it (thread-safe).

    Topics are ``{root}/{device}/info`` and ``{root}/{device}/status``; anything else is ignored.
    ``on_change`` is told the device id after each change, from the feeding thread.
    """

    def __init__(self, root: str = "edge") -> None:
        self.root = root.rstrip("/")
        self._devices: dict[str, SeenDevice] = {}
        self._lock = threading.Lock()
        self.changed = threading.Condition(self._lock)

    def subscriptions(self) -> list[str]:
        return [f"{self.root}/+/info", f"{self.root}/+/status"]

    def feed(self, topic: str, payload: bytes) -> str | None:
        """Take one message; returns the device it was about, or None when it was not info or status."""
        parts = topic.split("/")
        if len(parts) != len(self.root.split("/")) + 2 or "/".join(parts[:-2]) != self.root or parts[-1] not in ("info", "status"):
            return None
        device, kind = parts[-2], parts[-1]
        try:
            body = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(body, dict):
            return None
        with self._lock:
            seen = self._devices.get(device, SeenDevice(device))
            ts = body.get("ts") if isinstance(body.get("ts"), (int, float)) else None
            last = max(t for t in (seen.last_seen, ts, 0.0) if t is not None) or None
            if kind == "status":
                seen = SeenDevice(device, body.get("state"), seen.model, seen.sha256, seen.version, seen.update, last)
            else:
                model = body.get("model") if isinstance(body.get("model"), dict) else {}
                update = body.get("update") if isinstance(body.get("update"), dict) else None
                seen = SeenDevice(device, seen.status, model.get("name"), model.get("sha256"), model.get("version"), update, last)
            self._devices[device] = seen
            self.changed.notify_all()
        return device

    def get(self, device: str) -> SeenDevice | None:
        with self._lock:
            return self._devices.get(device)

    def devices(self) -> dict[str, SeenDevice]:
        with self._lock:
            return dict(sorted(self._devices.items()))


def retained(settings, filters: list[str], handle, *, wait: float, only_retained: bool = False) -> None:
    """Subscribe to ``filters`` on a short connection of its own and hand ``handle(topic, payload)``
    what arrives for ``wait`` seconds (retained messages come at once; the wait bounds a slow broker)."""
    import uuid

    from edge_sdk.mqtt.push import connect

    client = connect(settings, client_id=f"edge-sdk-fleet-{uuid.uuid4().hex[:8]}")
    subscribed = threading.Event()
    try:
        client.on_message = lambda c, u, m: None if only_retained and not m.retain else handle(m.topic, bytes(m.payload))
        client.on_subscribe = lambda *a: subscribed.set()
        client.subscribe([(topic, 1) for topic in filters])
        subscribed.wait(10)
        time.sleep(max(0.0, wait))
    finally:
        client.loop_stop()
        client.disconnect()


def discover(settings, *, root: str = "edge", wait: float = 2.0) -> dict[str, SeenDevice]:
    """Every device whose retained info or status the broker holds, after listening ``wait`` seconds."""
    watch = FleetWatch(root)
    retained(settings, watch.subscriptions(), watch.feed, wait=wait)
    return watch.devices()
