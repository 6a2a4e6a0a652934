"""Devices without cameras: real publishers and outboxes sending made-up detections and events.

For load-testing a fleet back-end (consumers, a database) without a fleet: each simulated device
is an ordinary :class:`~edge_sdk.mqtt.client.Publisher` with its own outbox, so what reaches the
broker is what a real device sends, through the same durable path. One thread drives them all.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from edge_sdk.mqtt import payloads, topics
from edge_sdk.mqtt.client import Publisher
from edge_sdk.mqtt.settings import MQTTSettings

LABELS = ("person", "car", "bicycle")


@dataclass
class Sent:
    """What one simulated device queued: (seq, topic) per message, and the time of each."""

    keys: list[tuple[int, str]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)


class SimulatedDevice:
    """One device: a publisher whose outbox lives in ``folder``; ``send`` queues one message."""

    def __init__(self, broker: str, device_id: str, folder: Path, *, camera: str = "cam", events_every: int = 4,
                 seed: int = 0, **mqtt: object) -> None:
        self.settings = MQTTSettings(broker=broker, device_id=device_id, outbox={"path": Path(folder) / f"{device_id}.sqlite3"}, **mqtt)
        self.publisher = Publisher(self.settings)
        self.camera, self.events_every = camera, events_every
        self.rng = random.Random(seed)
        self.sent = Sent()
        self.frame = 0

    def start(self) -> SimulatedDevice:
        self.publisher.start()
        return self

    def send(self) -> None:
        """One message: a frame's detections, or every ``events_every``-th time a line crossing."""
        self.frame += 1
        if self.events_every and self.frame % self.events_every == 0:
            kind, schema = topics.EVENTS, payloads.EVENT
            body = {"camera": self.camera, "frame": self.frame, "frame_ts": round(time.time(), 6), "type": "line",
                    "line": "gate", "direction": self.rng.choice(("in", "out")), "track_id": self.frame,
                    "label": self.rng.choice(LABELS)}
        else:
            kind, schema = topics.DETECTIONS, payloads.DETECTIONS
            body = {"camera": self.camera, "frame": self.frame, "frame_ts": round(time.time(), 6), "width": 640, "height": 480,
                    "detections": [self._detection() for _ in range(self.rng.randint(0, 3))]}
        envelope = self.publisher.envelope(schema, body)
        name = topics.camera_name(self.camera, kind)
        self.publisher.publish(name, envelope, qos=1)
        self.sent.keys.append((envelope["seq"], self.publisher.topic(name)))
        self.sent.times.append(envelope["ts"])

    def _detection(self) -> dict:
        x, y = self.rng.random() * 0.8, self.rng.random() * 0.8
        w, h = 0.05 + self.rng.random() * 0.15, 0.05 + self.rng.random() * 0.15
        label = self.rng.randrange(len(LABELS))
        return {"class_id": label, "label": LABELS[label], "score": round(0.3 + 0.7 * self.rng.random(), 5),
                "box": [round(x, 5), round(y, 5), round(x + w, 5), round(y + h, 5)]}

    def close(self, *, flush_timeout: float = 30.0) -> bool:
        """Wait for the broker to acknowledge everything queued; False if some is still pending."""
        flushed = self.publisher.flush(flush_timeout)
        self.publisher.close()
        return flushed


class SimulatedFleet:
    """``count`` devices named ``{prefix}{i:04d}``, each sending ``rate`` messages a second from one thread."""

    def __init__(self, broker: str, folder: Path, *, count: int, rate: float, prefix: str = "sim-", **mqtt: object) -> None:
        if count < 1 or rate <= 0:
            raise ValueError("count must be >= 1 and rate > 0")
        Path(folder).mkdir(parents=True, exist_ok=True)
        self.devices = [SimulatedDevice(broker, f"{prefix}{i:04d}", folder, seed=i, **mqtt) for i in range(count)]
        self.rate = rate
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, *, online_timeout: float = 60.0) -> SimulatedFleet:
        """Connect every device, wait until they are online (so the first messages do not wait for
        a connection), then start sending."""
        for device in self.devices:
            device.start()
        deadline = time.monotonic() + online_timeout
        for device in self.devices:
            device.publisher.wait_online(max(0.0, deadline - time.monotonic()))
        self._thread = threading.Thread(target=self._drive, name="simulated-fleet", daemon=True)
        self._thread.start()
        return self

    def _drive(self) -> None:
        # Each round sends one message per device; rounds are paced to the rate, and a late round
        # is not made up for (the offered load is at most count x rate).
        period, due = 1.0 / self.rate, time.monotonic()
        while not self._stop.is_set():
            for device in self.devices:
                device.send()
            due += period
            self._stop.wait(max(0.0, due - time.monotonic()))
            due = max(due, time.monotonic() - period)

    def stop(self, *, flush_timeout: float = 60.0) -> bool:
        """Stop sending, then wait for every device's outbox to drain; False if one did not."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        deadline = time.monotonic() + flush_timeout
        return all([device.close(flush_timeout=max(0.1, deadline - time.monotonic())) for device in self.devices])

    def sent(self) -> dict[tuple[str, int], float]:
        """Every message queued, ``(device_id, seq) -> ts`` the device stamped."""
        return {(d.publisher.device_id, seq): ts for d in self.devices for (seq, _), ts in zip(d.sent.keys, d.sent.times)}
