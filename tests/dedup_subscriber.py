"""A backend's view of delivery: a durable MQTT 5 subscriber that de-duplicates on (device_id, seq)."""

from __future__ import annotations

import json
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


class DedupSubscriber:
    """Subscribes at QoS 1 with a fixed client id and a session that outlives disconnections, so
    the broker queues for it; keeps every copy of each (device_id, seq) to prove duplicates are
    resends of one message, not new ones."""

    def __init__(self, port: int, pattern: str, *, client_id: str, host: str = "127.0.0.1", session_expiry_s: int = 3600) -> None:
        self.copies: dict[tuple[str, int], list[bytes]] = {}
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, u, flags, rc, props: c.subscribe(pattern, qos=1)
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.1, 0.5)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = session_expiry_s
        self.client.connect(host, port, clean_start=False, properties=props)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            self.close()
            raise TimeoutError(f"subscriber {client_id} did not subscribe to {pattern}")

    def _on_message(self, client, userdata, message) -> None:
        try:
            body = json.loads(message.payload)
            key = (body["device_id"], body["seq"])
        except (ValueError, KeyError, TypeError):
            return  # not an enveloped payload
        with self._lock:
            self.copies.setdefault(key, []).append(bytes(message.payload))

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

    def wait_for(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
