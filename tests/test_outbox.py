"""The SQLite outbox on its own: order, bounds, expiry, dead letters, damage and a killed writer."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_sdk.mqtt.outbox import SEQ_BLOCK, Outbox


def drain(outbox: Outbox) -> list[bytes]:
    out, cursor = [], 0
    while batch := outbox.pending(after=cursor, limit=50):
        out += [m.payload for m in batch]
        cursor = batch[-1].id
    return out


@pytest.mark.parametrize("durable", [False, True])
def test_messages_come_back_in_order_and_survive_a_reopen(tmp_path, durable):
    outbox = Outbox(tmp_path / "o.sqlite3", durable=durable)
    for i in range(120):
        outbox.add("edge/a/detections", f"m{i}".encode())
    first = outbox.pending(limit=20)
    outbox.ack(first)
    outbox.close()

    reopened = Outbox(tmp_path / "o.sqlite3")
    assert reopened.depth == 100
    assert drain(reopened) == [f"m{i}".encode() for i in range(20, 120)]


def test_acks_are_kept_when_the_process_closes_cleanly(tmp_path):
    outbox = Outbox(tmp_path / "o.sqlite3")
    for i in range(10):
        outbox.add("t", b"x")
    outbox.ack(outbox.pending(limit=10))
    assert outbox.depth == 0
    outbox.close()
    assert Outbox(tmp_path / "o.sqlite3").depth == 0


@pytest.mark.parametrize("bound", ["count", "bytes"])
def test_the_oldest_are_dropped_beyond_the_bound_and_counted_exactly(tmp_path, bound):
    kwargs = {"max_messages": 50} if bound == "count" else {"max_bytes": 50 * 100}
    outbox = Outbox(tmp_path / "o.sqlite3", **kwargs)
    for i in range(130):
        outbox.add("t", f"{i:0100d}".encode()[:100])
    kept = drain(outbox)
    assert kept == [f"{i:0100d}".encode()[:100] for i in range(80, 130)]
    assert outbox.counters()["dropped_overflow"] == 80
    assert outbox.bytes == 50 * 100


def test_expired_messages_are_dropped_and_counted(tmp_path):
    outbox = Outbox(tmp_path / "o.sqlite3", ttl_s=0.3)
    for _ in range(5):
        outbox.add("t", b"old")
    time.sleep(0.4)
    outbox.add("t", b"new")
    assert drain(outbox) == [b"new"]
    assert outbox.counters()["dropped_expired"] == 5


def test_a_refused_message_is_dead_lettered_once(tmp_path):
    outbox = Outbox(tmp_path / "o.sqlite3")
    message_id = outbox.add("edge/b/detections", b"x")
    outbox.dead_letter(message_id, "Not authorized")
    outbox.dead_letter(message_id, "Not authorized")
    assert outbox.depth == 0
    assert outbox.dead_letters() == [("edge/b/detections", "Not authorized")]
    assert outbox.counters()["dead_lettered"] == 1


def test_fresh_messages_reach_the_sender_in_memory_until_it_must_read_the_table(tmp_path):
    outbox = Outbox(tmp_path / "o.sqlite3", max_messages=3)
    assert outbox.fresh_lost  # a new sender starts from the table
    outbox.resume_fresh()
    a = outbox.add("t", b"a")
    assert [m.id for m in outbox.take_fresh(0, 10)] == [a]
    for payload in (b"b", b"c", b"d", b"e"):
        outbox.add("t", payload)  # the fourth overflows: a fresh copy of a dropped row must not be sent
    assert outbox.fresh_lost and outbox.take_fresh(a, 10) == []
    assert drain(outbox) == [b"c", b"d", b"e"]


def test_sequence_numbers_never_repeat_after_a_kill(tmp_path):
    path = tmp_path / "o.sqlite3"
    script = (
        "import sys, time\n"
        "from edge_sdk.mqtt.outbox import Outbox\n"
        f"o = Outbox({str(path)!r})\n"
        "for _ in range(1500):\n"
        "    s = o.next_seq(); o.add('t', str(s).encode())\n"
        "print(s, flush=True)\n"
        "time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        last = int(child.stdout.readline())
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    outbox = Outbox(path)
    assert outbox.depth == 1500  # every committed message survived the kill
    after = outbox.next_seq()
    assert last < after <= last + SEQ_BLOCK + 1


@pytest.mark.parametrize("damage", ["garbage", "truncated", "zero-length"])
def test_a_damaged_file_is_quarantined_and_replaced_and_seq_keeps_growing(tmp_path, damage):
    path = tmp_path / "o.sqlite3"
    used = 0
    if damage == "garbage":
        path.write_bytes(os.urandom(8192))
    else:
        outbox = Outbox(path)
        for i in range(300):
            used = outbox.next_seq()
            outbox.add("t", os.urandom(200))
        outbox.close()
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3] if damage == "truncated" else b"")
        for suffix in ("-wal", "-shm"):  # a power loss takes the write-ahead log with it
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    before = time.time()
    outbox = Outbox(path)
    assert outbox.quarantined is not None and outbox.quarantined.exists()
    assert outbox.depth == 0
    # The old numbers are lost with the file; new ones must not repeat them, or a consumer that
    # de-duplicates on (device_id, seq) would drop new messages as old ones.
    seq = outbox.next_seq()
    assert seq > used and seq >= int(before * 1000)
    outbox.add("t", b"after")
    assert drain(outbox) == [b"after"]
    outbox.close()
    assert Outbox(path).next_seq() > seq  # and the replacement keeps counting from there


def test_outbox_files_are_private(tmp_path):
    outbox = Outbox(tmp_path / "state" / "o.sqlite3")
    outbox.add("t", b"x")
    for suffix in ("", "-wal", "-shm", ".pending"):
        mode = stat.S_IMODE(os.stat(f"{tmp_path / 'state' / 'o.sqlite3'}{suffix}").st_mode)
        assert mode == 0o600, (suffix, oct(mode))
    assert stat.S_IMODE(os.stat(tmp_path / "state").st_mode) == 0o700


def test_a_torn_journal_keeps_its_whole_records_and_a_foreign_one_is_set_aside(tmp_path):
    path = tmp_path / "o.sqlite3"
    outbox = Outbox(path)
    for i in range(10):
        outbox.add("edge/a/detections", f"m{i}".encode(), response_topic="r" if i == 3 else None, correlation=b"c" if i == 3 else None)
    journal = (tmp_path / "o.sqlite3.pending").read_bytes()
    # The process dies mid-write: the journal ends in half a record, and nothing was checkpointed.
    os.close(outbox._journal)
    outbox._db.close()
    (tmp_path / "o.sqlite3.pending").write_bytes(journal[: len(journal) - 5])
    reopened = Outbox(path)
    kept = reopened.pending(limit=50)
    assert [m.payload for m in kept] == [f"m{i}".encode() for i in range(9)]
    assert (kept[3].response_topic, kept[3].correlation) == ("r", b"c")
    assert reopened.quarantined is None
    reopened.close()
    (tmp_path / "o.sqlite3.pending").write_bytes(os.urandom(300))
    again = Outbox(path)
    assert again.quarantined is not None and again.depth == 9
