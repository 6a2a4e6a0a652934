"""The fleet stores (edge_sdk.fleet): SQLite and a real PostgreSQL 15 through the same tests.

Records come from the runtime's own payload builders (support.fleet) and are checked against the
JSON Schemas first, so the columns are broken out of what devices really send.
"""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import pytest

from edge_sdk.errors import StoreError, StoreUnavailable
from edge_sdk.fleet import records as records_module
from edge_sdk.fleet.postgres import PostgresStore
from edge_sdk.fleet.records import parse
from edge_sdk.fleet.schema import SCHEMA_VERSION, TABLES
from edge_sdk.fleet.sink import WriteResult
from edge_sdk.fleet.sqlite import SQLiteStore
from edge_sdk.fleet.store import open_store, redact
from support import HOST, child_env, free_port, wait
from support import fleet as F
from support.postgres import PASSWORD


class Target:
    """One database to open stores on, and a raw connection to it for what the stores do not do."""

    def __init__(self, dialect: str, url: str) -> None:
        self.dialect, self.url = dialect, url

    def open(self):
        return open_store(self.url)

    def raw(self, sql: str) -> list:
        if self.dialect == "sqlite":
            with sqlite3.connect(self.url) as db:
                return db.execute(sql).fetchall()
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as db:
            cur = db.execute(sql)
            return cur.fetchall() if cur.description else []


@pytest.fixture(params=["sqlite", "postgres"])
def target(request, tmp_path) -> Target:
    if request.param == "sqlite":
        return Target("sqlite", str(tmp_path / "fleet.db"))
    return Target("postgres", request.getfixturevalue("postgres_db"))


@pytest.fixture
def store(target):
    with target.open() as opened:
        yield opened


def dump(store) -> dict:
    return {name: store.rows(name) for name in TABLES if name != "schema_version"}


def one_of_each(device: str = "cam-a") -> list:
    return [F.info(device, 1), F.detections(device, 2), F.track_event(device, 3), F.zone_event(device, 4),
            F.line_event(device, 5), F.counts(device, 6), F.alert(device, 7), F.metrics(device, 8),
            F.status(device, "online", 1_700_000_010.0)]


# -- the schema --------------------------------------------------------------------------------

def test_open_creates_every_table_once_with_its_version(target) -> None:
    with target.open() as store:
        assert {name: store.count(name) for name in TABLES} == {**{n: 0 for n in TABLES}, "schema_version": 1}
    with target.open() as store:  # opening again creates nothing twice
        store.write([F.alert("d", 1)])
        assert store.count("schema_version") == 1
    assert target.raw("SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]


def test_a_database_from_a_newer_edge_sdk_is_refused(target) -> None:
    target.open().close()
    target.raw(f"INSERT INTO schema_version (version, applied_ts) VALUES ({SCHEMA_VERSION + 1}, 0)")
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}, newer"):
        target.open()


def test_a_closed_store_says_so(target) -> None:
    store = target.open()
    store.close()
    with pytest.raises(StoreError, match="is closed"):
        store.write([F.alert("d", 1)])


def test_read_helpers_name_unknown_tables(store) -> None:
    with pytest.raises(ValueError, match="unknown table 'nope'"):
        store.count("nope")


# -- rows broken out of real payloads ----------------------------------------------------------

def test_samples_are_what_devices_send() -> None:
    for record in one_of_each():
        jsonschema.validate(json.loads(record.payload), F.schema_of(record))


def test_every_logged_message_is_kept_verbatim(store) -> None:
    batch = one_of_each()
    assert store.write(batch) == WriteResult(stored=9, duplicates=0)
    logged = [r for r in batch if r.seq is not None]
    assert store.keys() == {r.key for r in logged}
    by_key = {(row[0], row[1]): row for row in store.rows("messages")}
    for r in logged:
        device, seq, kind, topic, camera, schema, ts, received, payload = by_key[r.key]
        assert (kind, topic, camera, schema, ts, received) == (r.kind, r.topic, r.camera, r.body["schema"], r.ts, r.received_ts)
        assert (json.loads(payload) if isinstance(payload, str) else payload) == json.loads(r.payload)


