"""The publisher against a real Mosquitto: zero loss across outages and kills, bounds, refusals, Last Will."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import jsonschema
import pytest

from edge_sdk.mqtt import payloads
from edge_sdk.mqtt.client import Publisher
from edge_sdk.mqtt.settings import MQTTSettings
from support import wait
from support.broker import Mosquitto
from support.subscriber import Subscriber


def settings(broker: Mosquitto, tmp_path, **extra) -> MQTTSettings:
    extra.setdefault("outbox", {"path": str(tmp_path / "outbox.sqlite3")})
    extra.setdefault("reconnect_min_s", 0.1)
    extra.setdefault("reconnect_max_s", 0.5)
    return MQTTSettings(broker=broker.url, device_id=extra.pop("device_id", "cam-1"), **extra)


def detection(publisher: Publisher, i: int) -> dict:
    return publisher.envelope(payloads.DETECTIONS, {"camera": "main", "frame": i, "frame_ts": time.time(), "width": 640, "height": 480, "detections": []})


def test_starts_with_the_broker_down_and_goes_online_when_it_comes(tmp_path):
    broker = Mosquitto(tmp_path / "broker").start()
    Subscriber(broker.port, durable=True, client_id="fleet").close()  # a session that outlives the broker
    broker.stop()
    publisher = Publisher(settings(broker, tmp_path)).start()
    try:
        for i in range(5):
            publisher.publish("detections", detection(publisher, i))
        time.sleep(0.5)
        assert publisher.state != "online" and publisher.last_error == "connection refused"
        broker.start()
        assert publisher.wait_online(10)
        collector = Subscriber(broker.port, durable=True, client_id="fleet")
        assert collector.wait_for(lambda c: len(c.seqs()) == 5)
        status = collector.payloads("/status")
        assert status and status[-1]["state"] == "online"
        jsonschema.validate(status[-1], payloads.schema("status"))
        for body in collector.payloads("/detections"):
            jsonschema.validate(body, payloads.schema("detections"))
    finally:
        publisher.close()
        broker.stop()


def test_no_detection_is_lost_while_the_broker_restarts(tmp_path):
    broker = Mosquitto(tmp_path / "broker").start()
    collector = Subscriber(broker.port, "edge/+/detections", durable=True)
    publisher = Publisher(settings(broker, tmp_path)).start()
    try:
        assert publisher.wait_online(10)
        for i in range(300):
            publisher.publish("detections", detection(publisher, i))
        broker.stop()
        for i in range(300, 1300):  # produced while the broker is away
            publisher.publish("detections", detection(publisher, i))
        assert publisher.outbox.depth >= 1000
        broker.start()
        assert publisher.flush(30), publisher.stats()
        expected = set(range(1, 1301))
        assert collector.wait_for(lambda c: c.seqs() >= expected, timeout=30), len(expected - collector.seqs())
        assert publisher.stats().outbox_dropped_overflow == 0
    finally:
        publisher.close()
        collector.close()
        broker.stop()


_PRODUCER = """
import sys, time
from edge_sdk.mqtt.client import Publisher
from edge_sdk.mqtt.settings import MQTTSettings
s = MQTTSettings(broker=sys.argv[1], device_id="cam-1", outbox={"path": sys.argv[2]}, reconnect_min_s=0.1, reconnect_max_s=0.3)
p = Publisher(s).start()
for i in range(int(sys.argv[3])):
    p.publish("detections", p.envelope("edge-sdk/detections@1", {"camera": "main", "frame": i, "frame_ts": 0, "width": 1, "height": 1, "detections": []}))
