"""MQTT settings, topics and the reconnect delay: pure logic, no broker."""

from __future__ import annotations

import random

import pytest

from edge_sdk.config import load_config
from edge_sdk.errors import ConfigError
from edge_sdk.mqtt import topics
from edge_sdk.mqtt.client import Backoff
from edge_sdk.mqtt.settings import MQTTSettings


@pytest.mark.parametrize("device_id", ["a+b", "a#", "site/cam1", "cam\x00", "cam\n1", "$SYS", "", " "])
def test_device_ids_that_would_widen_topic_patterns_are_refused(device_id):
    with pytest.raises(ConfigError):
        topics.check_device_id(device_id)
    with pytest.raises(ConfigError, match="device_id"):
        load_config(None, broker="mqtt://127.0.0.1", device_id=device_id)


def test_topics_come_from_one_prefix():
    assert topics.topic("cam-1", "detections") == "edge/cam-1/detections"
    assert topics.topic("cam-1", "status", prefix="site7/{device_id}") == "site7/cam-1/status"
    assert topics.command_name("edge/cam-1/cmd/config", "cam-1") == "config"
    assert topics.command_name("edge/cam-2/cmd/config", "cam-1") is None
    assert topics.command_name("edge/cam-1/cmd/config/result", "cam-1") is None
    with pytest.raises(ConfigError, match="wildcards"):
        topics.topic("cam-1", "status", prefix="edge/+/")


@pytest.mark.parametrize(
    ("url", "host", "port", "transport", "tls"),
    [
        ("mqtt://broker.local", "broker.local", 1883, "tcp", False),
        ("mqtts://broker.local", "broker.local", 8883, "tcp", True),
        ("ws://10.0.0.2:9001/mqtt", "10.0.0.2", 9001, "websockets", False),
        ("wss://iot.example.com", "iot.example.com", 443, "websockets", True),
    ],
)
def test_broker_urls(url, host, port, transport, tls):
    s = MQTTSettings(broker=url, device_id="d")
    assert (s.host, s.port, s.transport, s.uses_tls) == (host, port, transport, tls)


@pytest.mark.parametrize("url", ["http://x", "mqtt://", "mqtt://host:99999", "broker:1883"])
def test_bad_broker_urls_are_one_line_errors(url):
    with pytest.raises(ConfigError, match="broker"):
        load_config(None, broker=url, device_id="d")


def test_passwords_come_from_options_file_or_environment_and_never_show(tmp_path, monkeypatch):
    secret = "s3cr3t-Pa55"
    monkeypatch.setenv("EDGE_SDK_MQTT_PASSWORD", secret)
    s = MQTTSettings(broker="mqtt://h", device_id="d", username="dev")
    assert s.credentials() == ("dev", secret)
    (tmp_path / "pw").write_text("from-file\n")
    s = MQTTSettings(broker="mqtt://h", device_id="d", username="dev", password_file=tmp_path / "pw")
    assert s.credentials() == ("dev", "from-file")
    s = MQTTSettings(broker=f"mqtt://dev:{secret}@h:1883", device_id="d")
    assert s.credentials() == ("dev", secret)
    assert secret not in s.redacted_broker()
    s = MQTTSettings(broker="mqtt://h", device_id="d", password=secret)
    assert secret not in repr(s) and secret not in s.model_dump_json()
    with pytest.raises(ConfigError, match="password file"):
        MQTTSettings(broker="mqtt://h", device_id="d", password_file=tmp_path / "missing").credentials()


def test_config_file_mqtt_section_and_flags_merge(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("source: 0\nmqtt:\n  broker: mqtt://h:1884\n  device_id: cam-a\n  qos: {detections: 0}\n")
    config = load_config(path, device_id="cam-b")
    assert config.mqtt.device_id == "cam-b" and config.mqtt.port == 1884 and config.mqtt.qos.detections == 0
    # QoS 2 is refused: paho reports a broker's refusal of a QoS 2 publish as success.
    path.write_text("source: 0\nmqtt:\n  broker: mqtt://h\n  qos: {detections: 2}\n")
    with pytest.raises(ConfigError, match="mqtt.qos.detections"):
        load_config(path)
    path.write_text("source: 0\nmqtt:\n  broker: mqtt://h\n  tls: {cert_file: c.pem}\n")
    with pytest.raises(ConfigError, match="cert_file and key_file"):
        load_config(path)


def test_reconnect_delay_grows_is_capped_and_jittered():
    backoff = Backoff(0.5, 8.0, rng=random.Random(1))
    delays = [backoff.next() for _ in range(12)]
    ceilings = [min(8.0, 0.5 * 2**i) for i in range(12)]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings))
    assert max(delays) <= 8.0 and delays[-1] >= 4.0
    assert len({round(d, 6) for d in delays[6:]}) == 6  # capped, yet no two devices retry in lock-step
    backoff.reset()
    assert backoff.next() <= 0.5


def test_run_refuses_missing_tls_and_key_files_before_starting(tmp_path, capsys):
    from edge_sdk.cli import main

    bundle = tmp_path / "bundle"
    from support import bundles

    bundles.make_bundle(bundle)
    config = tmp_path / "run.yaml"
    config.write_text(f"source: {tmp_path}\nmqtt:\n  broker: mqtts://127.0.0.1:1\n  device_id: cam-1\n  tls: {{ca_file: {tmp_path / 'missing-ca.pem'}}}\n")
    assert main(["run", str(bundle), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mqtt.tls.ca_file" in err and "does not exist" in err
    config.write_text(f"source: {tmp_path}\nmqtt:\n  broker: mqtt://127.0.0.1:1\n  device_id: cam-1\n  update_keys: [{tmp_path / 'nokey.pub'}]\n")
    assert main(["run", str(bundle), "--config", str(config)]) == 2
    assert "update key" in capsys.readouterr().err