def test_detections_are_one_row_each(store) -> None:
    record = F.detections("cam-a", 2, n=3)
    store.write([record])
    rows = store.rows("detections")
    body = json.loads(record.payload)
    assert len(rows) == len(body["detections"]) == 4
    for row, det in zip(rows, body["detections"]):
        device, seq, idx, camera, frame, frame_ts, class_id, label, score, x1, y1, x2, y2, track_id = row
        assert (device, seq, camera, frame, frame_ts) == ("cam-a", 2, "cam1", body["frame"], body["frame_ts"])
        assert (class_id, label, score, track_id) == (det["class_id"], det["label"], det["score"], det.get("track_id"))
        assert [x1, y1, x2, y2] == det.get("box", [None] * 4)
    assert [row[2] for row in rows] == [0, 1, 2, 3]


def test_events_alerts_and_metrics_break_out_their_fields(store) -> None:
    track, zone, line = F.track_event("d", 3), F.zone_event("d", 4), F.line_event("d", 5)
    alert, metrics = F.alert("d", 7), F.metrics("d", 8)
    store.write([track, zone, line, alert, metrics])
    cols = TABLES["events"].names
    events = {row[1]: dict(zip(cols, row)) for row in store.rows("events")}
    t, z, ln = (json.loads(r.payload) for r in (track, zone, line))
    assert {k: events[3][k] for k in ("type", "action", "track_id", "label", "score", "reason", "frame", "frame_ts", "stationary")} == \
        {k: t[k] for k in ("type", "action", "track_id", "label", "score", "reason", "frame", "frame_ts", "stationary")}
    assert (events[4]["zone"], events[4]["action"], events[4]["dwell_s"], events[4]["line"]) == (z["zone"], z["action"], z["dwell_s"], None)
    assert (events[5]["line"], events[5]["direction"], events[5]["frame"], events[5]["action"]) == (ln["line"], ln["direction"], None, None)
    a = json.loads(alert.payload)
    assert store.rows("alerts") == [("d", 7, a["ts"], a["kind"], a["detail"], a["camera"], None)]
    m = dict(zip(TABLES["metrics"].names, store.rows("metrics")[0]))
    expected = json.loads(metrics.payload)
    assert {k: m[k] for k in m if k not in ("device_id", "seq")} == {k: expected[k] for k in m if k not in ("device_id", "seq")}


def test_device_state_comes_from_info_status_and_every_message(store) -> None:
    batch = one_of_each("cam-a")
    store.write(batch)
    (device,) = store.devices()
    info = json.loads(batch[0].payload)
    assert {k: device[k] for k in ("device_id", "status", "status_ts", "sdk_version", "model_name", "model_sha256", "info_seq")} == {
        "device_id": "cam-a", "status": "online", "status_ts": 1_700_000_010.0, "sdk_version": info["sdk_version"],
        "model_name": info["model"]["name"], "model_sha256": info["model"]["sha256"], "info_seq": 1}
    assert device["last_seq"] == 8
    assert device["last_seen"] == max(r.ts for r in batch if r.seq is not None)
    (counts,) = store.rows("counts")
    body = json.loads(batch[5].payload)
    zones = counts[4] if isinstance(counts[4], dict) else json.loads(counts[4])
    assert counts[:4] == ("cam-a", "cam1", 6, body["ts"]) and zones == body["zones"]


def test_info_carries_the_installed_update(store) -> None:
    update = {"state": "rolled-back", "version": 4, "sha256": "cd" * 32, "detail": "failed on a live frame", "ts": 5.0}
    store.write([F.info("d", 1, version=3, update=update)])
    device = store.devices()[0]
    assert (device["model_version"], device["update_state"], device["update_version"]) == (3, "rolled-back", 4)
    store.write([F.info("d", 2)])  # the bundle it was started with again
    assert (store.devices()[0]["model_version"], store.devices()[0]["update_state"]) == (None, None)


# -- idempotence -------------------------------------------------------------------------------

def test_replaying_a_batch_changes_no_row(store) -> None:
    batch = one_of_each("a") + F.mixed("b", 1, 30)
    first = store.write(batch)
    before = dump(store)
    assert first == WriteResult(stored=len(batch), duplicates=0)
    assert store.write(batch) == WriteResult(stored=0, duplicates=len(batch))
    assert store.write(list(reversed(batch[:17]))) == WriteResult(stored=0, duplicates=17)
    assert dump(store) == before


def test_a_key_repeated_in_one_batch_is_stored_once_first_one_wins(store) -> None:
    original = F.detections("d", 5, n=2)
    impostor = F.detections("d", 5, n=4, camera="cam2")  # same key, other content: a device bug, not news
    result = store.write([original, F.alert("d", 6), original, impostor, F.status("d", "online", 10.0), F.status("d", "online", 10.0)])
    assert result == WriteResult(stored=3, duplicates=3)
    assert store.write([impostor]) == WriteResult(stored=0, duplicates=1)  # nor in a later batch
    assert store.count("detections") == 3 and {row[3] for row in store.rows("detections")} == {"cam1"}


