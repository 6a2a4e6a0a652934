"""The runtime on the fleet: a real bundle, a real video, a real Mosquitto, real commands and updates."""

from __future__ import annotations

import json
import threading
import time
import uuid

import cv2
import jsonschema
import numpy as np
import paho.mqtt.client as mqtt
import pytest
from support import wait
from support.broker import Mosquitto
from support.subscriber import Subscriber
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_sdk.cli import main
from edge_sdk.config import RunConfig
from edge_sdk.converters import convert
from edge_sdk.mqtt import payloads
from edge_sdk.mqtt.link import PublishGate
from edge_sdk.mqtt.settings import MQTTSettings, PublishMode
from edge_sdk.runtime import Runtime
from edge_sdk.results import BBox, Detection, FrameResult

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def classifier(keras3_model, digits, tmp_path_factory):
    root = tmp_path_factory.mktemp("mqtt-bundles")
    convert(keras3_model, profile="rpi4", out=root / "v1", calib=digits["calib"], compile=False)
    return root / "v1"


@pytest.fixture(scope="module")
def video(digits, tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "digits.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (240, 180))
    for i in range(40):
        image = digits["images"][digits["val_idx"][i]]
        writer.write(cv2.resize(image, (240, 180), interpolation=cv2.INTER_NEAREST))
    writer.release()
    return path


@pytest.fixture
def broker(tmp_path):
    with Mosquitto(tmp_path / "broker") as running:
        yield running


class Device:
    """The runtime with its fleet link on a looping video, in a background thread."""

    def __init__(self, bundle, settings: MQTTSettings, video, *, config: RunConfig | None = None) -> None:
        config = (config or RunConfig(threshold=0)).model_copy(update={"mqtt": settings, "source": str(video), "loop": True, "fps": 25})
        self.runtime = Runtime(bundle, config).open()
        self.pipeline, self.link, self.camera = self.runtime.pipeline, self.runtime.link, self.runtime.cameras[0]
        # Commands are not kept for a device that has not subscribed yet: a test's first command
        # must not race the connection (a busy CI machine lost that race once).
        assert self.link.publisher.wait_online(30), "the device did not connect to the broker"
        self.runtime.start()

    def stop(self) -> None:
        self.runtime.stop()
        assert self.runtime.wait(15)
        self.runtime.close()


def device_settings(broker, tmp_path, **extra) -> MQTTSettings:
    return MQTTSettings(
        broker=broker.url, device_id=extra.pop("device_id", "cam-1"), outbox={"path": str(tmp_path / "outbox.sqlite3")},
        reconnect_min_s=0.1, reconnect_max_s=0.5, bundle_store=tmp_path / "store", **extra,
    )


def command(broker, name: str, payload: bytes | dict, *, device: str = "cam-1", timeout: float = 30.0) -> dict:
    """Send one command with an MQTT 5 response topic and correlation data; return the device's answer."""
    answers: list[tuple[bytes, dict]] = []
    reply = f"fleet/replies/{uuid.uuid4().hex}"
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    subscribed = threading.Event()
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_message = lambda c, u, m: answers.append((getattr(m.properties, "CorrelationData", None), json.loads(m.payload)))
    client.connect("127.0.0.1", broker.port)
    client.subscribe(reply, qos=1)
    client.loop_start()
    try:
        assert subscribed.wait(10)
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = reply
        correlation = uuid.uuid4().bytes
        props.CorrelationData = correlation
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        client.publish(f"edge/{device}/cmd/{name}", data, qos=1, properties=props)
        wait(lambda: answers, timeout, what=f"an answer to cmd/{name}")
        got_correlation, body = answers[0]
        assert got_correlation == correlation
        jsonschema.validate(body, payloads.schema("command-result"))
        return body
    finally:
        client.loop_stop()
        client.disconnect()


def test_publish_modes_and_rate_cap():
    frame = lambda labels: FrameResult(0, 0.0, (10, 10), tuple(Detection(0, label, 0.9, BBox(0, 0, 1, 1)) for label in labels))
    gate = PublishGate(PublishMode.ON_CHANGE, None)
    decisions = [gate.admit(frame(labels), t) for t, labels in enumerate([["a"], ["a"], ["a", "b"], [], []])]
    assert decisions == [True, False, True, True, False]
    gate = PublishGate(PublishMode.ON_DETECTION, 2.0)
    decisions = [gate.admit(frame(labels), t) for t, labels in [(0.0, ["a"]), (0.1, []), (0.2, ["a"]), (0.6, ["a"])]]
    assert decisions == [True, False, False, True] and gate.rate_limited == 1 and gate.suppressed == 1
    gate = PublishGate(PublishMode.EVERY_FRAME, None)
    assert all(gate.admit(frame([]), t) for t in range(3))


def test_run_cli_publishes_info_detections_metrics_and_status_that_match_their_schemas(classifier, video, broker, tmp_path):
    collector = Subscriber(broker.port)
    config = tmp_path / "run.yaml"
    config.write_text(
        f"mqtt:\n  broker: {broker.url}\n  device_id: cam-1\n  publish: every_frame\n  metrics_interval_s: 0.5\n"
        f"  outbox: {{path: {tmp_path / 'outbox.sqlite3'}}}\n"
    )
    assert main(["run", str(classifier), "--source", str(video), "--config", str(config), "--threshold", "0"]) == 0
    assert collector.wait_for(lambda c: len(c.payloads("/detections")) == 40 and c.payloads("/status")[-1]["state"] == "offline")
    info = collector.payloads("/info")[-1]
    jsonschema.validate(info, payloads.schema("info"))
    assert info["model"]["labels"] == [str(i) for i in range(10)] and len(info["model"]["sha256"]) == 64
    assert info["engine"] == {"name": "LiteRTEngine", "device": "XNNPACK (default CPU delegate)"}
    detections = collector.payloads("/detections")
    for body in detections:
        jsonschema.validate(body, payloads.schema("detections"))
    assert [d["frame"] for d in detections] == list(range(40))
    assert [d["seq"] for d in detections] == sorted(d["seq"] for d in detections)
    metrics = collector.payloads("/metrics")
    assert metrics and metrics[-1]["frames"] == 40
    for body in metrics:
        jsonschema.validate(body, payloads.schema("metrics"))
    collector.close()


@pytest.mark.parametrize("damage", ["truncated", "zero-length", "garbage"])
def test_a_damaged_outbox_at_start_is_set_aside_the_fleet_is_alerted_and_the_run_goes_on(classifier, video, broker, tmp_path, damage):
    import os

    outbox = tmp_path / "outbox.sqlite3"
    if damage == "garbage":
        outbox.write_bytes(os.urandom(4096))
    else:
        from edge_sdk.mqtt.outbox import Outbox

        previous = Outbox(outbox)
        for _ in range(200):
            previous.add("edge/cam-1/detections", os.urandom(300))
        previous.close()
        data = outbox.read_bytes()
        outbox.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"")
        for suffix in ("-wal", "-shm"):
            (tmp_path / f"outbox.sqlite3{suffix}").unlink(missing_ok=True)
    collector = Subscriber(broker.port)
    config = tmp_path / "run.yaml"
    config.write_text(f"mqtt:\n  broker: {broker.url}\n  device_id: cam-1\n  publish: every_frame\n  outbox: {{path: {outbox}}}\n")
    assert main(["run", str(classifier), "--source", str(video), "--config", str(config), "--threshold", "0"]) == 0
    assert collector.wait_for(lambda c: len(c.payloads("/detections")) == 40 and c.payloads("/status")[-1]["state"] == "offline")
    (alert,) = collector.payloads("/alert")
    jsonschema.validate(alert, payloads.schema("alert"))
    assert alert["kind"] == "outbox-quarantined" and "was damaged and moved aside" in alert["detail"]
    aside = tmp_path / alert["path"].rsplit("/", 1)[-1]
    assert aside.exists() and aside.name.startswith("outbox.sqlite3.corrupt-")
    assert outbox.exists() and outbox.stat().st_size > 0  # a fresh outbox took its place
    # Numbers after the damage are new ones, above every seq the lost file could have used.
    assert min(d["seq"] for d in collector.payloads("/detections")) > 10**12
    collector.close()


