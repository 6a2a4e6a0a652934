"""TLS, passwords and the fleet ACL, each proven with real paho-mqtt 2 connections to a real Mosquitto."""

from __future__ import annotations

import dataclasses
import datetime
import json
import threading
import time

import jsonschema
import paho.mqtt.client as mqtt
import pytest
from cryptography import x509

from edge_sdk.mqtt import payloads
from edge_sdk.mqtt.client import Publisher
from edge_sdk.mqtt.settings import MQTTSettings
from support import HOST
from support import broker as harness
from support import wait
from support.broker import Mosquitto
from support.fixtures import PASSWORDS

NOT_AUTHORIZED = 0x87


# --- TLS ---------------------------------------------------------------------------------------


def test_a_client_with_our_ca_and_its_certificate_connects_as_its_device_id(tls_mosquitto, pki, peers):
    peer = peers(tls_mosquitto.tls_port, tls=pki.paho_tls("cam-1"))
    assert peer.online, (peer.connack, peer.errors)
    assert tls_mosquitto.wait_for_log("u'cam-1'")  # use_identity_as_username: the CN is the user name


def test_the_client_rejects_a_broker_certificate_from_an_unknown_ca(tls_mosquitto, pki, peers):
    peer = peers(tls_mosquitto.tls_port, tls=pki.paho_tls("cam-1", ca=pki.foreign_ca_cert))
    assert peer.connack is None
    assert "CERTIFICATE_VERIFY_FAILED" in peer.errors[0], peer.errors
    assert "New client connected" not in tls_mosquitto.log()


def test_the_client_rejects_a_broker_certificate_made_for_another_host(tmp_path, pki, peers):
    with Mosquitto(tmp_path / "broker", tls=pki.serving_wrong_host()) as broker:
        refused = peers(broker.tls_port, tls=pki.paho_tls())
        assert refused.connack is None
        assert "IP address mismatch" in refused.errors[0], refused.errors
        # The chain is ours and valid: without the host name check the same broker is accepted,
        # so the name was all that was wrong.
        assert peers(broker.tls_port, tls=pki.paho_tls(), check_hostname=False).online


@pytest.mark.parametrize(
    ("certificate", "broker_logs"),
    [
        (None, "peer did not return a certificate"),
        ("expired", "certificate verify failed"),
        ("foreign", "certificate verify failed"),
    ],
    ids=["no certificate", "expired", "from a foreign CA"],
)
def test_the_broker_refuses_a_client_without_a_valid_certificate(tls_mosquitto, pki, peers, certificate, broker_logs):
    peer = peers(tls_mosquitto.tls_port, tls=pki.paho_tls(certificate))
    # With TLS 1.3 the client finishes its handshake before the broker checks the client's
    # certificate, so connect() succeeds and the refusal arrives as a closed connection (an alert
    # or a bare EOF, depending on timing). The broker's log says why.
    assert peer.closed.wait(5) and peer.connack is None, (peer.connack, peer.errors)
    assert tls_mosquitto.wait_for_log(broker_logs)
    assert "New client connected" not in tls_mosquitto.log()


def test_each_bad_client_certificate_is_bad_for_exactly_one_reason(pki):
    """So that the refusals above ("certificate verify failed") can only mean expiry, or the foreign CA."""
    load = lambda path: x509.load_pem_x509_certificate(path.read_bytes())  # noqa: E731
    ca, foreign_ca = load(pki.ca_cert), load(pki.foreign_ca_cert)
    expired, foreign, good = load(pki.client("expired")[0]), load(pki.client("foreign")[0]), load(pki.client("cam-1")[0])
    now = datetime.datetime.now(datetime.timezone.utc)
    for cert in (expired, good):
        cert.verify_directly_issued_by(ca)
    assert expired.not_valid_after_utc < now and good.not_valid_before_utc < now < good.not_valid_after_utc
    foreign.verify_directly_issued_by(foreign_ca)
    with pytest.raises(ValueError):
        foreign.verify_directly_issued_by(ca)
    assert foreign.not_valid_before_utc < now < foreign.not_valid_after_utc
    assert expired.subject == foreign.subject == good.subject  # all three claim to be cam-1
    for name in ("cam-1", "expired", "foreign"):
        assert pki.client(name)[1].stat().st_mode & 0o777 == 0o600
    assert pki.server_key.stat().st_mode & 0o777 == 0o600