def test_a_status_counts_as_stored_only_when_it_changed_the_device(store) -> None:
    assert store.write([F.status("d", "online", 10.0)]) == WriteResult(stored=1, duplicates=0)
    assert store.write([F.status("d", "offline", 5.0)]) == WriteResult(stored=0, duplicates=1)
    assert store.write([F.status("d", "degraded", 11.0, detail="engine restarted")]) == WriteResult(stored=1, duplicates=0)
    assert store.devices()[0]["status_detail"] == "engine restarted"


def test_newest_state_wins_in_any_arrival_order(target) -> None:
    records = [F.info("d", 10, model="new"), F.info("d", 3, model="old"),
               F.counts("d", 20, inside=7), F.counts("d", 15, inside=1), F.counts("d", 18, camera="cam2"),
               F.status("d", "offline", 300.0), F.status("d", "online", 200.0), F.status("d", "degraded", 300.0, detail="x"),
               F.alert("d", 25)]
    results = []
    target.open().close()
    for attempt in range(6):
        order = random.Random(attempt).sample(records, len(records))
        target.raw("DELETE FROM devices"), target.raw("DELETE FROM counts"), target.raw("DELETE FROM messages")
        with target.open() as store:
            for record in order:  # one batch each: the stored state must already be the newest
                store.write([record])
            results.append((store.devices(), store.rows("counts")))
    device, counts = results[0]
    assert (device[0]["model_name"], device[0]["info_seq"], device[0]["last_seq"]) == ("new", 10, 25)
    assert (device[0]["status"], device[0]["status_ts"]) == ("offline", 300.0)  # the tie at 300: decided by the text, not the order
    assert [(c[1], c[2]) for c in counts] == [("cam1", 20), ("cam2", 18)]
    assert all(r == results[0] for r in results)


def test_a_crashed_connections_last_will_wins_over_its_online_though_stamped_before_it(store) -> None:
    # What a device sends: the Will (offline) is built, and stamped, before the connection's online.
    will = F.status("d", "offline", 100.0, epoch=7)
    online = F.status("d", "online", 101.0, epoch=7)
    degraded = F.status("d", "degraded", 150.0, detail="camera stalled", epoch=7)
    for order in ([online, degraded, will], [will, degraded, online], [degraded, will, online]):
        store.write(order)
        assert store.devices()[0]["status"] == "offline"
    # The next connection (a larger epoch) is newer than any earlier Will, whatever the clocks say.
    store.write([F.status("d", "online", 99.0, epoch=12)])
    assert store.devices()[0]["status"] == "online"
    assert store.write([F.status("d", "offline", 500.0, epoch=7)]) == WriteResult(stored=0, duplicates=1)


def test_the_statuses_a_publisher_sends_carry_its_connection_epoch(mosquitto, tmp_path) -> None:
    from edge_sdk.mqtt.client import Publisher
    from edge_sdk.mqtt.settings import MQTTSettings
    from support.subscriber import Subscriber

    settings = MQTTSettings(broker=mosquitto.url, device_id="d", outbox={"path": tmp_path / "o.sqlite3"})
    watcher = Subscriber(mosquitto.port, "edge/d/status")
    try:
        epochs = []
        for _ in range(2):  # two runs of one device: the second's epoch is larger
            publisher = Publisher(settings).start()
            assert publisher.wait_online(10)
            publisher.close()
        wait(lambda: sum(1 for m in watcher.messages if b'"offline"' in m.payload) >= 2, 10)
        epochs = [json.loads(m.payload)["epoch"] for m in watcher.messages]
    finally:
        watcher.close()
    assert epochs == sorted(epochs) and epochs[0] < epochs[-1]


# -- hostile payloads --------------------------------------------------------------------------