def test_a_closed_fleet_link_lets_go_of_its_pipeline_without_waiting_for_the_garbage_collector(classifier, broker, tmp_path):
    """A process that stops and starts runs must not keep each old engine (and its native threads)
    until a garbage collection happens to run: closing breaks every cycle through the link."""
    import gc
    import weakref

    gc.collect()
    gc.disable()
    try:
        runtime = Runtime(classifier, RunConfig(source="test.mp4", mqtt=device_settings(broker, tmp_path))).open()
        assert runtime.link.publisher.wait_online(10)
        runtime.close()
        gone = weakref.ref(runtime.pipeline)
        del runtime
        assert gone() is None
    finally:
        gc.enable()


def test_config_command_changes_the_run_live_and_echoes_what_it_applied(classifier, video, broker, tmp_path):
    collector = Subscriber(broker.port, "edge/cam-1/main/detections")
    device = Device(classifier, device_settings(broker, tmp_path, publish="every_frame"), video)
    try:
        assert collector.wait_for(lambda c: len(c.payloads("/detections")) >= 5)
        answer = command(broker, "config", {"threshold": 0.97, "labels": ["1", "7"], "max_rate": 5, "request_id": "r1"})
        assert answer["ok"] and answer["request_id"] == "r1"
        assert answer["applied"] == {"threshold": 0.97, "labels": ["1", "7"], "max_rate": 5}
        assert device.camera.settings.threshold == 0.97
        mark = len(collector.payloads("/detections"))
        assert collector.wait_for(lambda c: len(c.payloads("/detections")) >= mark + 5)
        for body in collector.payloads("/detections")[mark + 1:]:
            assert all(d["score"] >= 0.97 and d["label"] in ("1", "7") for d in body["detections"])
    finally:
        device.stop()
        collector.close()