# --- passwords ---------------------------------------------------------------------------------


@pytest.mark.parametrize("hasher", ["mosquitto_passwd", "python"])
def test_a_password_file_admits_the_right_password_and_nothing_else(tmp_path, peers, monkeypatch, hasher):
    if hasher == "python":
        monkeypatch.setattr(harness, "MOSQUITTO_PASSWD", None)  # the harness's own "$7$" hashing
    elif harness.MOSQUITTO_PASSWD is None:
        pytest.skip("mosquitto_passwd is not installed")
    with Mosquitto(tmp_path / "broker", passwords=PASSWORDS, allow_anonymous=False) as broker:
        assert peers(broker.port, username="cam-1", password=PASSWORDS["cam-1"]).online
        for username, password, protocol in [
            ("cam-1", "wrong", mqtt.MQTTv5),
            ("cam-1", PASSWORDS["cam-2"], mqtt.MQTTv5),  # another device's password
            ("nobody", "x", mqtt.MQTTv5),
            (None, None, mqtt.MQTTv5),
            ("cam-1", "wrong", mqtt.MQTTv311),
        ]:
            refused = peers(broker.port, username=username, password=password, protocol=protocol)
            assert refused.connack is not None and refused.connack.is_failure, (username, refused.connack, refused.errors)
            # Mosquitto 2.0.11 answers every one of these with "Not authorized" (0x87, or 5 on
            # 3.1.1), never "Bad user name or password" (0x86).
            assert refused.connack.getName() in {"Bad user name or password", "Not authorized"}
            assert not refused.online and refused.closed.wait(5)


# --- the fleet ACL -----------------------------------------------------------------------------

# What cam-1 may write under FLEET_ACL, and what it may not.
CAM_1_WRITES = {
    "edge/cam-1/status": True,
    "edge/cam-1/info": True,
    "edge/cam-1/detections": True,
    "edge/cam-1/metrics": True,
    "edge/cam-1/snapshot": True,
    "edge/cam-1/alert": True,
    "edge/cam-1/cmd/config/result": True,
    "edge/cam-1/cmd/model/result/0123456789ab": True,  # edge-sdk push's per-request reply topic
    "homeassistant/sensor/cam-1/person/config": True,
    "edge/cam-1/cmd/config": False,  # a device never issues commands, not even to itself
    "edge/cam-1/unknown": False,
    "edge/cam-2/detections": False,
    "edge/cam-2/status": False,
    "edge/cam-2/alert": False,
    "edge/cam-2/cmd/config": False,
    "edge/cam-2/cmd/config/result": False,
    "homeassistant/sensor/cam-2/person/config": False,
    "elsewhere/cam-1": False,
}


@pytest.fixture(params=["certificates", "passwords"])
def fleet(request, pki, peers):
    """(connect(device) -> Peer) on the fleet broker, identities from client certificates or passwords."""
    if request.param == "certificates":
        broker = request.getfixturevalue("tls_mosquitto")
        return lambda name, **kw: peers(broker.tls_port, tls=pki.paho_tls(name), **kw)
    broker = request.getfixturevalue("password_mosquitto")
    return lambda name, **kw: peers(broker.port, username=name, password=PASSWORDS[name], **kw)


def test_a_device_writes_only_its_own_topics_and_is_told_when_refused(fleet):
    backend, cam1 = fleet("backend"), fleet("cam-1")
    backend.subscribe("#")
    mids = {topic: cam1.publish(topic, b'{"from": "cam-1"}') for topic in CAM_1_WRITES}
    for topic, allowed in CAM_1_WRITES.items():
        reason = cam1.ack(mids[topic])
        assert reason.is_failure is not allowed, (topic, reason)
        if not allowed:
            assert reason.value == NOT_AUTHORIZED, (topic, reason)
    # Mosquitto handles one connection's packets in order: once this arrives, all of the above has.
    cam1.publish("edge/cam-1/status", b"last")
    assert wait(lambda: any(m.payload == b"last" for m in backend.messages))
    assert set(backend.topics()) == {t for t, allowed in CAM_1_WRITES.items() if allowed}