def test_what_a_database_refuses_is_cleaned_not_refused_forever(store) -> None:
    raw = (b'{"schema":"edge-sdk/detections@1","device_id":"d","seq":1,"ts":NaN,"camera":"c","frame":99999999999999999999,'
           b'"frame_ts":1e999,"detections":[{"class_id":true,"label":"a\\u0000b\\ud800","score":"high","box":[0,0,1]},7]}')
    record = parse("edge/d/c/detections", raw, received_ts=5.0)
    assert store.write([record]) == WriteResult(stored=1, duplicates=0)
    assert store.rows("detections") == [
        ("d", 1, 0, "c", None, None, None, "a\ufffdb?", None, None, None, None, None, None),
        ("d", 1, 1, "c", None, None, None, None, None, None, None, None, None, None)]
    payload = store.rows("messages")[0][-1]
    body = payload if isinstance(payload, dict) else json.loads(payload)
    assert body["detections"][0]["label"] == "a\ufffdb?" and body["ts"] is None


def test_a_seq_no_database_can_hold_is_not_a_record() -> None:
    body = {"device_id": "d", "ts": 1.0}
    assert parse("edge/d/alert", json.dumps({**body, "seq": records_module.MAX_SEQ}).encode(), received_ts=0).seq == 2**63 - 1
    assert parse("edge/d/alert", json.dumps({**body, "seq": 2**63}).encode(), received_ts=0) is None
    assert parse("edge/d/alert", json.dumps({**body, "seq": 1, "ts": 10**400}).encode(), received_ts=0).ts is None


# -- several writers ---------------------------------------------------------------------------

WRITER = r"""
import json, random, sys, time
from edge_sdk.errors import StoreUnavailable
from edge_sdk.fleet.store import open_store
from support import fleet as F
target, seed = sys.argv[1], int(sys.argv[2])
records = [F.detections(f"dev-{d}", seq, n=2) for d in range(4) for seq in range(1, 301)]
random.Random(seed).shuffle(records)
stored = duplicates = retries = 0
with open_store(target) as store:
    print("ready", flush=True)
    sys.stdin.readline()  # all writers begin at one word from the test
    for i in range(0, len(records), 25):
        while True:
            try:
                result = store.write(records[i:i + 25])
                break
            except StoreUnavailable:  # a deadlock or a busy file: the consumer writes the batch again
                retries += 1
        stored, duplicates = stored + result.stored, duplicates + result.duplicates
        time.sleep(0.01)  # as a consumer waits for its next batch (else SQLite's busy wait lets one writer do all)
print(json.dumps({"stored": stored, "duplicates": duplicates, "retries": retries}))
"""


def test_three_processes_writing_the_same_keys_store_each_once(target) -> None:
    target.open().close()  # the schema exists before they race (racing to create it: the next test)
    children = [subprocess.Popen([sys.executable, "-c", WRITER, target.url, str(seed)], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True, env=child_env()) for seed in range(3)]
    assert [child.stdout.readline().strip() for child in children] == ["ready"] * 3
    for child in children:
        child.stdin.write("go\n")
        child.stdin.flush()
    outputs = [json.loads(child.communicate(timeout=120)[0]) for child in children]
    assert all(child.returncode == 0 for child in children)
    total = 4 * 300
    assert sum(o["stored"] for o in outputs) == total
    assert sum(o["duplicates"] for o in outputs) == 2 * total
    assert sum(1 for o in outputs if o["stored"]) >= 2, f"the writers did not overlap, so this proved nothing: {outputs}"
    with target.open() as store:
        assert store.keys() == {(f"dev-{d}", seq) for d in range(4) for seq in range(1, 301)}
        assert (store.count("messages"), store.count("detections")) == (total, 3 * total)
        assert [d["last_seq"] for d in store.devices()] == [300] * 4


def test_writers_of_one_batch_in_opposite_orders_neither_deadlock_nor_double(target) -> None:
    batch = [F.detections("d", seq, n=1) for seq in range(1, 401)] + [F.status("d", "online", 5.0)]
    stores = [target.open(), target.open()]
    barrier = threading.Barrier(2)

    def write(store, records):
        barrier.wait()
        return _try(store.write, records)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(write, stores, [batch, batch[::-1]]))
    for store in stores:
        store.close()
    assert all(isinstance(r, WriteResult) for r in results), results  # a deadlock would be StoreUnavailable
    assert sorted((r.stored, r.duplicates) for r in results) == [(0, 401), (401, 0)]


def test_processes_opening_a_new_database_together_create_it_once(target) -> None:
    # Every child imports first, then all open at one instant (CREATE TABLE IF NOT EXISTS races in PostgreSQL).
    code = ("import sys, time; from edge_sdk.fleet.store import open_store; import edge_sdk.fleet.postgres, psycopg; "
            "time.sleep(max(0, float(sys.argv[2]) - time.time())); open_store(sys.argv[1]).close()")
    start = str(time.time() + 2)
    children = [subprocess.Popen([sys.executable, "-c", code, target.url, start], stderr=subprocess.PIPE, text=True)
                for _ in range(4)]
    errors = [child.communicate(timeout=60)[1] for child in children]
    assert [child.returncode for child in children] == [0] * 4, errors
    assert target.raw("SELECT count(*) FROM schema_version") == [(1,)]


