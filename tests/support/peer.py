"""A raw MQTT peer for the security tests: records every answer of the broker, never reconnects."""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt

from support import HOST, wait


class Peer:
    """A paho-mqtt 2 client that records what the broker answered: the CONNACK, each PUBACK and
    SUBACK by message id, every message, and the error that ended the connection. Never reconnects."""

    def __init__(self, port: int, *, tls: dict | None = None, username: str | None = None, password: str | None = None,
                 protocol: int = mqtt.MQTTv5, check_hostname: bool = True) -> None:
        self.port = port
        self.connack = None
        self.connack_properties = None
        self.errors: list[str] = []
        self.closed = threading.Event()
        self.acks: dict[int, mqtt.ReasonCode] = {}
        self.granted: dict[int, list] = {}
        self.messages: list[mqtt.MQTTMessage] = []
        self.client = client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=protocol, reconnect_on_failure=False)
        if tls is not None:
            client.tls_set(**tls)
            client.tls_insecure_set(not check_hostname)
        if username is not None:
            client.username_pw_set(username, password)
        client.on_connect = self._on_connect
        client.on_disconnect = lambda c, u, flags, reason, props: self.closed.set()
        client.on_publish = lambda c, u, mid, reason, props: self.acks.__setitem__(mid, reason)
        client.on_subscribe = lambda c, u, mid, reasons, props: self.granted.__setitem__(mid, reasons)
        client.on_message = lambda c, u, message: self.messages.append(message)
        client.on_log = lambda c, u, level, text: self.errors.append(text) if level == mqtt.MQTT_LOG_ERR else None

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        self.connack_properties = properties
        self.connack = reason

    def open(self, timeout: float = 5.0) -> Peer:
        """Connect and wait for the CONNACK or the end of the connection; a refusal is recorded, not raised."""
        try:
            self.client.connect(HOST, self.port)
        except OSError as exc:  # ssl.SSLError included: the client refused the broker's certificate
            self.errors.append(f"{type(exc).__name__}: {exc}")
            self.closed.set()
            return self
        self.client.loop_start()
        wait(lambda: self.connack is not None or self.closed.is_set(), timeout, what="a CONNACK or the end of the connection")
        return self

    @property
    def online(self) -> bool:
        return self.connack is not None and not self.connack.is_failure and not self.closed.is_set()

    def publish(self, topic: str, payload: bytes = b"{}", qos: int = 1) -> int:
        return self.client.publish(topic, payload, qos=qos).mid

    def subscribe(self, pattern: str, timeout: float = 5.0) -> list:
        _, mid = self.client.subscribe(pattern, qos=1)
        wait(lambda: mid in self.granted, timeout, what=f"the SUBACK for {pattern}")
        return self.granted[mid]

    def ack(self, mid: int, timeout: float = 5.0) -> mqtt.ReasonCode:
        wait(lambda: mid in self.acks, timeout, what=f"the acknowledgement of message {mid}")
        return self.acks[mid]

    def topics(self) -> list[str]:
        return [m.topic for m in list(self.messages)]

    def wait_for(self, topic: str, timeout: float = 5.0) -> bool:
        return bool(wait(lambda: topic in self.topics(), timeout))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
