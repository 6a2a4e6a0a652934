"""Pytest fixtures for real-broker tests: one test PKI per session, a fresh Mosquitto per test, raw MQTT peers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from mosquitto import HOST, Mosquitto
from pki import Pki, make_pki

# A fleet's ACL. The user name is the device id: the certificate's CN on the TLS listener
# (use_identity_as_username), the login on a password broker. A device writes only what the
# runtime publishes under its own prefix, never a command (cmd/<name>), only the answer to one
# (cmd/<name>/result, and edge-sdk push's per-request reply topics below it), and reads only its
# own commands. The backend (and Home Assistant) reads everything and sends commands.
FLEET_ACL = """\
user backend
topic read edge/#
topic read homeassistant/#
topic write edge/+/cmd/+

pattern write edge/%u/status
pattern write edge/%u/info
pattern write edge/%u/detections
pattern write edge/%u/metrics
pattern write edge/%u/snapshot
pattern write edge/%u/alert
pattern write edge/%u/cmd/+/result/#
pattern write homeassistant/+/%u/+/config
pattern read edge/%u/cmd/+
"""

PASSWORDS = {"cam-1": "cam-1-secret", "cam-2": "cam-2-secret", "backend": "backend-secret"}


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    """CA, server certificate for 127.0.0.1/localhost, clients cam-1, cam-2, backend, expired, foreign."""
    return make_pki(tmp_path_factory.mktemp("pki"))


def _running(broker: Mosquitto) -> Iterator[Mosquitto]:
    with broker:
        yield broker
        # Shown by pytest only when the test failed.
        print(f"--- mosquitto log ({broker.folder}) ---\n{broker.log()[-6000:]}")


@pytest.fixture
def mosquitto(tmp_path) -> Iterator[Mosquitto]:
    """A started broker: plain listener, anonymous clients allowed, no ACL."""
    yield from _running(Mosquitto(tmp_path / "mosquitto"))


@pytest.fixture
def tls_mosquitto(tmp_path, pki) -> Iterator[Mosquitto]:
    """The fleet broker: a TLS listener that requires a client certificate from our CA and takes
    its CN as the user name, FLEET_ACL, no anonymous clients (so the plain listener admits nobody)."""
    broker = Mosquitto(
        tmp_path / "tls-mosquitto", tls=pki, require_certificate=True, use_identity_as_username=True,
        acl=FLEET_ACL, allow_anonymous=False,
    )
    yield from _running(broker)


@pytest.fixture
def password_mosquitto(tmp_path) -> Iterator[Mosquitto]:
    """A plain listener with a password file (PASSWORDS), FLEET_ACL and no anonymous clients."""
    yield from _running(Mosquitto(tmp_path / "password-mosquitto", passwords=PASSWORDS, acl=FLEET_ACL, allow_anonymous=False))


def wait(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


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
        assert wait(lambda: self.connack is not None or self.closed.is_set(), timeout), "no CONNACK and no close"
        return self

    @property
    def online(self) -> bool:
        return self.connack is not None and not self.connack.is_failure and not self.closed.is_set()

    def publish(self, topic: str, payload: bytes = b"{}", qos: int = 1) -> int:
        return self.client.publish(topic, payload, qos=qos).mid

    def subscribe(self, pattern: str, timeout: float = 5.0) -> list:
        _, mid = self.client.subscribe(pattern, qos=1)
        assert wait(lambda: mid in self.granted, timeout), f"no SUBACK for {pattern}"
        return self.granted[mid]

    def ack(self, mid: int, timeout: float = 5.0) -> mqtt.ReasonCode:
        assert wait(lambda: mid in self.acks, timeout), f"no acknowledgement for message {mid}"
        return self.acks[mid]

    def topics(self) -> list[str]:
        return [m.topic for m in list(self.messages)]

    def wait_for(self, topic: str, timeout: float = 5.0) -> bool:
        return wait(lambda: topic in self.topics(), timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def peers():
    """Opens Peers and closes every one of them after the test."""
    opened: list[Peer] = []

    def open_peer(port: int, **kwargs) -> Peer:
        peer = Peer(port, **kwargs)
        opened.append(peer)
        return peer.open()

    yield open_peer
    for peer in opened:
        peer.close()