# -- SQLite specifics --------------------------------------------------------------------------

def test_sqlite_commits_reach_the_disk_and_readers_do_not_block(tmp_path) -> None:
    path = tmp_path / "fleet.db"
    with SQLiteStore(path) as store:
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert store._db.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
        with sqlite3.connect(path) as other:
            assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            other.execute("BEGIN")
            other.execute("SELECT count(*) FROM messages").fetchone()  # an open reader
            assert store.write([F.alert("d", 1)]).stored == 1


def test_sqlite_store_busy_past_its_timeout_is_unavailable(tmp_path) -> None:
    path = tmp_path / "fleet.db"
    with SQLiteStore(path, busy_timeout_s=0.2) as store:
        with sqlite3.connect(path, isolation_level=None) as other:
            other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
            with pytest.raises(StoreUnavailable, match="locked"):
                store.write([F.alert("d", 1)])
            other.execute("ROLLBACK")
        assert store.write([F.alert("d", 1)]) == WriteResult(stored=1, duplicates=0)


@pytest.mark.parametrize("spec, expected", [
    ("{tmp}/fleet.db", "{tmp}/fleet.db"), ("sqlite:///{tmp}/fleet.db", "{tmp}/fleet.db"), ("sqlite:///fleet.db", "fleet.db"),
])
def test_open_store_takes_a_path_or_a_sqlite_url(tmp_path, monkeypatch, spec, expected) -> None:
    monkeypatch.chdir(tmp_path)
    with open_store(spec.format(tmp=tmp_path)) as store:
        assert isinstance(store, SQLiteStore) and str(store.path) == expected.format(tmp=tmp_path)


@pytest.mark.parametrize("spec, message", [
    ("", "no store given"),
    ("mysql://root:hunter2@db/fleet", "unsupported store mysql://root:\\*\\*\\*@db/fleet"),
    ("sqlite://", "names no file"),
    ("sqlite://fleet.db", "names no file"),
    ("{tmp}/missing/fleet.db", "folder .*missing does not exist"),
    ("{tmp}", "is a folder"),
])
def test_open_store_refuses_what_it_cannot_open(tmp_path, spec, message) -> None:
    with pytest.raises(StoreError, match=message) as caught:
        open_store(spec.format(tmp=tmp_path))
    assert "hunter2" not in str(caught.value) and "\n" not in str(caught.value)


# -- PostgreSQL: secrets, outages --------------------------------------------------------------

def test_redact_hides_every_form_of_password() -> None:
    assert redact("postgresql://ingest:s3cr%40t@db:5432/fleet") == "postgresql://ingest:***@db:5432/fleet"
    assert redact("postgres://u:p@ss/w@rd@db/fleet?sslmode=require") == "postgres://u:***@db/fleet?sslmode=require"
    assert redact("postgresql://db/fleet?user=u&password=pw&x=1") == "postgresql://db/fleet?user=u&password=***&x=1"
    assert redact("postgresql://u@db/fleet") == "postgresql://u@db/fleet"


def test_postgres_store_never_shows_its_password(postgres_db) -> None:
    with open_store(postgres_db) as store:
        assert isinstance(store, PostgresStore)
        for text in (repr(store), str(store), store.url):
            assert PASSWORD not in text and "***" in text


@pytest.mark.parametrize("source", ["EDGE_SDK_DB_PASSWORD", "PGPASSWORD"])
def test_the_password_may_come_from_the_environment(postgres, monkeypatch, source) -> None:
    url = postgres.url(password=False)
    monkeypatch.delenv("EDGE_SDK_DB_PASSWORD", raising=False)
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv(source, PASSWORD)
    with open_store(url) as store:
        assert store.write([F.alert(f"env-{source}", 1)]).stored == 1
    monkeypatch.setenv(source, "not-the-Password-42")
    with pytest.raises(StoreError, match="password authentication failed") as caught:
        open_store(url)
    assert "not-the-Password-42" not in str(caught.value)