def test_a_device_reads_only_its_own_commands_whatever_it_subscribes_to(fleet):
    backend, cam1 = fleet("backend"), fleet("cam-1")
    for pattern in ("edge/cam-2/cmd/+", "edge/cam-2/#", "edge/+/detections", "#", "edge/cam-1/cmd/+"):
        cam1.subscribe(pattern)
    # Mosquitto 2.0.11 grants each of those SUBACKs (QoS 1) and applies the read rules to every
    # message it would deliver; so the proof is what arrives, not the SUBACK.
    cam2 = fleet("cam-2")
    cam2.ack(cam2.publish("edge/cam-2/detections"))
    for command in ("edge/cam-2/cmd/config", "edge/cam-2/cmd/model", "edge/cam-1/cmd/config"):
        assert not backend.ack(backend.publish(command)).is_failure  # the backend may command anyone
    # In order, again: cam-2's messages went through the broker before cam-1's command.
    assert cam1.wait_for("edge/cam-1/cmd/config")
    assert set(cam1.topics()) == {"edge/cam-1/cmd/config"}


def test_the_backend_cannot_write_as_a_device(fleet):
    backend = fleet("backend")
    for topic in ("edge/cam-1/detections", "edge/cam-1/cmd/config/result", "edge/cam-1/cmd/config/extra"):
        assert backend.ack(backend.publish(topic)).value == NOT_AUTHORIZED, topic


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, digits):
    from support.reliability.scenarios import small_bundle

    return small_bundle(digits, tmp_path_factory.mktemp("acl-bundle"))


@pytest.mark.slow
def test_a_devices_real_alert_passes_the_fleet_acl_and_another_devices_alert_topic_does_not(password_mosquitto, peers, tmp_path, bundle):
    from edge_sdk.config import RunConfig
    from edge_sdk.runtime import Runtime

    backend = peers(password_mosquitto.port, username="backend", password=PASSWORDS["backend"])
    backend.subscribe("edge/#")
    outbox = tmp_path / "outbox.sqlite3"
    outbox.write_bytes(b"this is not an SQLite database" * 100)  # damaged: quarantined at start, with an alert
    settings = MQTTSettings(
        broker=f"mqtt://{HOST}:{password_mosquitto.port}", device_id="cam-1", username="cam-1", password=PASSWORDS["cam-1"],
        outbox={"path": str(outbox)}, reconnect_min_s=0.1, reconnect_max_s=0.5,
    )
    runtime = Runtime(bundle, RunConfig(source="not-run.mp4", mqtt=settings)).open()  # the alert goes out as the link starts
    try:
        assert wait(lambda: "edge/cam-1/alert" in backend.topics(), 20), backend.topics()
        alert = next(m for m in backend.messages if m.topic == "edge/cam-1/alert")
        body = json.loads(alert.payload)
        jsonschema.validate(body, payloads.schema("alert"))
        assert body["kind"] == "outbox-quarantined" and body["device_id"] == "cam-1", body
    finally:
        runtime.close()
    cam1 = peers(password_mosquitto.port, username="cam-1", password=PASSWORDS["cam-1"])
    assert cam1.ack(cam1.publish("edge/cam-2/alert", b'{"kind": "forged"}')).value == NOT_AUTHORIZED
    cam1.publish("edge/cam-1/status", b"last")
    assert wait(lambda: any(m.payload == b"last" for m in backend.messages))
    assert "edge/cam-2/alert" not in backend.topics()