@pytest.mark.parametrize(
    ("name", "payload", "error"),
    [
        ("reboot", b"{}", "unknown command 'reboot'"),
        ("config", b"{not json", "not valid JSON"),
        ("config", b"[1, 2]", "JSON object"),
        ("config", json.dumps({"threshold": "high"}).encode(), "field 'threshold'"),
        ("config", json.dumps({"threshold": 2}).encode(), "field 'threshold'"),
        ("config", json.dumps({"shell": "rm -rf /"}).encode(), "field 'shell': unknown field"),
        ("config", json.dumps({"zones": [[[0, 0], [2, 0], [0, 1]]]}).encode(), "outside the frame"),
        ("config", b"[" * 100_000 + b"]" * 100_000, "too large"),
        ("config", b"[" * 5000 + b"]" * 5000, "nested too deeply"),
        ("snapshot", json.dumps({"size": 1}).encode(), "unknown field"),
        ("model", json.dumps({"url": "http://example.com/b.tar.gz"}).encode(), "https"),
        ("model", b"\x1f\x8b" + b"\x00" * 100, "archive"),
    ],
)
def test_bad_commands_get_an_error_and_the_runtime_keeps_running(running_device, name, payload, error):
    broker, device = running_device
    answer = command(broker, name, payload)
    assert answer["ok"] is False and error in answer["error"], answer
    before = device.camera.stats.frames_done
    time.sleep(0.3)
    assert device.camera.stats.frames_done > before and device.runtime.running


@pytest.fixture(scope="module")
def running_device(classifier, video, tmp_path_factory):
    """One device for the many bad-command cases: each must leave it running for the next."""
    tmp_path = tmp_path_factory.mktemp("bad-commands")
    with Mosquitto(tmp_path / "broker") as broker:
        device = Device(classifier, device_settings(broker, tmp_path, update_keys=[_public_key(tmp_path)]), video)
        try:
            yield broker, device
        finally:
            device.stop()


def _public_key(tmp_path):
    from edge_sdk.ota.keys import generate_keypair

    if not (tmp_path / "fleet.pub").exists():
        generate_keypair(tmp_path / "fleet.key", tmp_path / "fleet.pub")
    return tmp_path / "fleet.pub"