def bad_urls(postgres) -> dict[str, tuple[type, str]]:
    return {
        "wrong password": (postgres.url(secret="Wrong-Secret-1"), StoreError, "password authentication failed"),
        "unknown user": (postgres.url(user="nobody", secret="Wrong-Secret-1"), StoreError, "password authentication failed"),
        "missing database": (postgres.url(database="nowhere"), StoreError, 'database "nowhere" does not exist'),
        "bad port": (f"postgresql://ingest:{PASSWORD}@{HOST}:port/fleet", StoreError, 'cannot open database .*: invalid integer value "port"'),
        "nobody listening": (f"postgresql://ingest:{PASSWORD}@{HOST}:{free_port()}/fleet", StoreUnavailable, "connection refused"),
    }


@pytest.mark.parametrize("case", ["wrong password", "unknown user", "missing database", "bad port", "nobody listening"])
def test_bad_urls_are_one_line_without_the_password(postgres, monkeypatch, case) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    url, kind, message = bad_urls(postgres)[case]
    with pytest.raises(StoreError, match=message) as caught:
        open_store(url)
    text = str(caught.value)
    assert type(caught.value) is kind
    assert "\n" not in text and PASSWORD not in text and "Wrong-Secret-1" not in text and redact(url) in text
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.mark.parametrize("outage", ["stop", "kill"])
def test_a_lost_server_is_unavailable_and_the_same_batch_lands_after_restart(own_postgres, caplog, outage) -> None:
    store = open_store(own_postgres.url())
    first, second = F.mixed("d", 1, 20), F.mixed("d", 21, 20)
    store.write(first)
    getattr(own_postgres, outage)()
    for _ in range(2):  # still down: every try says so, and none leaves a half-open state behind
        with pytest.raises(StoreUnavailable) as caught:
            store.write(second)
        assert "\n" not in str(caught.value) and PASSWORD not in str(caught.value)
    with pytest.raises(StoreUnavailable, match="cannot reach database .*connection refused"):
        store.devices()
    own_postgres.start()
    assert store.write(second) == WriteResult(stored=20, duplicates=0)
    assert store.write(first + second) == WriteResult(stored=0, duplicates=40)
    assert store.keys() == {r.key for r in first + second}
    store.close()
    assert PASSWORD not in caplog.text


def test_a_server_restarted_between_batches_costs_no_error(own_postgres) -> None:
    with open_store(own_postgres.url()) as store:
        store.write(F.mixed("d", 1, 5))
        own_postgres.restart()
        assert store.write(F.mixed("d", 6, 5)) == WriteResult(stored=5, duplicates=0)
        own_postgres.kill()
        own_postgres.start()
        assert store.write(F.mixed("d", 11, 5)) == WriteResult(stored=5, duplicates=0)
        assert store.count() == 15


def test_a_transaction_cut_short_leaves_nothing_half_written(own_postgres) -> None:
    import psycopg

    store = open_store(own_postgres.url())
    batch = F.mixed("d", 1, 30)
    # Another session holds a lock the batch needs, so the write is in flight when the server dies.
    blocker = psycopg.connect(own_postgres.url())
    blocker.execute("LOCK TABLE counts IN EXCLUSIVE MODE")
    outcome: list = []
    writer = threading.Thread(target=lambda: outcome.append(_try(store.write, batch)))
    writer.start()
    _wait_for_lock_wait(own_postgres)
    own_postgres.kill()
    writer.join(30)
    _try(blocker.close)
    assert isinstance(outcome[0], StoreUnavailable), outcome
    own_postgres.start()
    with open_store(own_postgres.url()) as check:
        assert check.count("messages") == 0 and check.count("detections") == 0
    assert store.write(batch) == WriteResult(stored=30, duplicates=0)
    store.close()


def _try(fn, *args):
    try:
        return fn(*args)
    except Exception as exc:
        return exc


def _wait_for_lock_wait(server) -> None:
    from support import wait

    wait(lambda: server.sql("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")[0][0] > 0, 10,
         what="the batch to wait on the lock")


def test_postgres_errors_that_retrying_cannot_fix_are_store_errors(postgres, postgres_db) -> None:
    with open_store(postgres_db) as store:
        db = postgres_db.rsplit("/", 1)[1]
        postgres.sql("ALTER TABLE alerts OWNER TO postgres", database=db)  # ingest may no longer write alerts
        with pytest.raises(StoreError, match="permission denied") as caught:
            store.write([F.alert("d", 1)])
        assert type(caught.value) is StoreError
        assert store.count("messages") == 0  # the whole batch rolled back
        assert store.write([F.detections("d", 2)]).stored == 1  # and the connection still works

