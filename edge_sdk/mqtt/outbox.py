"""The durable outbox: every QoS >= 1 message lives in SQLite until the broker acknowledges it.

paho keeps unacknowledged messages in memory only (and its offline queue is unbounded), so a
killed process or a long outage loses or swells them. Here a message is committed before
``add`` returns, sent in id order, and deleted only on a successful PUBACK. The file is bounded by
count and bytes; beyond either bound the oldest messages are dropped and counted exactly.

WAL with ``synchronous=NORMAL``: a commit survives the process being killed (it is in the OS's
page cache); only a power cut can lose the last few. ``durable=True`` syncs every commit.
"""

from __future__ import annotations

import collections
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from edge_sdk.errors import PublishError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
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
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    reason TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
_COUNTERS = ("seq", "dropped_overflow", "dropped_expired", "dead_lettered")
DEAD_LETTERS_KEPT = 1000
FRESH_MAX = 4096  # newest messages also handed to the sender in memory, to spare it a read
_INSERT = "INSERT INTO messages (topic, payload, qos, retain, created, response_topic, correlation) VALUES (?, ?, ?, ?, ?, ?, ?)"
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


class Outbox:
    """A bounded SQLite queue shared by the producing threads and the network thread."""

    def __init__(
        self, path: str | Path, *, max_messages: int = 100_000, max_bytes: int = 64 * 2**20,
        ttl_s: float | None = None, durable: bool = False,
    ) -> None:
        self.path = Path(path)
        self.max_messages, self.max_bytes, self.ttl_s = max_messages, max_bytes, ttl_s
        self.quarantined: Path | None = None  # set when a damaged file was moved aside at start
        self._lock = threading.Lock()
        self._seq_lock = threading.Lock()
        # Messages just added, in id order, for the sender; when it overflows, fresh_lost tells the
        # sender to read the table instead. Both change only under the lock.
        self.fresh: collections.deque[Message] = collections.deque()
        self.fresh_lost = True
        self._acked: set[int] = set()  # acknowledged, not yet deleted (see flush_acks)
        self._db = self._open(durable)
        self._counters = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        for key in _COUNTERS:
            self._counters.setdefault(key, 0)
        self._seq_reserved = self._counters.pop("seq_reserved", 0)
        self._counters["seq"] = max(self._counters["seq"], self._seq_reserved)
        self._count, self._bytes = self._db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM messages").fetchone()

    # -- opening -------------------------------------------------------------------------------

    def _open(self, durable: bool) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise PublishError(f"outbox folder {self.path.parent} cannot be created: {exc.strerror or exc}") from exc
        try:
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

    def add(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
        response_topic: str | None = None, correlation: bytes | None = None,
    ) -> int:
        """Store one message durably; returns its id. Drops the oldest beyond the bounds."""
        now = time.time()
        row = (topic, payload, qos, int(retain), now, response_topic, correlation)
        with self._lock:
            over = self._count + 1 > self.max_messages or self._bytes + len(payload) > self.max_bytes
            try:
                if over:
                    self._flush_acks()
                    self._db.execute("BEGIN IMMEDIATE")
                # A lone INSERT is its own transaction: one statement, one commit, on the hot path.
                cursor = self._db.execute(_INSERT, row)
                self._count += 1
                self._bytes += len(payload)
                if over:
                    self._trim()
                    self._save_counters()
                    self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if over:
                    self._rollback()
                raise PublishError(f"outbox {self.path}: cannot store a message: {exc}") from exc
            message = Message(cursor.lastrowid, topic, payload, qos, bool(retain), now, response_topic, correlation)
            if over or len(self.fresh) >= FRESH_MAX:
                self._forget_fresh()  # a dropped message may sit in the fresh queue: read the table
            else:
                self.fresh.append(message)
            return message.id

    def _trim(self) -> bool:
        # One message arrives at a time, so at most a few of the oldest go per add.
        dropped = False
        while self._count > self.max_messages or (self._bytes > self.max_bytes and self._count > 1):
            oldest, length = self._db.execute("SELECT id, LENGTH(payload) FROM messages ORDER BY id LIMIT 1").fetchone()
            self._db.execute("DELETE FROM messages WHERE id = ?", (oldest,))
            self._count -= 1
            self._bytes -= length
            self._counters["dropped_overflow"] += 1
            dropped = True
        return dropped

    def _save_counters(self) -> None:
        self._db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", list(self._counters.items()))

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    # -- sending -------------------------------------------------------------------------------

    def take_fresh(self, after: int) -> Message | None:
        """The oldest fresh message with an id above ``after``, or None (then read ``pending``)."""
        with self._lock:
            while self.fresh:
                message = self.fresh.popleft()
                if self.ttl_s is not None and message.created < time.time() - self.ttl_s:
                    self._forget_fresh()  # let pending() expire and count it
                    return None
                if message.id > after:
                    return message
            return None

    def rewind(self) -> None:
        """A new connection resends from the table: drop the fresh queue until it is read through."""
        with self._lock:
            self._forget_fresh()

    def _forget_fresh(self) -> None:
        self.fresh.clear()
        self.fresh_lost = True

    def resume_fresh(self) -> None:
        """The sender has read the table to its end: fresh messages can be trusted again.

        Call before the final ``pending`` read, so nothing added in between is missed.
        """
        with self._lock:
            self.fresh_lost = False

    def pending(self, *, after: int = 0, limit: int = 64) -> list[Message]:
        """Up to ``limit`` stored messages with an id above ``after``, oldest first; expired ones are dropped."""
        with self._lock:
            if self.ttl_s is not None:
                self._expire()
            self._flush_acks()
            rows = self._db.execute(
                "SELECT id, topic, payload, qos, retain, created, response_topic, correlation FROM messages WHERE id > ? ORDER BY id LIMIT ?",
                (after, limit),
            ).fetchall()
        return [Message(r[0], r[1], bytes(r[2]), r[3], bool(r[4]), r[5], r[6], r[7]) for r in rows]

    def _expire(self) -> None:
        self._flush_acks()
        cutoff = time.time() - self.ttl_s
        old = self._db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM messages WHERE created < ?", (cutoff,)).fetchone()
        if old[0]:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM messages WHERE created < ?", (cutoff,))
            self._count -= old[0]
            self._bytes -= old[1]
            self._counters["dropped_expired"] += old[0]
            self._forget_fresh()
            self._save_counters()
            self._db.execute("COMMIT")

    def ack(self, messages: list[Message]) -> None:
        """Forget messages the broker acknowledged.

        The rows are deleted by ``flush_acks`` (the sender calls it a few times a second), so a
        PUBACK costs no write of its own; a process killed in between resends those few, and
        consumers drop them by ``seq``.
        """
        with self._lock:
            for message in messages:
                self._acked.add(message.id)
                self._count -= 1
                self._bytes -= len(message.payload)

    def flush_acks(self) -> None:
        with self._lock:
            self._flush_acks()

    def _flush_acks(self) -> None:
        if not self._acked:
            return
        ids = sorted(self._acked)
        try:
            self._db.execute("BEGIN IMMEDIATE")
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                self._db.execute(f"DELETE FROM messages WHERE id IN ({','.join('?' * len(chunk))})", chunk)
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise PublishError(f"outbox {self.path}: cannot record acknowledgements: {exc}") from exc
        self._acked.clear()

    def dead_letter(self, message_id: int, reason: str) -> None:
        """Move a message the broker refused for good (reason code >= 0x80) out of the queue, once."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                row = self._db.execute("SELECT topic, payload FROM messages WHERE id = ?", (message_id,)).fetchone()
                if row is None:
                    self._db.execute("COMMIT")
                    return
                self._db.execute("INSERT OR REPLACE INTO dead (id, topic, payload, reason, at) VALUES (?, ?, ?, ?, ?)",
                                 (message_id, row[0], row[1], reason, time.time()))
                self._db.execute("DELETE FROM messages WHERE id = ?", (message_id,))
                self._db.execute("DELETE FROM dead WHERE id <= (SELECT id FROM dead ORDER BY id DESC LIMIT 1 OFFSET ?)", (DEAD_LETTERS_KEPT,))
                self._counters["dead_lettered"] += 1
                self._save_counters()
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise PublishError(f"outbox {self.path}: cannot dead-letter a message: {exc}") from exc
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
        with self._lock:
            return {**self._counters, "depth": self._count, "bytes": self._bytes}

    def close(self) -> None:
        with self._lock:
            try:
                self._flush_acks()
                self._save_counters()
                self._db.close()
            except sqlite3.Error:
                pass
