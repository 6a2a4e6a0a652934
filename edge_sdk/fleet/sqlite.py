"""The SQLite store: one file that several ingest processes write at once, each commit on disk before it returns."""

from __future__ import annotations

import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

from edge_sdk.errors import StoreError, StoreUnavailable
from edge_sdk.fleet.schema import TABLES
from edge_sdk.fleet.sql import SQLStore

# Another process's transaction holds the write lock for milliseconds; waiting this long before
# calling the store unavailable rides out a busy minute without giving up on the batch.
BUSY_TIMEOUT_S = 30.0
# Errors a retry may cure (another writer, a full disk that gets room); everything else is permanent.
_TRANSIENT = ("locked", "busy", "disk is full", "disk i/o error")


class SQLiteStore(SQLStore):
    """A fleet database in one SQLite file: WAL (readers never block the writer), ``synchronous=FULL``
    (a commit is on disk before ``write`` returns and the consumer acknowledges), and a busy timeout
    so several processes can write the same file; each write takes the write lock up front
    (``BEGIN IMMEDIATE``), so two processes never both read-then-insert one key. One thread at a
    time: open one store per thread or process."""

    dialect = "sqlite"
    ph = "?"

    def __init__(self, path: str | Path, *, busy_timeout_s: float = BUSY_TIMEOUT_S) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise StoreError(f"SQLite store {self.path} is a folder, not a file")
        if not self.path.parent.is_dir():
            raise StoreError(f"cannot create SQLite store {self.path}: folder {self.path.parent} does not exist")
        self._db: sqlite3.Connection | None = None
        try:
            # isolation_level=None: this code says BEGIN and COMMIT itself, with the lock it needs.
            self._db = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            self._wal(busy_timeout_s)
            self._db.execute("PRAGMA synchronous = FULL")
        except sqlite3.Error as exc:
            self.close()
            raise self._translate(exc) from None
        try:
            with self._transaction() as cur:
                self._create(cur)
        except BaseException:
            self.close()
            raise

    def _wal(self, timeout_s: float) -> None:
        # Switching a new file to WAL needs it to itself and SQLite answers "locked" at once, without
        # its busy handler, while another process is creating the same file: so wait here instead.
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self._db.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    def _translate(self, exc: sqlite3.Error) -> StoreError:
        text = " ".join(str(exc).split())
        cls = StoreUnavailable if any(t in text.lower() for t in _TRANSIENT) else StoreError
        return cls(f"SQLite store {self.path}: {text}")

    @contextmanager
    def _transaction(self, *, durable: bool = True):
        # synchronous=FULL is the connection's; a transaction of advisory data pays it too (one
        # writer at a time anyway, so it holds no other writer up for long).
        if self._db is None:
            raise StoreError(f"{self!r} is closed")
        try:
            cur = self._db.execute("BEGIN IMMEDIATE")
            try:
                yield cur
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise self._translate(exc) from None

    @contextmanager
    def _read(self):
        if self._db is None:
            raise StoreError(f"{self!r} is closed")
        try:
            yield self._db.cursor()
        except sqlite3.Error as exc:
            raise self._translate(exc) from None

    def _insert_messages(self, cur, rows: list[tuple]) -> set[tuple[str, int]]:
        sql = self._insert_sql("messages")
        new = set()
        for row in rows:  # one statement each: SQLite cannot say which rows of an executemany were new
            if cur.execute(sql, row).rowcount == 1:
                new.add((row[0], row[1]))
        return new

    def _insert(self, cur, name: str, rows: list[tuple]) -> None:
        cur.executemany(self._insert_sql(name), rows)

    def _insert_sql(self, name: str) -> str:
        t = TABLES[name]
        return f"INSERT INTO {name} ({', '.join(t.names)}) VALUES ({', '.join('?' * len(t.names))}) ON CONFLICT DO NOTHING"

    def _greatest(self, a: str, b: str) -> str:
        # SQLite's max() of a NULL is NULL; PostgreSQL's GREATEST skips it. Both must keep the known value.
        return f"max(COALESCE({a}, {b}), COALESCE({b}, {a}))"

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
