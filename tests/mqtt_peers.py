"""A real MQTT 5 subscriber for tests: durable session, de-duplication by (device, seq), waits with timeouts."""

from __future__ import annotations

import json
import threading
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


class Collector:
    """Subscribes to ``pattern`` and keeps every message; ``durable`` keeps the session across broker restarts."""

    def __init__(
        self, url_port: int, pattern: str = "edge/#", *, durable: bool = False, host: str = "127.0.0.1", client_id: str | None = None,
    ) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self.seen: dict[tuple[str, int], int] = {}
        self._lock = threading.RLock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"collector-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(pattern, qos=1)
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.reconnect_delay_set(0.1, 0.5)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600 if durable else 0
        self.client.connect(host, url_port, clean_start=not durable, properties=props)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError("collector did not subscribe")

    def _on_message(self, client, userdata, message) -> None:
        with self._lock:
            self.messages.append(message)
            try:
                body = json.loads(message.payload)
            except ValueError:
                return
            if isinstance(body, dict) and "seq" in body and "device_id" in body:
                key = (body["device_id"], body["seq"])
                self.seen[key] = self.seen.get(key, 0) + 1

    def payloads(self, suffix: str) -> list[dict]:
        with self._lock:
            return [json.loads(m.payload) for m in self.messages if m.topic.endswith(suffix)]

    def wait_for(self, predicate, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if predicate(self):
                    return True
            time.sleep(0.05)
        with self._lock:
            return predicate(self)

    def seqs(self, suffix: str = "/detections") -> set[int]:
        return {p["seq"] for p in self.payloads(suffix)}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
