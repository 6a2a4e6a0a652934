"""``edge-sdk ingest`` into a real PostgreSQL: replays change no row, a database restart loses
nothing (messages wait in the ingest's session), and several ingest processes share one database.

Devices are simulated publishers with outboxes; the broker is a real Mosquitto, the database a real
PostgreSQL 15 started by the fixtures, the ingest real ``edge-sdk ingest`` processes.
"""

from __future__ import annotations

import time

import paho.mqtt.client as mqtt
import pytest

from edge_sdk.fleet.simulate import SimulatedFleet
from edge_sdk.fleet.store import open_store
from support import HOST, wait
from support.fleet import Ingest
from support.postgres import PASSWORD

TABLES = ("messages", "detections", "events", "alerts", "metrics", "devices", "counts")


def dump(url: str) -> dict[str, list]:
    with open_store(url) as store:
        return {name: store.rows(name) for name in TABLES}


def keys(url: str) -> set:
    with open_store(url) as store:
        return store.keys()


def without_password(url: str) -> str:
    return url.replace(f":{PASSWORD}@", "@")


class Recorder:
    """Every message the devices publish, as sent (a plain subscriber: the replay's source)."""

    def __init__(self, port: int) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, bytes(m.payload)))
        self.client.connect(HOST, port)
        self.client.subscribe("edge/+/+/detections", qos=1)
        self.client.subscribe("edge/+/+/events", qos=1)
        self.client.loop_start()

    def replay(self) -> None:
        for topic, payload in self.messages:
            info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(30)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_an_ingest_replayed_twice_changes_no_row(mosquitto, postgres_db, tmp_path):
    ingest = Ingest(mosquitto.url, tmp_path, "a", db=without_password(postgres_db), env={"EDGE_SDK_DB_PASSWORD": PASSWORD}).start()
    wait(lambda: "$share/ingest/" in mosquitto.log(), 30, what="ingest subscribed")
    recorder = Recorder(mosquitto.port)
    time.sleep(0.5)
    fleet = SimulatedFleet(mosquitto.url, tmp_path / "devices", count=5, rate=20.0).start()
    time.sleep(5)
    assert fleet.stop(flush_timeout=30)
    sent = fleet.sent()
    wait(lambda: len(keys(postgres_db)) >= len(sent) and len(recorder.messages) >= len(sent), 60, what="everything stored")
    before = dump(postgres_db)
    assert keys(postgres_db) >= set(sent)
    assert before["detections"] and before["events"], "rows were broken out"
    for _ in range(2):
        recorder.replay()
    time.sleep(3)
    assert ingest.stop() == 0, ingest.output()
    recorder.close()
    assert ingest.totals()["duplicates"] >= 2 * len(sent), ingest.output()
    assert dump(postgres_db) == before
    assert PASSWORD not in ingest.output()


@pytest.mark.parametrize("how", ["restart", "kill"])
def test_a_database_down_mid_ingest_loses_nothing(mosquitto, own_postgres, tmp_path, how):
    url = own_postgres.url()
    ingest = Ingest(mosquitto.url, tmp_path, "a", db=url).start()
    wait(lambda: "$share/ingest/" in mosquitto.log(), 30, what="ingest subscribed")
    fleet = SimulatedFleet(mosquitto.url, tmp_path / "devices", count=5, rate=20.0).start()
    time.sleep(3)
    stored_before = len(keys(url))
    if how == "kill":
        own_postgres.kill()
    else:
        own_postgres.stop()
    time.sleep(5)  # the devices go on; the ingest acknowledges nothing, the broker keeps the rest
    own_postgres.start()
    time.sleep(4)
    assert fleet.stop(flush_timeout=30)
    sent = fleet.sent()
    wait(lambda: set(sent) <= keys(url), 60, what="every message stored after the database came back")
    assert ingest.stop() == 0, ingest.output()
    assert 0 < stored_before < len(sent)
    output = ingest.output()
    assert "retrying" in output and PASSWORD not in output
    assert ingest.totals().get("store_retries", 0) > 0


def test_three_ingest_processes_write_one_database_without_losing_or_doubling(mosquitto, postgres_db, tmp_path):
    members = [Ingest(mosquitto.url, tmp_path, f"m{i}", db=postgres_db).start() for i in range(3)]
    wait(lambda: mosquitto.log().count("$share/ingest/edge/+/+/detections") >= 3, 30, what="3 members subscribed")
    fleet = SimulatedFleet(mosquitto.url, tmp_path / "devices", count=10, rate=20.0).start()
    time.sleep(8)
    assert fleet.stop(flush_timeout=30)
    sent = fleet.sent()
    wait(lambda: set(sent) <= keys(postgres_db), 60, what="every message stored")
    for member in members:
        assert member.stop() == 0, member.output()
    stored = [member.totals()["stored"] for member in members]
    assert all(n > 0.15 * len(sent) for n in stored), stored
    with open_store(postgres_db) as store:
        assert store.count("messages") == len(store.keys()) >= len(sent)
        devices = {d["device_id"] for d in store.devices()}
    assert {device for device, _ in sent} <= devices


def test_bad_databases_are_one_line_without_the_password(mosquitto, tmp_path, capsys, monkeypatch):
    from edge_sdk.cli import main
    from support import free_port

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    secret = "Db-s3cret-Value"
    down = f"postgresql://ingest:{secret}@{HOST}:{free_port()}/fleet"
    monkeypatch.setenv("EDGE_SDK_DB_PASSWORD", secret)
    for db in (down, down.replace(f":{secret}", ""), "mysql://x@y/z", str(tmp_path / "missing" / "dir" / "x.sqlite3")):
        code = main(["ingest", "--broker", mosquitto.url, "--db", db, "--duration", "1"])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1, (db, err)
        assert secret not in err and "Traceback" not in err
    assert "$share" not in mosquitto.log() and "edge-sdk-consumer-" not in mosquitto.log()  # nothing subscribed