def test_on_mqtt_311_a_publish_denied_by_the_acl_is_acknowledged_as_a_success(password_mosquitto, peers):
    """The fact the outbox design relies on MQTT 5 for: 3.1.1 has no reason code in a PUBACK, and
    Mosquitto acknowledges the denied message like any other, then drops it."""
    backend = peers(password_mosquitto.port, username="backend", password=PASSWORDS["backend"])
    backend.subscribe("edge/#")
    old = peers(password_mosquitto.port, username="cam-1", password=PASSWORDS["cam-1"], protocol=mqtt.MQTTv311)
    assert old.online
    denied, own = old.publish("edge/cam-2/detections"), old.publish("edge/cam-1/detections")
    assert not old.ack(denied).is_failure  # "success"...
    assert not old.ack(own).is_failure
    assert backend.wait_for("edge/cam-1/detections")
    assert "edge/cam-2/detections" not in backend.topics()  # ...for a message nobody receives


def test_on_mqtt_5_with_qos_2_paho_reports_a_denied_publish_as_a_success(password_mosquitto, peers):
    """Mosquitto answers a denied QoS 2 publish with PUBREC 0x87; paho 2 ignores the PUBREC's
    reason, sends PUBREL, and reports the PUBCOMP's "Success". Only QoS 1 tells a refusal apart."""
    backend = peers(password_mosquitto.port, username="backend", password=PASSWORDS["backend"])
    backend.subscribe("edge/#")
    cam1 = peers(password_mosquitto.port, username="cam-1", password=PASSWORDS["cam-1"])
    denied, own = cam1.publish("edge/cam-2/detections", qos=2), cam1.publish("edge/cam-1/detections", qos=2)
    assert cam1.ack(denied).getName() == "Success"
    assert cam1.ack(own).getName() == "Success"
    assert backend.wait_for("edge/cam-1/detections")
    assert "edge/cam-2/detections" not in backend.topics()


# --- through our Publisher ---------------------------------------------------------------------


def device(port: int, pki, tmp_path, name: str = "cam-1", *, cert: str | None = None, ca=None) -> Publisher:
    cert_file, key_file = pki.client(cert or name)
    settings = MQTTSettings(
        broker=f"mqtts://{HOST}:{port}", device_id=name,
        tls={"ca_file": str(ca or pki.ca_cert), "cert_file": str(cert_file), "key_file": str(key_file)},
        outbox={"path": str(tmp_path / f"{name}-{cert}.sqlite3")}, reconnect_min_s=0.2, reconnect_max_s=0.5,
    )
    return Publisher(settings).start()


def test_a_device_with_its_certificate_publishes_over_tls(tls_mosquitto, pki, peers, tmp_path):
    backend = peers(tls_mosquitto.tls_port, tls=pki.paho_tls("backend"))
    backend.subscribe("edge/#")
    publisher = device(tls_mosquitto.tls_port, pki, tmp_path)
    try:
        assert publisher.wait_online(10), publisher.last_error
        publisher.publish("detections", publisher.envelope(payloads.DETECTIONS, {"camera": "main", "frame": 0, "frame_ts": 0, "width": 1, "height": 1, "detections": []}))
        assert publisher.flush(10)
        assert backend.wait_for("edge/cam-1/detections")
    finally:
        publisher.close()


@pytest.mark.parametrize(
    ("case", "error"),
    [("unknown CA", "certificate"), ("wrong host", "match"), ("expired", ""), ("foreign", "")],
)
def test_bad_certificates_never_get_online(tmp_path, pki, case, error):
    served = pki.serving_wrong_host() if case == "wrong host" else pki
    with Mosquitto(tmp_path / "broker", tls=served, require_certificate=True, use_identity_as_username=True, allow_anonymous=False) as broker:
        ca = pki.foreign_ca_cert if case == "unknown CA" else None
        cert = case if case in ("expired", "foreign") else None
        publisher = device(broker.tls_port, pki, tmp_path, cert=cert, ca=ca)
        try:
            assert wait(lambda: publisher.last_error is not None), case
            assert error in publisher.last_error, publisher.last_error
            assert not publisher.wait_online(1), case  # several reconnects later, still refused
        finally:
            publisher.close()


