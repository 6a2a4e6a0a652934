"""`edge-sdk listen` and `edge-sdk push` against a real broker (device answers come from tests/test_mqtt_runtime.py)."""

from __future__ import annotations

import json
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from edge_sdk.cli import main
from edge_sdk.mqtt.fleetview import FleetView
from edge_sdk.ota.keys import generate_keypair, sign_bundle
from support import bundles


def publisher(broker) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    return client


MESSAGES = [
    ("edge/cam-1/status", {"schema": "edge-sdk/status@1", "device_id": "cam-1", "state": "online", "ts": 1.0}),
    ("edge/cam-1/info", {"schema": "edge-sdk/info@1", "device_id": "cam-1", "seq": 1, "ts": 1.0, "sdk_version": "0.1.0",
                         "model": {"name": "shapes", "sha256": "ab" * 32, "labels": ["circle"]}}),
    ("edge/cam-1/detections", {"schema": "edge-sdk/detections@1", "device_id": "cam-1", "seq": 2, "ts": 1.0, "frame": 3,
                               "detections": [{"class_id": 0, "label": "circle", "score": 0.9}]}),
    ("edge/cam-2/metrics", {"schema": "edge-sdk/metrics@1", "device_id": "cam-2", "seq": 5, "ts": 1.0, "fps": 14.5,
                            "latency_ms_p99": 80.0, "outbox_depth": 3}),
]


def test_listen_prints_one_json_line_per_message(mosquitto, capsys):
    client = publisher(mosquitto)

    def send():
        time.sleep(1.0)
        for topic, body in MESSAGES:
            client.publish(topic, json.dumps(body), qos=1)
        client.publish("edge/cam-2/detections", b"\x00not json", qos=1)

    threading.Thread(target=send, daemon=True).start()
    try:
        assert main(["listen", "--broker", mosquitto.url, "--json", "--count", "5", "--duration", "20"]) == 0
    finally:
        client.loop_stop()
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["topic"] for line in lines] == [t for t, _ in MESSAGES] + ["edge/cam-2/detections"]
    assert lines[2]["payload"]["detections"][0]["label"] == "circle"
    assert lines[4]["payload"] == {"bytes": 9}


def test_listen_for_one_device_ignores_the_others(mosquitto, capsys):
    client = publisher(mosquitto)
    client.publish("edge/cam-2/status", json.dumps(MESSAGES[0][1]), qos=1, retain=True)
    client.publish("edge/cam-1/status", json.dumps(MESSAGES[0][1]), qos=1, retain=True).wait_for_publish(5)
    try:
        assert main(["listen", "--broker", mosquitto.url, "--device", "cam-1", "--json", "--duration", "1.5"]) == 0
    finally:
        client.loop_stop()
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(line["topic"], line["retained"]) for line in lines] == [("edge/cam-1/status", True)]


def test_the_fleet_view_folds_messages_per_device_and_counts_garbage():
    view = FleetView()
    for topic, body in MESSAGES:
        view.feed(topic, json.dumps(body).encode())
    view.feed("edge/cam-2/detections", b"{broken")
    view.feed("other/x/status", b"{}")
    alert = {"schema": "edge-sdk/alert@1", "device_id": "cam-2", "seq": 9, "ts": 1.0, "kind": "engine-restarted", "detail": "hung"}
    view.feed("edge/cam-2/alert", json.dumps(alert).encode())
    cam1, cam2 = view.devices["cam-1"], view.devices["cam-2"]
    assert (cam1.alert, cam2.alert) == ("", "engine-restarted: hung")
    assert (cam1.status, cam1.model, cam1.detections, cam1.last_labels) == ("online", "shapes", 1, "circle 0.90")
    assert (cam2.fps, cam2.latency_p99, cam2.outbox) == (14.5, 80.0, 3)
    assert view.unreadable == 1 and set(view.devices) == {"cam-1", "cam-2"}
    event = {"schema": "edge-sdk/event@1", "device_id": "cam-1", "seq": 10, "ts": 2.0, "camera": "door", "type": "line",
             "line": "gate", "direction": "in", "track_id": 4, "label": "person"}
    view.feed("edge/cam-1/door/events", json.dumps(event).encode())
    assert (cam1.events, cam1.last_labels) == (1, "door: person in gate")
    from rich.console import Console

    console = Console(record=True, width=160)
    console.print(view.table())
    text = console.export_text()
    assert "cam-1" in text and "shapes" in text and "14.5" in text and "engine-restarted: hung" in text


@pytest.mark.parametrize("bad", ["a/b", "a+b", "#"])
def test_listen_and_push_refuse_unsafe_device_ids(mosquitto, tmp_path, capsys, bad):
    assert main(["listen", "--broker", mosquitto.url, "--device", bad, "--duration", "1"]) == 2
    assert main(["push", str(tmp_path), "--device", bad, "--broker", mosquitto.url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "Traceback" not in err


def test_push_needs_a_signed_bundle_and_an_answer(mosquitto, tmp_path, capsys):
    folder = tmp_path / "bundle"
    bundles.make_bundle(folder)
    assert main(["push", str(folder), "--device", "cam-9", "--broker", mosquitto.url]) == 2
    assert "not signed" in capsys.readouterr().err
    generate_keypair(tmp_path / "k.key", tmp_path / "k.pub")
    sign_bundle(folder, tmp_path / "k.key", version=1)
    status = publisher(mosquitto)
    status.publish("edge/cam-9/status", json.dumps({"state": "offline"}), qos=1, retain=True).wait_for_publish(5)
    status.loop_stop()
    started = time.monotonic()
    assert main(["push", str(folder), "--device", "cam-9", "--broker", mosquitto.url, "--timeout", "2"]) == 2
    err = capsys.readouterr().err
    assert "no answer from device cam-9 within 2 s" in err and "its status is offline" in err
    assert time.monotonic() - started < 10


def test_push_to_an_unreachable_broker_is_one_line(tmp_path, capsys):
    folder = tmp_path / "bundle"
    bundles.make_bundle(folder)
    generate_keypair(tmp_path / "k.key", tmp_path / "k.pub")
    sign_bundle(folder, tmp_path / "k.key", version=1)
    from support import free_port

    assert main(["push", str(folder), "--device", "cam-1", "--broker", f"mqtt://127.0.0.1:{free_port()}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edge-sdk: error: cannot reach broker") and err.count("\n") == 1
