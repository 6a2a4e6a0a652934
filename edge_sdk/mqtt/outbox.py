"""The durable outbox: every QoS >= 1 message lives in SQLite until the broker acknowledges it.

paho keeps unacknowledged messages in memory only (and its offline queue is unbounded), so a
killed process or a long outage loses or swells them. Here a message is on disk before ``add``
returns, sent in id order, and forgotten only on a successful PUBACK. The store is bounded by count
and bytes; beyond either bound the oldest messages are dropped and counted exactly.

Two files. ``add`` appends one checksummed record to a journal (a single ``write``: it survives
the process being killed, as it is in the OS's page cache). A few times a second the sender moves
the journal into SQLite (WAL, ``synchronous=NORMAL``) in one transaction, skipping messages the
broker has already acknowledged, and empties the journal. A commit per message cost more CPU than
paho's own work per message; this costs one ``write``. At start the journal is replayed; a torn
last record (a power cut mid-write) is skipped. ``durable=True`` also fsyncs every record.
"""

from __future__ import annotations

import collections
import os
import sqlite3
import struct
import zlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from edge_sdk.errors import PublishError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    created REAL NOT NULL,
    response_topic TEXT,
    correlation BLOB
);
CREATE TABLE IF NOT EXISTS dead (
    id INTEGER PRIMARY KEY,
    message_id INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    reason TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
_COUNTERS = ("seq", "dropped_overflow", "dropped_expired", "dead_lettered")
DEAD_LETTERS_KEPT = 1000
FRESH_MAX = 16384  # newest messages also handed to the sender in memory, to spare it a read
JOURNAL_MAX_BYTES = 4 * 2**20  # the journal moves into SQLite when it is this big...
JOURNAL_MAX_AGE_S = 5.0  # ...or this old, or when everything in it is acknowledged
_MAGIC = b"EOB1"
_FIXED = struct.Struct("<QdBBHHHI")  # id, created, qos, retain, topic, response topic, correlation, payload lengths
_NONE = 0xFFFF  # length of an absent response topic or correlation
# Ids are given here, not by AUTOINCREMENT: that would rewrite sqlite_sequence's page on every
# commit (a quarter of the insert's cost, measured). They only need to grow within one process;
# a new process resends from the start of the table.
_INSERT = "INSERT OR IGNORE INTO messages (id, topic, payload, qos, retain, created, response_topic, correlation) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
SEQ_BLOCK = 1024


@dataclass(frozen=True)
class Message:
    """One stored message, as the sender reads it."""

    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    created: float
    response_topic: str | None = None
    correlation: bytes | None = None


def _record(m: Message) -> bytes:
    topic = m.topic.encode()
    response = m.response_topic.encode() if m.response_topic is not None else b""
    correlation = m.correlation or b""
    fixed = _FIXED.pack(
        m.id, m.created, m.qos, int(m.retain), len(topic), len(response) if m.response_topic is not None else _NONE,
        len(correlation) if m.correlation is not None else _NONE, len(m.payload),
    )
    body = fixed + topic + response + correlation + m.payload
    return _MAGIC + struct.pack("<I", zlib.crc32(body)) + body


def _replay(data: bytes) -> tuple[list[Message], bool]:
    """The whole records in ``data``, and whether it ended cleanly (no torn or foreign bytes)."""
    messages, at, head = [], 0, len(_MAGIC) + 4
    while at < len(data):
        if data[at:at + 4] != _MAGIC or len(data) - at < head + _FIXED.size:
            return messages, False
        (crc,) = struct.unpack_from("<I", data, at + 4)
        ident, created, qos, retain, tl, rl, cl, pl = _FIXED.unpack_from(data, at + head)
        size = _FIXED.size + tl + (0 if rl == _NONE else rl) + (0 if cl == _NONE else cl) + pl
        body = data[at + head:at + head + size]
        if len(body) < size or zlib.crc32(body) != crc:
            return messages, False
        cursor = _FIXED.size
        topic = body[cursor:cursor + tl].decode()
        cursor += tl
        response = None if rl == _NONE else body[cursor:cursor + rl].decode()
        cursor += 0 if rl == _NONE else rl
        correlation = None if cl == _NONE else body[cursor:cursor + cl]
        cursor += 0 if cl == _NONE else cl
        messages.append(Message(ident, topic, body[cursor:cursor + pl], qos, bool(retain), created, response, correlation))
        at += head + size
    return messages, True


def _row(m: Message) -> tuple:
    return (m.id, m.topic, m.payload, m.qos, int(m.retain), m.created, m.response_topic, m.correlation)


class Outbox:
    """A bounded SQLite queue shared by the producing threads and the network thread."""

    def __init__(
        self, path: str | Path, *, max_messages: int = 100_000, max_bytes: int = 64 * 2**20,
        ttl_s: float | None = None, durable: bool = False,
    ) -> None:
        self.path = Path(path)
        self.max_messages, self.max_bytes, self.ttl_s = max_messages, max_bytes, ttl_s
        self.quarantined: Path | None = None  # set when a damaged file was moved aside at start
        # Lock order: _seq_lock, then _lock (the connection and the counters written with rows),
        # then _mem (what the sender shares: fresh queue, acknowledged ids, depth and bytes).
        self._seq_lock = threading.Lock()
        self._lock = threading.Lock()
        self._mem = threading.Lock()
        # Messages just added, in id order, for the sender; when it overflows, fresh_lost tells the
        # sender to read the table instead. Both change only under the lock.
        self.fresh: collections.deque[Message] = collections.deque()
        self.fresh_lost = True
        self._acked: set[int] = set()  # acknowledged, not yet deleted (see checkpoint)
        self._durable = durable
        self._db = self._open(durable)
        self._unsaved: list[Message] = []  # in the journal, not yet in SQLite
        # Not "-journal": SQLite would take a file of that name for its own hot journal.
        self._journal_path = Path(str(self.path) + ".pending")
        self._journal = self._open_journal()
        self._journal_bytes, self._last_checkpoint = 0, time.monotonic()
        self._counters = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        for key in _COUNTERS:
            self._counters.setdefault(key, 0)
        self._seq_reserved = self._counters.pop("seq_reserved", 0)
        self._epoch = self._counters.pop("epoch", 0)
        self._counters["seq"] = max(self._counters["seq"], self._seq_reserved)
        if self.quarantined is not None and self._counters["seq"] == 0:
            # The numbers the damaged file had given out are lost with it, and consumers drop a
            # (device_id, seq) they have seen: starting again at 1 would make new messages look like
            # old ones. Milliseconds since 1970 are above any seq a device has used, unless it
            # sustained over 1,000 messages a second for its whole life.
            self._counters["seq"] = int(time.time() * 1000)
        self._count, self._bytes, last = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0), COALESCE(MAX(id), 0) FROM messages"
        ).fetchone()
        self._next_id = last + 1

    # -- opening -------------------------------------------------------------------------------

    def _open(self, durable: bool) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise PublishError(f"outbox folder {self.path.parent} cannot be created: {exc.strerror or exc}") from exc
        try:
            if self.path.exists() and self.path.stat().st_size == 0:
                # SQLite writes its header as the outbox opens, so an empty file was cut short
                # (a power loss before the file system flushed it), not made by us.
                raise sqlite3.DatabaseError("the file is empty")
            return self._connect(durable)
        except sqlite3.DatabaseError as exc:
            # A truncated or overwritten file must not stop the device from publishing: move it
            # aside (it may still hold messages worth recovering by hand) and start empty.
            self.quarantined = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
            for suffix in ("", "-wal", "-shm"):
                source = Path(str(self.path) + suffix)
                if source.exists():
                    os.replace(source, Path(str(self.quarantined) + suffix))
            try:
                return self._connect(durable)
            except sqlite3.DatabaseError as again:
                raise PublishError(f"outbox {self.path} cannot be created: {again}") from exc

    def _open_journal(self) -> int:
        """Open the journal, replaying into SQLite whatever a previous process left in it."""
        path = self._journal_path
        if path.exists():
            data = path.read_bytes()
            messages, clean = _replay(data)
            if not clean and not messages and data:
                # Not a journal at all: keep it for inspection, start a new one.
                aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
                os.replace(path, aside)
                self.quarantined = self.quarantined or aside
            elif messages:
                try:
                    self._db.execute("BEGIN IMMEDIATE")
                    self._db.executemany(_INSERT, [_row(m) for m in messages])
                    self._db.execute("COMMIT")
                except sqlite3.Error as exc:
                    self._rollback()
                    raise PublishError(f"outbox {self.path}: cannot replay its journal: {exc}") from exc
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.ftruncate(fd, 0)
        except OSError as exc:
            raise PublishError(f"outbox journal {path} cannot be opened: {exc.strerror or exc}") from exc
        return fd

    def _connect(self, durable: bool) -> sqlite3.Connection:
        if not self.path.exists():
            # SQLite creates its -wal and -shm files with the database file's mode, so 0600 here
            # keeps queued detections private to the runtime's user.
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
        try:
            # Each commit appends whole pages to the WAL: 1 KiB pages (not 4) make a detection's
            # commit write a quarter of the bytes, which measured 1.7x more commits per second.
            db.execute("PRAGMA page_size=1024")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("integrity check failed")
            db.executescript(_SCHEMA)
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    # -- producing -----------------------------------------------------------------------------

    def next_seq(self) -> int:
        """The next message sequence number: increasing, never reused, even across a killed process.

        Numbers are reserved in blocks (one write per block, not per message); a restart continues
        after the reserved block, so a crash leaves a gap, never a repeat.
        """
        with self._seq_lock:
            self._counters["seq"] += 1
            if self._counters["seq"] > self._seq_reserved:
                self._seq_reserved = self._counters["seq"] + SEQ_BLOCK
                try:
                    with self._lock:
                        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('seq_reserved', ?)", (self._seq_reserved,))
                except sqlite3.Error as exc:
                    raise PublishError(f"outbox {self.path}: cannot reserve sequence numbers: {exc}") from exc
            return self._counters["seq"]

    def next_epoch(self) -> int:
        """A number larger than any this outbox gave before, restarts included: a connection's epoch.

        Milliseconds since 1970, or the last one plus one when the clock stepped back. Not a
        sequence number: those must stay without gaps a consumer would take for losses.
        """
        with self._seq_lock:
            self._epoch = max(self._epoch + 1, int(time.time() * 1000))
            try:
                with self._lock:
                    self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('epoch', ?)", (self._epoch,))
            except sqlite3.Error as exc:
                raise PublishError(f"outbox {self.path}: cannot record the connection epoch: {exc}") from exc
            return self._epoch

    def add(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
        response_topic: str | None = None, correlation: bytes | None = None,
    ) -> int:
        """Store one message durably; returns its id. Drops the oldest beyond the bounds."""
        now = time.time()
        with self._lock:
            row = (self._next_id, topic, payload, qos, int(retain), now, response_topic, correlation)
            self._next_id += 1
            over = self._count + 1 > self.max_messages or self._bytes + len(payload) > self.max_bytes
            if over:
                return self._add_over_bounds(row)
            message = Message(row[0], topic, payload, qos, bool(retain), now, response_topic, correlation)
            record = _record(message)
            try:
                os.write(self._journal, record)
                if self._durable:
                    os.fsync(self._journal)
            except OSError as exc:
                raise PublishError(f"outbox {self.path}: cannot store a message: {exc.strerror or exc}") from exc
            self._unsaved.append(message)
            self._journal_bytes += len(record)
            if self._journal_bytes >= JOURNAL_MAX_BYTES:
                self._checkpoint()  # offline for long: keep the journal, and its copy in memory, small
            with self._mem:
                self._count += 1
                self._bytes += len(payload)
                if len(self.fresh) >= FRESH_MAX:
                    self._forget_fresh()  # the sender fell behind: it reads the table instead
                else:
                    self.fresh.append(message)
            return message.id

    def _add_over_bounds(self, row: tuple) -> int:
        self._checkpoint()
        with self._mem:  # counts change with the rows here; the sender waits this rare path out
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute(_INSERT, row)
                message_id = row[0]
                self._count += 1
                self._bytes += len(row[2])
                self._trim()
                self._save_counters()
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise PublishError(f"outbox {self.path}: cannot store a message: {exc}") from exc
            self._forget_fresh()  # a dropped message may sit in the fresh queue: read the table
            return message_id

    def _trim(self) -> None:
        # One message arrives at a time, so at most a few of the oldest go per add.
        while self._count > self.max_messages or (self._bytes > self.max_bytes and self._count > 1):
            oldest, length = self._db.execute("SELECT id, LENGTH(payload) FROM messages ORDER BY id LIMIT 1").fetchone()
            self._db.execute("DELETE FROM messages WHERE id = ?", (oldest,))
            self._count -= 1
            self._bytes -= length
            self._counters["dropped_overflow"] += 1

    def _save_counters(self) -> None:
        self._db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", list(self._counters.items()))

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    # -- sending -------------------------------------------------------------------------------

    def take_fresh(self, after: int, limit: int) -> list[Message]:
        """Up to ``limit`` fresh messages with ids above ``after``, oldest first (empty: read ``pending``)."""
        taken: list[Message] = []
        with self._mem:
            while self.fresh and len(taken) < limit:
                message = self.fresh.popleft()
                if self.ttl_s is not None and message.created < time.time() - self.ttl_s:
                    self._forget_fresh()  # let pending() expire and count it
                    break
                if message.id > after:
                    taken.append(message)
        return taken

    def rewind(self) -> None:
        """A new connection resends from the table: drop the fresh queue until it is read through."""
        with self._mem:
            self._forget_fresh()

    def _forget_fresh(self) -> None:
        self.fresh.clear()
        self.fresh_lost = True

    def resume_fresh(self) -> None:
        """The sender has read the table to its end: fresh messages can be trusted again.

        Call before the final ``pending`` read, so nothing added in between is missed.
        """
        with self._mem:
            self.fresh_lost = False

    def pending(self, *, after: int = 0, limit: int = 64) -> list[Message]:
        """Up to ``limit`` stored messages with an id above ``after``, oldest first; expired ones are dropped."""
        with self._lock:
            if self.ttl_s is not None:
                self._expire()
            self._checkpoint()
            with self._mem:
                acked = set(self._acked)
            rows = self._db.execute(
                "SELECT id, topic, payload, qos, retain, created, response_topic, correlation FROM messages WHERE id > ? ORDER BY id LIMIT ?",
                (after, limit),
            ).fetchall()
        return [Message(r[0], r[1], bytes(r[2]), r[3], bool(r[4]), r[5], r[6], r[7]) for r in rows if r[0] not in acked]

    def _expire(self) -> None:
        self._checkpoint()
        cutoff = time.time() - self.ttl_s
        old = self._db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM messages WHERE created < ?", (cutoff,)).fetchone()
        if old[0]:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM messages WHERE created < ?", (cutoff,))
            self._counters["dropped_expired"] += old[0]
            self._save_counters()
            self._db.execute("COMMIT")
            with self._mem:
                self._count -= old[0]
                self._bytes -= old[1]
                self._forget_fresh()

    def ack(self, messages: list[Message]) -> None:
        """Forget messages the broker acknowledged.

        Rows are deleted, or never written, at the next ``checkpoint`` (the sender calls it a few
        times a second), so a PUBACK costs no write of its own; a process killed in between
        resends those few, and consumers drop them by ``seq``.
        """
        with self._mem:
            for message in messages:
                self._acked.add(message.id)
                self._count -= 1
                self._bytes -= len(message.payload)

    def checkpoint(self, *, force: bool = False) -> None:
        """Move the journal into SQLite and forget acknowledged rows, in one transaction.

        Unless ``force``d, it waits while nothing is acknowledged and the journal is young and
        small. A message still in flight gets a row, deleted at the next checkpoint.
        """
        with self._lock:
            self._checkpoint(force=force)

    def _checkpoint(self, *, force: bool = True) -> None:
        with self._mem:
            acked = set(self._acked)
        if not self._unsaved and not acked:
            return
        # Waiting for every journal message to be acknowledged never ends at a steady rate (the
        # newest PUBACK is always a millisecond away), and a process killed meanwhile resends every
        # acknowledged message still in the journal: 5 s of traffic, 4-7 % duplicates in the
        # combined fault gate. So any acknowledgement is worth a checkpoint now.
        if not force and not acked and self._journal_bytes < JOURNAL_MAX_BYTES and time.monotonic() - self._last_checkpoint < JOURNAL_MAX_AGE_S:
            return
        unsaved, self._unsaved = self._unsaved, []
        rows = [_row(m) for m in unsaved if m.id not in acked]
        stale = sorted(acked.difference(m.id for m in unsaved))
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(_INSERT, rows)
            for i in range(0, len(stale), 500):
                chunk = stale[i:i + 500]
                self._db.execute(f"DELETE FROM messages WHERE id IN ({','.join('?' * len(chunk))})", chunk)
            self._db.execute("COMMIT")
            os.ftruncate(self._journal, 0)  # after the commit: a crash in between replays, harmlessly
            self._journal_bytes, self._last_checkpoint = 0, time.monotonic()
        except (sqlite3.Error, OSError) as exc:
            self._rollback()
            self._unsaved = unsaved + self._unsaved
            raise PublishError(f"outbox {self.path}: cannot save messages: {exc}") from exc
        with self._mem:
            self._acked.difference_update(acked)

    def dead_letter(self, message_id: int, reason: str) -> None:
        """Move a message the broker refused for good (reason code >= 0x80) out of the queue, once."""
        with self._lock:
            self._checkpoint()
            try:
                self._db.execute("BEGIN IMMEDIATE")
                row = self._db.execute("SELECT topic, payload FROM messages WHERE id = ?", (message_id,)).fetchone()
                if row is None:
                    self._db.execute("COMMIT")
                    return
                self._db.execute("INSERT INTO dead (message_id, topic, payload, reason, at) VALUES (?, ?, ?, ?, ?)",
                                 (message_id, row[0], row[1], reason, time.time()))
                self._db.execute("DELETE FROM messages WHERE id = ?", (message_id,))
                self._db.execute("DELETE FROM dead WHERE id <= (SELECT id FROM dead ORDER BY id DESC LIMIT 1 OFFSET ?)", (DEAD_LETTERS_KEPT,))
                self._counters["dead_lettered"] += 1
                self._save_counters()
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise PublishError(f"outbox {self.path}: cannot dead-letter a message: {exc}") from exc
            with self._mem:
                self._count -= 1
                self._bytes -= len(row[1])

    def dead_letters(self) -> list[tuple[str, str]]:
        """(topic, reason) of the dead letters kept, oldest first."""
        with self._lock:
            return self._db.execute("SELECT topic, reason FROM dead ORDER BY id").fetchall()

    # -- reading -------------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        return self._count

    @property
    def bytes(self) -> int:
        return self._bytes

    def counters(self) -> dict[str, int]:
        with self._lock, self._mem:
            return {**self._counters, "depth": self._count, "bytes": self._bytes}

    def close(self) -> None:
        with self._lock:
            try:
                self._checkpoint()
                self._save_counters()
                self._db.close()
            except (sqlite3.Error, PublishError):
                pass
            os.close(self._journal)