print("produced", flush=True)
time.sleep(120)
"""


def test_everything_produced_before_a_kill_arrives_after_a_restart(tmp_path):
    broker = Mosquitto(tmp_path / "broker").start()
    collector = Subscriber(broker.port, "edge/+/detections", durable=True)
    outbox = tmp_path / "outbox.sqlite3"
    try:
        broker.stop()  # the device is cut off, then killed with its backlog on disk
        child = subprocess.Popen([sys.executable, "-c", _PRODUCER, broker.url, str(outbox), "800"], stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline().strip() == "produced"
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(10)
        broker.start()
        publisher = Publisher(settings(broker, tmp_path)).start()
        try:
            assert publisher.flush(30)
            assert collector.wait_for(lambda c: c.seqs() >= set(range(1, 801)), timeout=30)
        finally:
            publisher.close()
    finally:
        collector.close()
        broker.stop()


def test_at_the_bound_exactly_the_oldest_are_dropped_and_counted(tmp_path):
    broker = Mosquitto(tmp_path / "broker").start()
    collector = Subscriber(broker.port, "edge/+/detections", durable=True)
    broker.stop()
    publisher = Publisher(settings(broker, tmp_path, outbox={"path": str(tmp_path / "o.sqlite3"), "max_messages": 100})).start()
    try:
        for i in range(250):
            publisher.publish("detections", detection(publisher, i))
        assert publisher.stats().outbox_dropped_overflow == 150
        broker.start()
        assert publisher.flush(20)
        assert collector.wait_for(lambda c: len(c.seqs()) >= 100)
        time.sleep(0.3)
        assert collector.seqs() == set(range(151, 251))
    finally:
        publisher.close()
        collector.close()
        broker.stop()


def test_a_refused_publish_is_dead_lettered_once_not_retried(tmp_path):
    acl = "user cam-1\ntopic write edge/cam-1/status\ntopic write edge/cam-1/info\n"
    broker = Mosquitto(tmp_path / "broker", passwords={"cam-1": "pw"}, acl=acl, allow_anonymous=False).start()
    publisher = Publisher(settings(broker, tmp_path, username="cam-1", password="pw")).start()
    try:
        assert publisher.wait_online(10)
        publisher.publish("detections", detection(publisher, 0))  # not allowed by the ACL
        wait(lambda: publisher.stats().refused >= 1, 10, step=0.05)
        time.sleep(0.5)
        stats = publisher.stats()
        assert stats.refused == 1 and stats.sent == 1 and stats.outbox_depth == 0
        assert publisher.outbox.dead_letters()[0][0] == "edge/cam-1/detections"
    finally:
        publisher.close()
        broker.stop()


def test_last_will_says_offline_when_the_device_dies(tmp_path):
    broker = Mosquitto(tmp_path / "broker").start()
    collector = Subscriber(broker.port, "edge/+/status")
    child = subprocess.Popen([sys.executable, "-c", _PRODUCER, broker.url, str(tmp_path / "o.sqlite3"), "1"], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "produced"
        assert collector.wait_for(lambda c: any(p["state"] == "online" for p in c.payloads("/status")))
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        # The broker notices the dead socket at once (RST) and sends the will.
        assert collector.wait_for(lambda c: c.payloads("/status")[-1]["state"] == "offline", timeout=15)
    finally:
        child.kill()
        collector.close()
        broker.stop()


def test_a_silent_link_is_noticed_within_one_and_a_half_keepalives(tmp_path):
    broker = Mosquitto(tmp_path / "broker").start()
    publisher = Publisher(settings(broker, tmp_path, keepalive=5)).start()
    try:
        assert publisher.wait_online(10)
        broker.pause()  # SIGSTOP: the socket stays open, nothing comes back
        stopped = time.monotonic()
        wait(lambda: publisher.state != "online", 15, step=0.05)
        noticed = time.monotonic() - stopped
        assert publisher.state != "online" and noticed <= 1.5 * 5 + 0.6, noticed
    finally:
        broker.resume()
        publisher.close()
        broker.stop()


@pytest.mark.parametrize("transport", ["mqtt-3.1.1", "websockets"])
def test_mqtt_311_and_websockets_deliver_too(tmp_path, transport):
    broker = Mosquitto(tmp_path / "broker", websockets=True).start()
    collector = Subscriber(broker.port, "edge/+/detections")
    extra = {"protocol": "3.1.1"} if transport == "mqtt-3.1.1" else {}
    s = settings(broker, tmp_path, **extra)
    if transport == "websockets":
        s = s.model_copy(update={"broker": broker.ws_url})
    publisher = Publisher(s).start()
    try:
        assert publisher.wait_online(10), publisher.last_error
        for i in range(20):
            publisher.publish("detections", detection(publisher, i))
        assert publisher.flush(10)
        assert collector.wait_for(lambda c: len(c.seqs()) == 20)
    finally:
        publisher.close()
        collector.close()
        broker.stop()


def test_credentials_never_reach_logs_or_stderr(tmp_path, caplog, capfd):
    import logging

    secret = "pa55-" + "x" * 12
    broker = Mosquitto(tmp_path / "broker", passwords={"cam-1": secret}, allow_anonymous=False).start()
    caplog.set_level(logging.DEBUG)
    good = Publisher(settings(broker, tmp_path, username="cam-1", password=secret)).start()
    bad = Publisher(settings(broker, tmp_path / "b", username="cam-1", password=secret + "-wrong")).start()
    try:
        assert good.wait_online(10)
        wait(lambda: bad.state == "refused", 10, step=0.05)
        assert bad.state == "refused" and "refused" in bad.last_error
    finally:
        good.close()
        bad.close()
        broker.stop()
    out, err = capfd.readouterr()
    assert secret not in caplog.text + out + err + repr(good.settings) + str(good.stats())


def test_waiting_costs_no_cpu_online_or_offline(tmp_path):
    broker = Mosquitto(tmp_path / "broker").start()
    publisher = Publisher(settings(broker, tmp_path, reconnect_min_s=0.2, reconnect_max_s=1.0)).start()
    try:
        assert publisher.wait_online(10)
        for state in ("online", "offline"):
            if state == "offline":
                broker.stop()
                time.sleep(1.0)
            before = time.process_time()
            time.sleep(3.0)
            used = time.process_time() - before
            assert used < 0.15, (state, used)  # under 5 % of one core
        assert publisher.state != "online" and publisher.stats().reconnect_waits >= 2
    finally:
        publisher.close()
        broker.stop()


def test_a_publisher_works_when_its_descriptors_are_numbered_past_1024(mosquitto, tmp_path):
    """A host that simulates hundreds of devices, or an app holding many files, hands the publisher
    descriptors above select()'s limit of 1024: it must connect and deliver all the same."""
    import os
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1400:
        pytest.skip(f"this host allows {hard} open files, too few to go past 1024")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1400), hard))
    watcher = Subscriber(mosquitto.port, "edge/many/#")  # before: paho's own loop uses select too
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        publisher = Publisher(MQTTSettings(broker=mosquitto.url, device_id="many", outbox={"path": tmp_path / "o.sqlite3"})).start()
        try:
            assert publisher.wait_online(10), publisher.last_error
            assert publisher.outbox.path and max(held) > 1024
            for i in range(20):
                publisher.publish("cam/detections", publisher.envelope(payloads.DETECTIONS, {"camera": "cam", "i": i}), qos=1)
            assert publisher.flush(10)
            wait(lambda: watcher.unique >= 20, 10)
        finally:
            publisher.close()
            watcher.close()
        assert watcher.unique >= 20
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
