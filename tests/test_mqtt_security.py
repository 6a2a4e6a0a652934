"""TLS, passwords and per-device ACLs, each proven with real connections to a real Mosquitto."""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt
import pytest
from mosquitto import Mosquitto
from pki import make_pki

from edge_sdk.mqtt import payloads
from edge_sdk.mqtt.client import Publisher
from edge_sdk.mqtt.settings import MQTTSettings

# A fleet's ACL: with client certificates the user name is the certificate's CN (the device id).
# A device writes only under its own prefix and reads only its own commands; the backend reads
# everything and sends commands.
FLEET_ACL = """\
user backend
topic read edge/#
topic write edge/+/cmd/#

pattern write edge/%u/status
pattern write edge/%u/info
pattern write edge/%u/detections
pattern write edge/%u/metrics
pattern write edge/%u/snapshot
pattern write edge/%u/cmd/+/result
pattern read edge/%u/cmd/+
"""


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def fleet_broker(tmp_path, pki):
    tls = {"cafile": pki.ca_cert, "certfile": pki.server_cert, "keyfile": pki.server_key,
           "require_certificate": True, "use_identity_as_username": True}
    with Mosquitto(tmp_path / "broker", tls=tls, acl=FLEET_ACL, allow_anonymous=False) as broker:
        yield broker


def device(broker, pki, tmp_path, name="cam-1", *, cert=None, ca=None, insecure=False, port=None) -> Publisher:
    cert_file, key_file = pki.client(cert or name)
    settings = MQTTSettings(
        broker=f"mqtts://127.0.0.1:{port or broker.tls_port}", device_id=name,
        tls={"ca_file": str(ca or pki.ca_cert), "cert_file": str(cert_file), "key_file": str(key_file), "insecure": insecure},
        outbox={"path": str(tmp_path / f"{name}-{cert}.sqlite3")}, reconnect_min_s=0.2, reconnect_max_s=0.5,
    )
    return Publisher(settings).start()


def backend(broker, pki, pattern="edge/#") -> tuple[mqtt.Client, list]:
    received: list = []
    subscribed = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    cert, key = pki.client("backend")
    client.tls_set(ca_certs=str(pki.ca_cert), certfile=str(cert), keyfile=str(key))
    client.on_message = lambda c, u, m: received.append(m)
    client.on_subscribe = lambda c, u, mid, codes, props: subscribed.set()
    client.connect("127.0.0.1", broker.tls_port)
    client.subscribe(pattern, qos=1)
    client.loop_start()
    assert subscribed.wait(10)
    return client, received