def test_turning_certificate_checks_off_warns_loudly(tmp_path, pki, capfd):
    with Mosquitto(tmp_path / "broker", tls=pki.serving_wrong_host()) as broker:
        settings = MQTTSettings(broker=broker.tls_url, device_id="cam-1", tls={"insecure": True},
                                outbox={"path": str(tmp_path / "o.sqlite3")})
        publisher = Publisher(settings).start()
        try:
            assert publisher.wait_online(10), publisher.last_error
        finally:
            publisher.close()
    assert "TLS certificate checks are OFF" in capfd.readouterr().err


# --- the harness itself ------------------------------------------------------------------------


def test_the_broker_started_as_root_reads_its_keys_and_keeps_its_persistence(tmp_path, pki, peers):
    """Dropped to user 'mosquitto' it could read neither the 0600 server key nor pytest's 0700
    folders; a graceful stop must write the database and a restart keep the ports and the queue."""
    broker = Mosquitto(tmp_path / "broker", tls=pki, max_inflight_messages=7).start()
    try:
        ports = (broker.port, broker.tls_port)
        over_tls = peers(broker.tls_port, tls=pki.paho_tls())
        assert over_tls.online and over_tls.connack_properties.ReceiveMaximum == 7  # max_inflight_messages
        durable = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fleet", protocol=mqtt.MQTTv311, clean_session=False)
        got: list[bytes] = []
        subscribed = threading.Event()
        durable.on_message = lambda c, u, m: got.append(m.payload)
        durable.on_subscribe = lambda *args: subscribed.set()
        durable.connect(HOST, broker.port)
        durable.loop_start()
        durable.subscribe("edge/#", qos=1)
        assert subscribed.wait(5)
        durable.disconnect()
        durable.loop_stop()
        cam1 = peers(broker.port)
        assert not cam1.ack(cam1.publish("edge/cam-1/detections", b"queued")).is_failure
        broker.restart()
        assert (broker.port, broker.tls_port) == ports
        assert (broker.data / "mosquitto.db").exists()
        assert "Permission denied" not in broker.log() and "Error saving" not in broker.log(), broker.log()
        durable.connect(HOST, broker.port)
        durable.loop_start()
        try:
            assert wait(lambda: got == [b"queued"]), got
        finally:
            durable.disconnect()
            durable.loop_stop()
    finally:
        broker.stop()


def test_a_broker_that_cannot_start_fails_fast_with_its_log(tmp_path, pki):
    broken = dataclasses.replace(pki, server_key=tmp_path / "missing.key")
    broker = Mosquitto(tmp_path / "broker", tls=broken)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="Unable to load"):
        broker.start(timeout=10)
    assert time.monotonic() - started < 3
    assert not broker.running


def test_no_password_reaches_a_log_an_error_or_the_stats(password_mosquitto, tmp_path, caplog, monkeypatch):
    """A refused password (so errors get logged), one in the URL and one from the environment."""
    import logging

    caplog.set_level(logging.DEBUG)
    wrong = "wrong-but-still-secret-7f3a"
    url_secret = "url-secret-91c2"
    monkeypatch.setenv("EDGE_SDK_MQTT_PASSWORD", wrong)
    settings = MQTTSettings(broker=f"mqtt://{HOST}:{password_mosquitto.port}", device_id="cam-1", username="cam-1",
                            outbox={"path": tmp_path / "outbox.sqlite3"}, reconnect_min_s=0.1, reconnect_max_s=0.2)
    publisher = Publisher(settings)
    publisher.start()
    try:
        assert wait(lambda: publisher.stats().connect_attempts >= 3, timeout=10)
        seen = [caplog.text, repr(publisher.stats()), str(publisher.last_error), repr(settings)]
    finally:
        publisher.close()
    in_url = MQTTSettings(broker=f"mqtt://cam-1:{url_secret}@{HOST}:{password_mosquitto.port}", device_id="cam-1")
    seen += [in_url.redacted_broker(), repr(in_url)]
    assert publisher.last_error  # the refusal was reported...
    for text in seen:  # ...without the secret
        assert wrong not in text and url_secret not in text and "cam-1-secret" not in text
