"""Tracking and events through the whole chain: the shipped detector on generated videos whose true
objects and crossings are known, the real runtime, a real Mosquitto, real subscribers.

- Line counts are exact and every object has exactly one ``new`` and one ``end``; zones see each
  object enter and leave once; every event matches its JSON Schema; the ``events`` mode sends no
  detections.
- Nothing is lost across a broker restart and a SIGKILL of ``edge-sdk run`` during a broker outage:
  every ``new`` has one ``end``, the tracks the killed run left open end with reason ``restart``,
  ids are never reused, and the line events delivered add up to the retained totals.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter

import jsonschema
import pytest
import yaml

from edge_sdk.config import RunConfig
from edge_sdk.errors import CommandError
from edge_sdk.mqtt import payloads
from edge_sdk.mqtt.settings import MQTTSettings, OutboxSettings, PublishMode
from edge_sdk.runtime import Runtime
from edge_sdk.samples import shapes
from support import child_env, interrupt, wait
from support.subscriber import Subscriber

LINE = {"gate": {"points": [[0.5, 0.0], [0.5, 1.0]], "in": "right"}}
RIGHT_HALF = {"right": [[0.5, 0.0], [1.0, 0.0], [1.0, 1.0], [0.5, 1.0]]}
THRESHOLD = 0.4
ENVELOPE = {"schema", "device_id", "seq", "ts", "camera", "frame", "frame_ts"}  # what the link adds to an event


def _events(subscriber: Subscriber) -> list[dict]:
    """Every event the device published, once each (de-duplicated on (device_id, seq)), in seq order."""
    return sorted((b for b in subscriber.bodies() if b.get("schema") == payloads.EVENT), key=lambda b: b["seq"])


def _counts(subscriber: Subscriber) -> dict:
    bodies = [b for b in subscriber.bodies() if b.get("schema") == payloads.COUNTS]
    return max(bodies, key=lambda b: b["seq"])


def _line_totals(events: list[dict]) -> dict[str, Counter]:
    totals = {"in": Counter(), "out": Counter()}
    for event in events:
        if event["type"] == "line":
            totals[event["direction"]][event["label"]] += 1
    return totals


@pytest.mark.timeout(300)
def test_line_counts_are_exact_and_each_object_has_one_new_and_one_end(shapes_bundle, mosquitto, tmp_path):
    video = tmp_path / "lanes.avi"
    truth = shapes.lanes_video(video, frames=150, crossings=6, lanes=3)
    crossings = shapes.line_crossings(truth, x=320, margin=0.02 * 640)  # the line_margin the counter uses
    objects = {box.track for boxes in truth for box in boxes}
    subscriber = Subscriber(mosquitto.port, "edge/lanes/#")
    try:
        settings = MQTTSettings(broker=mosquitto.url, device_id="lanes", publish=PublishMode.EVENTS,
                                outbox=OutboxSettings(path=tmp_path / "outbox.sqlite3"))
        config = RunConfig(cameras=[{"id": "road", "source": str(video)}], threshold=THRESHOLD, mqtt=settings,
                           lines=LINE, zones=RIGHT_HALF)
        with Runtime(shapes_bundle, config) as runtime:
            results = list(runtime.results())
            tracked = [d for result in results for d in result.detections]
            # Python sees every event MQTT carries, the ends of the tracks open at the end included
            python = [e.to_json() for result in results for e in result.events]
            assert results[-1].final and not results[-1].detections and all(not r.final for r in results[:-1])
            frame, _, overlay = runtime.latest("road")  # what the live view and snapshots draw
            assert set(overlay.lines) == {"gate"} and set(overlay.zones) == {"right"} and overlay.line_in["gate"][0] > 0
            assert overlay.counts["lines"]["gate"] == runtime.stats().cameras[0].counts["lines"]["gate"]
        assert subscriber.wait_for(lambda s: any(e["type"] == "track" and e["action"] == "end" for e in _events(s))
                                   and len([e for e in _events(s) if e["type"] == "track" and e["action"] == "end"])
                                   >= len([e for e in _events(s) if e["type"] == "track" and e["action"] == "new"]), 20)
        time.sleep(0.5)
        events = _events(subscriber)
        event_schema, counts_schema = payloads.schema("event"), payloads.schema("counts")
        for event in events:
            jsonschema.validate(event, event_schema)
        counts = _counts(subscriber)
        jsonschema.validate(counts, counts_schema)
        assert not subscriber.payloads("/detections"), "the events mode sends no detections"
        assert tracked and all(d.track_id is not None for d in tracked)
    finally:
        subscriber.close()

    tracks = [e for e in events if e["type"] == "track"]
    new = Counter(e["track_id"] for e in tracks if e["action"] == "new")
    end = Counter(e["track_id"] for e in tracks if e["action"] == "end")
    assert [{k: v for k, v in e.items() if k not in ENVELOPE} for e in events] == python
    assert len(new) == len(objects), f"{len(new)} tracks for {len(objects)} objects: {tracks}"
    assert set(new.values()) == {1} and new == end
    assert {e["reason"] for e in tracks if e["action"] == "end"} <= {"lost", "stopped"}
    line = counts["lines"]["gate"]
    assert (line["in"], line["out"]) == (crossings["right"], crossings["left"]), (line, crossings)
    assert crossings["right"] > 0 and crossings["left"] > 0
    totals = _line_totals(events)
    assert sum(totals["in"].values()) == line["in"] and dict(totals["in"]) == line["in_by_label"]
    # Every object visits the right half once: rightwards ones end there, leftwards ones start there.
    zone = Counter(e["action"] for e in events if e["type"] == "zone")
    assert zone["enter"] == len(objects) and zone["exit"] == len(objects), zone
    assert counts["zones"]["right"]["total"] == 0  # everything has left by the end


@pytest.mark.timeout(420)
def test_events_survive_a_broker_restart_and_a_kill_during_an_outage(shapes_bundle, tmp_path):
    from support.broker import Mosquitto

    video = tmp_path / "shapes.avi"
    shapes.moving_video(video, frames=300, fps=15.0, objects=4)
    config = {
        "cameras": [{"id": "yard", "source": str(video), "fps": 15, "loop": True}],
        "threshold": THRESHOLD, "lines": LINE,
        "mqtt": {"broker": "", "device_id": "yard-device", "publish": "events", "reconnect_max_s": 1.0, "keepalive": 5,
                 "outbox": {"path": str(tmp_path / "state" / "outbox.sqlite3")}},
    }
    with Mosquitto(tmp_path / "broker") as broker:
        config["mqtt"]["broker"] = broker.url
        (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
        backend = Subscriber(broker.port, "edge/yard-device/#", client_id="events-backend", durable=True)
        command = [sys.executable, "-m", "edge_sdk.cli", "run", str(shapes_bundle), "--config", str(tmp_path / "run.yaml")]
        lives = []

        def start() -> subprocess.Popen:
            log = open(tmp_path / f"life-{len(lives)}.log", "wb")
            lives.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=child_env()))
            return lives[-1]

        def lines_seen() -> int:
            return sum(1 for e in _events(backend) if e["type"] == "line")

        try:
            start()
            assert wait(lambda: lines_seen() >= 2, 90), "no line events arrived"
            broker.stop()  # a graceful broker restart: the runtime queues meanwhile
            time.sleep(4)
            broker.start()
            before = lines_seen()
            assert wait(lambda: lines_seen() > before, 60), "nothing after the broker came back"
            broker.stop()  # an outage, and the runtime is killed during it
            time.sleep(4)
            lives[-1].send_signal(signal.SIGKILL)
            lives[-1].wait(10)
            start()
            time.sleep(4)  # the next life runs offline a while
            broker.start()
            before = lines_seen()
            assert wait(lambda: lines_seen() > before + 1, 90), "nothing from the second life"
            assert interrupt(lives[-1], 30), "the second life did not stop on Ctrl-C"
            assert backend.wait_for(lambda s: all_ended(_events(s)), 30)
            time.sleep(1.0)
        finally:
            for life in lives:
                if life.poll() is None:
                    life.kill()
            backend.close()
        logs = "\n".join((tmp_path / f"life-{i}.log").read_text(errors="replace") for i in range(len(lives)))

    events = _events(backend)
    assert not backend.altered(), "a resend differed from the first copy"
    tracks = [e for e in events if e["type"] == "track"]
    new = Counter(e["track_id"] for e in tracks if e["action"] == "new")
    end = Counter(e["track_id"] for e in tracks if e["action"] == "end")
    assert set(new.values()) == {1}, "a track id was used twice"
    assert new == end, f"tracks without one end: {set(new) ^ set(end)}\n{logs[-4000:]}"
    reasons = Counter(e["reason"] for e in tracks if e["action"] == "end")
    assert reasons["restart"] >= 1, f"the killed life's open tracks were not ended on restart: {reasons}"
    assert reasons["stopped"] >= 1 and set(reasons) <= {"lost", "stopped", "restart"}
    counts = _counts(backend)
    totals = _line_totals(events)
    line = counts["lines"]["gate"]
    assert (sum(totals["in"].values()), sum(totals["out"].values())) == (line["in"], line["out"]), (totals, line)
    assert dict(totals["in"]) == line["in_by_label"] and dict(totals["out"]) == line["out_by_label"]


def all_ended(events: list[dict]) -> bool:
    tracks = [e for e in events if e["type"] == "track"]
    return bool(tracks) and {e["track_id"] for e in tracks if e["action"] == "new"} <= {
        e["track_id"] for e in tracks if e["action"] == "end"}


@pytest.mark.timeout(120)
def test_the_events_mode_is_taken_live_only_by_a_run_that_tracks(shapes_bundle, mosquitto, tmp_path):
    video = tmp_path / "few.avi"
    shapes.moving_video(video, frames=5, objects=1, lanes=True)
    for name, extra in (("plain", {}), ("tracking", {"lines": LINE})):
        settings = MQTTSettings(broker=mosquitto.url, device_id=name, outbox=OutboxSettings(path=tmp_path / f"{name}.sqlite3"))
        with Runtime(shapes_bundle, RunConfig(source=str(video), mqtt=settings, **extra)) as runtime:
            if name == "plain":
                with pytest.raises(CommandError, match="needs a run that tracks"):
                    runtime.configure({"publish": "events"}, camera=None)
                assert runtime.link.mode is PublishMode.ON_DETECTION
            else:
                assert runtime.configure({"publish": "events"}, camera=None) == {"publish": "events"}
                assert runtime.link.mode is PublishMode.EVENTS