def wait(predicate, timeout=10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_a_device_with_its_certificate_publishes_over_tls(fleet_broker, pki, tmp_path):
    client, received = backend(fleet_broker, pki)
    publisher = device(fleet_broker, pki, tmp_path)
    try:
        assert publisher.wait_online(10), publisher.last_error
        publisher.publish("detections", publisher.envelope(payloads.DETECTIONS, {"frame": 0, "frame_ts": 0, "width": 1, "height": 1, "detections": []}))
        assert publisher.flush(10)
        assert wait(lambda: any(m.topic == "edge/cam-1/detections" for m in received))
    finally:
        publisher.close()
        client.loop_stop()


@pytest.mark.parametrize(
    ("case", "kwargs", "error"),
    [
        ("unknown CA", {"ca": "foreign"}, "certificate"),
        ("wrong host", {"port": "wrong-host"}, "match"),
        ("expired client certificate", {"cert": "expired"}, ""),
        ("client certificate from a foreign CA", {"cert": "foreign"}, ""),
    ],
)
def test_bad_certificates_never_get_online(tmp_path, pki, case, kwargs, error):
    tls = {"cafile": pki.ca_cert, "certfile": pki.server_cert, "keyfile": pki.server_key, "require_certificate": True,
           "use_identity_as_username": True}
    if kwargs.get("port") == "wrong-host":
        tls.update(certfile=pki.wrong_host_cert, keyfile=pki.wrong_host_key)
    with Mosquitto(tmp_path / "broker", tls=tls, allow_anonymous=False) as broker:
        ca = pki.foreign_ca_cert if kwargs.get("ca") == "foreign" else None
        publisher = device(broker, pki, tmp_path, cert=kwargs.get("cert"), ca=ca)
        try:
            assert not publisher.wait_online(3), case
            assert wait(lambda: publisher.last_error is not None)
            assert error in publisher.last_error, publisher.last_error
        finally:
            publisher.close()


def test_a_client_without_a_certificate_is_refused(fleet_broker, pki):
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.tls_set(ca_certs=str(pki.ca_cert))
    with pytest.raises(OSError):  # the TLS handshake fails: the broker requires a certificate
        client.connect("127.0.0.1", fleet_broker.tls_port)
        for _ in range(50):
            if client.loop(0.1) != 0:
                raise ConnectionError("closed by the broker")


def test_turning_certificate_checks_off_warns_loudly(tmp_path, pki, capfd):
    tls = {"cafile": pki.ca_cert, "certfile": pki.wrong_host_cert, "keyfile": pki.wrong_host_key}
    with Mosquitto(tmp_path / "broker", tls=tls) as broker:
        settings = MQTTSettings(broker=broker.tls_url, device_id="cam-1", tls={"insecure": True},
                                outbox={"path": str(tmp_path / "o.sqlite3")})
        publisher = Publisher(settings).start()
        try:
            assert publisher.wait_online(10), publisher.last_error
        finally:
            publisher.close()
    assert "TLS certificate checks are OFF" in capfd.readouterr().err


def test_under_the_fleet_acl_a_device_cannot_touch_another_devices_topics(fleet_broker, pki, tmp_path):
    client, received = backend(fleet_broker, pki)
    intruder = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    cert, key = pki.client("cam-1")
    intruder.tls_set(ca_certs=str(pki.ca_cert), certfile=str(cert), keyfile=str(key))
    acks, granted, got = {}, [], []
    intruder.on_publish = lambda c, u, mid, rc, props: acks.__setitem__(mid, rc)
    intruder.on_subscribe = lambda c, u, mid, codes, props: granted.extend(codes)
    intruder.on_message = lambda c, u, m: got.append(m)
    intruder.connect("127.0.0.1", fleet_broker.tls_port)
    intruder.loop_start()
    try:
        forged = intruder.publish("edge/cam-2/detections", b'{"forged": true}', qos=1)
        own = intruder.publish("edge/cam-1/detections", b'{"own": true}', qos=1)
        intruder.subscribe("edge/cam-2/cmd/+", qos=1)
        intruder.subscribe("edge/cam-1/cmd/+", qos=1)
        assert wait(lambda: forged.mid in acks and own.mid in acks and len(granted) == 2)
        assert acks[forged.mid].is_failure and acks[forged.mid].value == 0x87  # Not authorized
        assert not acks[own.mid].is_failure
        # Mosquitto 2.0 grants the SUBACK and applies the read ACL to each delivery instead, so
        # the proof is that cam-2's command never reaches cam-1.
        client.publish("edge/cam-2/cmd/config", b"{}", qos=1)  # the backend commands cam-2...
        client.publish("edge/cam-1/cmd/config", b"{}", qos=1)  # ...and cam-1
        assert wait(lambda: any(m.topic == "edge/cam-1/detections" for m in received))
        assert wait(lambda: got)
        time.sleep(0.5)
        assert not any(m.topic == "edge/cam-2/detections" for m in received)
        assert [m.topic for m in got] == ["edge/cam-1/cmd/config"]
    finally:
        intruder.loop_stop()
        client.loop_stop()


def test_on_mqtt_311_a_denied_publish_is_acknowledged_anyway(tmp_path):
    """Why the outbox needs MQTT 5: on 3.1.1 the broker acks a publish its ACL dropped."""
    acl = "user cam-1\ntopic write edge/cam-1/#\nuser backend\ntopic read edge/#\n"
    with Mosquitto(tmp_path / "broker", passwords={"cam-1": "a", "backend": "b"}, acl=acl, allow_anonymous=False) as broker:
        watcher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        watcher.username_pw_set("backend", "b")
        seen = []
        watcher.on_message = lambda c, u, m: seen.append(m.topic)
        watcher.connect("127.0.0.1", broker.port)
        watcher.subscribe("edge/#", qos=1)
        watcher.loop_start()
        old = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        old.username_pw_set("cam-1", "a")
        acks = []
        old.on_publish = lambda c, u, mid, rc, props: acks.append(rc)
        old.connect("127.0.0.1", broker.port)
        old.loop_start()
        try:
            time.sleep(0.3)
            old.publish("edge/cam-2/detections", b"x", qos=1)
            assert wait(lambda: acks)
            assert not acks[0].is_failure  # "success"...
            time.sleep(0.5)
            assert "edge/cam-2/detections" not in seen  # ...for a message nobody receives
        finally:
            old.loop_stop()
            watcher.loop_stop()
