"""Shared-subscription consumers on a real Mosquitto: split the fleet, store before acknowledging,
resume their own session after a kill, and lose or double nothing.

The devices are simulated (:mod:`edge_sdk.fleet.simulate`): real publishers with their outboxes,
without pipelines. The consumers are real ``edge-sdk ingest`` / ``edge-sdk listen`` processes.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from edge_sdk.cli import main
from edge_sdk.errors import ConfigError, PublishError
from edge_sdk.fleet.consumer import Consumer
from edge_sdk.fleet.records import parse, subscriptions
from edge_sdk.fleet.simulate import SimulatedFleet
from edge_sdk.fleet.sink import CallbackSink
from edge_sdk.mqtt.settings import MQTTSettings
from support import free_port, wait
from support.fleet import Ingest

def stored_keys(db: Path) -> list[tuple[str, int]]:
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        return [tuple(row) for row in conn.execute("SELECT device_id, seq FROM messages")]


def stored_rows(db: Path) -> list[tuple[str, int, float]]:
    with sqlite3.connect(db) as conn:
        return [tuple(row) for row in conn.execute("SELECT device_id, seq, ts FROM messages")]


def test_three_members_one_killed_store_everything_once(mosquitto, tmp_path):
    """The must-hold: 20 devices publish for 60 s to 3 members of a group; one is SIGKILLed and
    restarted with the same command. The union of the stores is exactly what was published."""
    members = [Ingest(mosquitto.url, tmp_path, f"member-{i}", db=str(tmp_path / f"member-{i}.sqlite3")).start() for i in range(3)]
    # Each member has made its session and joined the group before the devices start.
    wait(lambda: mosquitto.log().count("$share/ingest/") >= 3 * len(subscriptions()), 30, what="3 members subscribed")
    fleet = SimulatedFleet(mosquitto.url, tmp_path / "devices", count=20, rate=10.0).start()
    try:
        time.sleep(20)
        victim = members[1]
        before_kill = len(stored_keys(Path(victim.db)))
        victim.kill()
        killed_at = time.time()
        time.sleep(10)  # its share waits in its session meanwhile
        restarted_at = time.time()
        victim.start()
        time.sleep(30)
    finally:
        assert fleet.stop(flush_timeout=60), "a device's outbox did not drain"
    sent = fleet.sent()
    wait(lambda: sum(len(stored_keys(Path(m.db))) for m in members) >= len(sent), 90, what="every message stored")
    time.sleep(2)  # anything stored twice would show up now
    for member in members:
        assert member.stop() == 0, member.output()

    per_member = [stored_keys(Path(member.db)) for member in members]
    union = [key for keys in per_member for key in keys if key[0].startswith("sim-")]
    assert len(set(union)) == len(union), "a message was stored by two members"
    assert set(union) == set(sent), f"lost {len(set(sent) - set(union))}, unexpected {len(set(union) - set(sent))}"
    # Each member took a reasonable share, the killed one included (its session queued for it).
    shares = [sum(1 for key in keys if key[0].startswith("sim-")) / len(sent) for keys in per_member]
    assert all(share > 0.15 for share in shares), shares
    # The restarted member resumed its session: it stored messages the devices sent while it was dead.
    victim_rows = stored_rows(Path(victim.db))
    assert before_kill > 0
    assert sum(1 for _, _, ts in victim_rows if ts is not None and killed_at + 1 < ts < restarted_at - 1) > 100
    assert len(sent) > 20 * 10 * 55  # the devices really sent for about 60 s


def test_a_listener_in_a_group_prints_each_message_once_and_acknowledges_after(mosquitto, tmp_path, capsys):
    fleet = SimulatedFleet(mosquitto.url, tmp_path / "devices", count=3, rate=20.0)
    env_state = {"XDG_STATE_HOME": str(tmp_path / "state")}
    os.environ.update(env_state)
    result: dict = {}
    listener = threading.Thread(target=lambda: result.setdefault("code", main(
        ["listen", "--broker", mosquitto.url, "--share", "watchers", "--name", "one", "--json", "--duration", "8"])))
    listener.start()
    wait(lambda: "$share/watchers/" in mosquitto.log(), 20, what="the listener subscribed")
    fleet.start()
    time.sleep(3)
    fleet.stop(flush_timeout=20)
    listener.join(30)
    assert result.get("code") == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    keys = [(line["payload"]["device_id"], line["payload"]["seq"]) for line in lines if line["payload"].get("seq") is not None]
    assert len(keys) == len(set(keys))
    assert set(fleet.sent()) <= set(keys)
    assert not any("/cmd/" in line["topic"] for line in lines)


def test_a_consumer_acknowledges_only_what_its_sink_stored(mosquitto, tmp_path):
    """A sink that fails after the first batch: nothing it did not take is acknowledged, so the
    same session hands it all over again after a restart, and the union is complete."""
    settings = MQTTSettings(broker=mosquitto.url, device_id="x")
    taken: list = []
    writes = {"left": 2}  # the first batches go through, then the "disk" fails

    def handle(record):
        if writes["left"] <= 0:
            raise OSError("disk gone")
        taken.append(record.key)

    class Failing(CallbackSink):
        def write(self, records):
            try:
                return super().write(records)
            finally:
                writes["left"] -= 1

    consumer = Consumer(settings, Failing(handle), group="g", name="a", lock_folder=tmp_path).start()
    fleet = SimulatedFleet(mosquitto.url, tmp_path / "devices", count=2, rate=50.0).start()
    with pytest.raises(OSError):
        consumer.run(duration=20)
    consumer.close()
    fleet.stop(flush_timeout=20)
    assert [key for key in taken if key is not None], "the first batches were stored"
    again: list = []
    with Consumer(settings, CallbackSink(lambda r: again.append(r.key)), group="g", name="a", lock_folder=tmp_path) as second:
        second.run(duration=5)
    assert set(fleet.sent()) <= set(taken) | set(again)
    assert set(fleet.sent()) - set(taken), "the failure left messages for the restart"


def test_one_process_per_session_on_a_host(mosquitto, tmp_path):
    settings = MQTTSettings(broker=mosquitto.url, device_id="x")
    with Consumer(settings, CallbackSink(lambda r: None), group="g", name="same", lock_folder=tmp_path):
        with pytest.raises(ConfigError, match="already runs on this host"):
            Consumer(settings, CallbackSink(lambda r: None), group="g", name="same", lock_folder=tmp_path).start()


def test_an_unreachable_broker_and_bad_names_are_one_line(tmp_path, capsys):
    port = free_port()
    settings = MQTTSettings(broker=f"mqtt://user:hunter2@127.0.0.1:{port}", device_id="x")
    with pytest.raises(PublishError, match="cannot reach broker") as caught:
        Consumer(settings, CallbackSink(lambda r: None), group="g", name="n", lock_folder=tmp_path).start()
    assert "hunter2" not in str(caught.value)
    for args in (["--share", "a/b"], ["--share", "g", "--name", "x y"]):
        code = main(["ingest", "--broker", f"mqtt://127.0.0.1:{port}", "--db", str(tmp_path / "x.sqlite3"), *args])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1, err
    code = main(["ingest", "--broker", f"mqtt://u:hunter2@127.0.0.1:{port}", "--db", str(tmp_path / "x.sqlite3")])
    err = capsys.readouterr().err
    assert code == 2 and "cannot reach broker" in err and "hunter2" not in err


@pytest.mark.parametrize("topic, body, kind", [
    ("edge/d1/cam/detections", {"device_id": "d1", "seq": 3, "ts": 1.5}, "detections"),
    ("edge/d1/alert", {"device_id": "d1", "seq": 4}, "alert"),
    ("edge/d1/status", {"device_id": "d1", "state": "online"}, "status"),
    ("edge/d1/cam/detections", {"device_id": "d2", "seq": 3}, None),  # claims another device
    ("edge/d1/cam/detections", {"device_id": "d1", "seq": "3"}, None),
    ("edge/d1/cam/detections", {"device_id": "d1", "seq": True}, None),
    ("edge/d1/detections", {"device_id": "d1", "seq": 3}, None),  # a camera kind without a camera
    ("edge/d1/cmd/model", {"device_id": "d1", "seq": 3}, None),
    ("other/d1/alert", {"device_id": "d1", "seq": 3}, None),
])
def test_records_take_the_device_from_the_topic_and_need_a_sequence(topic, body, kind):
    record = parse(topic, json.dumps(body).encode(), received_ts=2.0)
    assert (record.kind if record else None) == kind
    if record is not None and kind != "status":
        assert record.key == ("d1", body["seq"])
    assert parse(topic, b"\xff not json", received_ts=2.0) is None