def test_snapshot_command_publishes_the_current_frame_as_jpeg(classifier, video, broker, tmp_path):
    collector = Subscriber(broker.port, "edge/cam-1/main/snapshot")
    device = Device(classifier, device_settings(broker, tmp_path), video)
    try:
        time.sleep(1.0)
        answer = command(broker, "snapshot", b"")
        assert answer["ok"] and answer["bytes"] > 1000
        assert collector.wait_for(lambda c: len(c.messages) == 1)
        image = cv2.imdecode(np.frombuffer(collector.messages[0].payload, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (180, 240, 3) and len(collector.messages[0].payload) == answer["bytes"]
    finally:
        device.stop()
        collector.close()


@pytest.fixture(scope="module")
def second_model(keras3_model, digits, tmp_path_factory):
    """A different build of the classifier (x86 profile: float I/O), so its model sha256 differs."""
    out = tmp_path_factory.mktemp("mqtt-bundles-v2") / "v2"
    convert(keras3_model, profile="x86-cpu", out=out, calib=digits["calib"], compile=False)
    return out


def _signed_archive(bundle, tmp_path, key, version, name):
    import shutil

    from edge_sdk.ota.archive import pack_bundle
    from edge_sdk.ota.keys import sign_bundle

    copy = tmp_path / name
    shutil.copytree(bundle, copy)
    if key is not None:
        sign_bundle(copy, key, version=version)
    return pack_bundle(copy)


def _sha(bundle_path) -> str:
    from edge_sdk.bundle import open_bundle

    manifest = open_bundle(bundle_path).manifest
    return next(f.sha256 for f in manifest.files if f.path == manifest.model_file)


def test_signed_model_updates_are_tried_swapped_and_reported_and_bad_ones_change_nothing(
    classifier, second_model, video, broker, tmp_path,
):
    import base64

    from edge_sdk.ota.keys import generate_keypair

    generate_keypair(tmp_path / "fleet.key", tmp_path / "fleet.pub")
    generate_keypair(tmp_path / "rogue.key", tmp_path / "rogue.pub")
    collector = Subscriber(broker.port, "edge/cam-1/info")
    device = Device(classifier, device_settings(broker, tmp_path, update_keys=[tmp_path / "fleet.pub"]), video)
    old, new = _sha(classifier), _sha(second_model)
    assert old != new
    try:
        time.sleep(1.0)
        refusals = {
            "unsigned": (_signed_archive(second_model, tmp_path, None, None, "unsigned"), "not signed"),
            "rogue key": (_signed_archive(second_model, tmp_path, tmp_path / "rogue.key", 5, "rogue"), "does not trust"),
            "garbage": (b"\x1f\x8b" + bytes(300), "damaged"),
        }
        for case, (archive, reason) in refusals.items():
            answer = command(broker, "model", archive)
            assert answer["ok"] is False and reason in answer["error"], (case, answer)
            assert _sha(device.pipeline.bundle.path) == old
        good = _signed_archive(second_model, tmp_path, tmp_path / "fleet.key", 5, "good")
        answer = command(broker, "model", json.dumps({"archive_b64": base64.b64encode(good).decode(), "request_id": 9}).encode())
        assert answer["ok"], answer
        assert (answer["old_sha256"], answer["new_sha256"], answer["version"], answer["request_id"]) == (old, new, 5, 9)
        assert _sha(device.pipeline.bundle.path) == new
        assert collector.wait_for(lambda c: c.payloads("/info")[-1]["model"]["sha256"] == new)
        frames = device.camera.stats.frames_done
        assert collector.wait_for(lambda c: device.camera.stats.frames_done > frames + 5)
        replay = _signed_archive(second_model, tmp_path, tmp_path / "fleet.key", 4, "older")
        answer = command(broker, "model", replay)
        assert answer["ok"] is False and "not newer" in answer["error"]
        assert _sha(device.pipeline.bundle.path) == new
    finally:
        device.stop()
        collector.close()
    # A restart runs the installed update, not the bundle on the command line.
    config = tmp_path / "run.yaml"
    config.write_text(
        f"mqtt:\n  broker: {broker.url}\n  device_id: cam-1\n  update_keys: [{tmp_path / 'fleet.pub'}]\n"
        f"  bundle_store: {tmp_path / 'store'}\n  outbox: {{path: {tmp_path / 'outbox.sqlite3'}}}\n"
    )
    out = tmp_path / "after.jsonl"
    assert main(["run", str(classifier), "--source", str(video), "--config", str(config), "--max-frames", "3", "--jsonl", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 3


def test_home_assistant_discovery_is_published_retained_when_asked(classifier, video, broker, tmp_path):
    device = Device(classifier, device_settings(broker, tmp_path, home_assistant=True, watch_labels=["1", "7"]), video)
    try:
        assert device.link.publisher.wait_online(10)
        time.sleep(0.5)
        collector = Subscriber(broker.port, "homeassistant/#")  # joins late: the configs are retained
        assert collector.wait_for(lambda c: len(c.messages) == 4)
        topics = sorted(m.topic for m in collector.messages)
        assert topics[0] == "homeassistant/binary_sensor/cam-1/main_seen_1/config" and all(m.retain for m in collector.messages)
        collector.close()
    finally:
        device.stop()


def test_push_updates_a_running_device_end_to_end(classifier, second_model, video, broker, tmp_path, capsys):
    import shutil

    from edge_sdk.ota.keys import generate_keypair, sign_bundle

    generate_keypair(tmp_path / "fleet.key", tmp_path / "fleet.pub")
    update = tmp_path / "update"
    shutil.copytree(second_model, update)
    sign_bundle(update, tmp_path / "fleet.key", version=3)
    device = Device(classifier, device_settings(broker, tmp_path, update_keys=[tmp_path / "fleet.pub"]), video)
    try:
        time.sleep(1.0)
        assert main(["push", str(update), "--device", "cam-1", "--broker", broker.url, "--timeout", "60"]) == 0
        out = capsys.readouterr().out
        assert f"{_sha(classifier)[:12]} -> {_sha(second_model)[:12]} (version 3)" in out
        assert _sha(device.pipeline.bundle.path) == _sha(second_model)
        assert main(["push", str(update), "--device", "cam-1", "--broker", broker.url, "--timeout", "60"]) == 2
        assert "refused the update: update version 3 is not newer than installed version 3" in capsys.readouterr().err
    finally:
        device.stop()


def test_a_model_that_fails_after_the_swap_is_rolled_back_by_itself(classifier, second_model, video, broker, tmp_path):
    import shutil

    from support.decoders import flaky as flaky_decoder
    from edge_sdk.ota.keys import generate_keypair, sign_bundle

    generate_keypair(tmp_path / "fleet.key", tmp_path / "fleet.pub")
    update = tmp_path / "flaky"
    shutil.copytree(second_model, update)
    manifest = json.loads((update / "edge-bundle.json").read_text())
    manifest["decoder"] = {"kind": "plugin:support.decoders.flaky:decode", "options": {}}
    (update / "edge-bundle.json").write_text(json.dumps(manifest))
    sign_bundle(update, tmp_path / "fleet.key", version=8)
    flaky_decoder.calls = 0
    collector = Subscriber(broker.port, "edge/cam-1/info")
    device = Device(classifier, device_settings(broker, tmp_path, update_keys=[tmp_path / "fleet.pub"]), video)
    try:
        time.sleep(1.0)
        from edge_sdk.ota.archive import pack_bundle

        answer = command(broker, "model", pack_bundle(update))
        assert answer["ok"], answer  # it passed its trial run...
        wait(lambda: _sha(device.pipeline.bundle.path) == _sha(classifier), 10, step=0.05)
        assert _sha(device.pipeline.bundle.path) == _sha(classifier)  # ...then failed, and the old model came back
        assert flaky_decoder.calls > flaky_decoder.GOOD_CALLS
        from edge_sdk.ota.store import BundleStore

        assert BundleStore(tmp_path / "store").current() is None  # a restart will not load it either
        frames = device.camera.stats.frames_done
        assert collector.wait_for(lambda c: device.camera.stats.frames_done > frames + 5)
        assert collector.wait_for(lambda c: c.payloads("/info")[-1]["model"]["sha256"] == _sha(classifier))
        assert device.runtime.running and device.runtime.error is None
    finally:
        device.stop()
        collector.close()


def test_a_model_update_can_come_from_an_https_url(classifier, second_model, video, broker, tmp_path):
    import http.server
    import ssl

    from support.pki import make_pki

    from edge_sdk.ota.keys import generate_keypair

    pki = make_pki(tmp_path / "pki")
    generate_keypair(tmp_path / "fleet.key", tmp_path / "fleet.pub")
    www = tmp_path / "www"
    www.mkdir()
    (www / "v6.tar.gz").write_bytes(_signed_archive(second_model, tmp_path, tmp_path / "fleet.key", 6, "v6"))
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(www), **k)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings = device_settings(broker, tmp_path, update_keys=[tmp_path / "fleet.pub"], update_ca_file=pki.ca_cert)
    device = Device(classifier, settings, video)
    try:
        time.sleep(1.0)
        base = f"https://127.0.0.1:{server.server_address[1]}"
        missing = command(broker, "model", {"url": f"{base}/nope.tar.gz"})
        assert missing["ok"] is False and "HTTP 404" in missing["error"]
        answer = command(broker, "model", {"url": f"{base}/v6.tar.gz"})
        assert answer["ok"] and answer["new_sha256"] == _sha(second_model) and answer["version"] == 6
    finally:
        device.stop()
        server.shutdown()
