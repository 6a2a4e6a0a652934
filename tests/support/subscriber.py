"""A backend's view of delivery: an MQTT 5 subscriber that keeps every message and de-duplicates on (device_id, seq)."""

from __future__ import annotations

import json
import threading
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from support import HOST, wait


DURABLE_SESSION_S = 3600


class Subscriber:
    """Subscribes to ``pattern`` at QoS 1 and keeps, under one lock:

    - ``messages``: every message, as paho delivered it (retained ones and resends included);
    - every copy of each enveloped payload by its ``(device_id, seq)``, to prove duplicates are
      byte-identical resends of one message, not new ones (``keys``, ``unique``, ``duplicates``,
      ``altered``, ``bodies``);
    - each key's first copy, decoded, with when it arrived (``timeline``, ``arrivals``).

    ``durable`` keeps the session (an hour) across disconnections and broker restarts, so the broker
    queues for it; give it a fixed ``client_id`` to come back to the same session.
    """

    def __init__(self, port: int, pattern: str = "edge/#", *, client_id: str | None = None, durable: bool = False,
                 host: str = HOST) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self.copies: dict[tuple[str, int], list[bytes]] = {}
        self.first_copies: list[tuple[float, float, dict]] = []  # (time.time(), time.monotonic(), body), in arrival order
        self._lock = threading.RLock()
        self._subscribed = threading.Event()
        client_id = client_id or f"subscriber-{uuid.uuid4().hex[:8]}"
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, u, flags, rc, props: c.subscribe(pattern, qos=1)
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.1, 0.5)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = DURABLE_SESSION_S if durable else 0
        self.client.connect(host, port, clean_start=not durable, properties=props)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            self.close()
            raise TimeoutError(f"subscriber {client_id} did not subscribe to {pattern}")

    def _on_message(self, client, userdata, message) -> None:
        wall, mono = time.time(), time.monotonic()
        with self._lock:
            self.messages.append(message)
            try:
                body = json.loads(message.payload)
                key = (body["device_id"], body["seq"])
                copies = self.copies.setdefault(key, [])
            except (ValueError, KeyError, TypeError):
                return  # not an enveloped payload
            copies.append(bytes(message.payload))
            if len(copies) == 1:
                self.first_copies.append((wall, mono, body))

    # -- every message --------------------------------------------------------------------------
    def payloads(self, suffix: str) -> list[dict]:
        """Every message (each copy) on a topic ending in ``suffix``, decoded, in arrival order."""
        with self._lock:
            return [json.loads(m.payload) for m in self.messages if m.topic.endswith(suffix)]

    def seqs(self, suffix: str = "/detections") -> set[int]:
        return {p["seq"] for p in self.payloads(suffix)}

    # -- one per (device_id, seq) ---------------------------------------------------------------
    def keys(self) -> set[tuple[str, int]]:
        with self._lock:
            return set(self.copies)

    @property
    def unique(self) -> int:
        with self._lock:
            return len(self.copies)

    @property
    def duplicates(self) -> int:
        """Copies beyond the first, over all messages."""
        with self._lock:
            return sum(len(c) - 1 for c in self.copies.values())

    def altered(self) -> list[tuple[str, int]]:
        """Keys whose copies differ: a duplicate that is not a byte-identical resend."""
        with self._lock:
            return [key for key, copies in self.copies.items() if len(set(copies)) > 1]

    def bodies(self) -> list[dict]:
        """One decoded body per key."""
        with self._lock:
            return [json.loads(copies[0]) for copies in self.copies.values()]

    def timeline(self, schema: str) -> list[tuple[float, float, dict]]:
        """(wall, monotonic, body) of each key's first copy of ``schema``, in arrival order."""
        with self._lock:
            return [entry for entry in self.first_copies if entry[2].get("schema") == schema]

    @property
    def arrivals(self) -> list[float]:
        """``time.monotonic()`` of each key's first copy, in arrival order."""
        with self._lock:
            return [mono for _, mono, _ in self.first_copies]

    # -- waiting and closing --------------------------------------------------------------------
    def wait_for(self, predicate, timeout: float = 20.0) -> bool:
        """Whether ``predicate(self)``, asked with no message arriving in between, came true in time."""
        def holds():
            with self._lock:
                return predicate(self)

        return bool(wait(holds, timeout, step=0.05))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
