"""The PostgreSQL store: several ingest processes write one database; a lost server is a pause, not a failure.

Needs psycopg 3 (``pip install "edge-sdk[fleet]"``). The password comes from the URL, else from
``EDGE_SDK_DB_PASSWORD`` or ``PGPASSWORD``; it is handed to the driver apart from the URL and never
appears in an error, a log line or ``repr()``.
"""

from __future__ import annotations

import logging
import re
from contextlib import contextmanager

from edge_sdk.errors import StoreError, StoreUnavailable
from edge_sdk.fleet.schema import TABLES, Table
from edge_sdk.fleet.sql import SQLStore
from edge_sdk.fleet.urls import env_password, redact, scrub

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10
# Any constant shared by every ingest process: concurrent CREATE TABLE IF NOT EXISTS races on the
# catalog (a unique violation in pg_type), so creating the schema is serialised on this lock.
SCHEMA_LOCK = 0x6564_6765_5344_4B  # "edgeSDK"
_ARRAY = {"text": "text", "int": "int8", "float": "float8", "json": "text", "bool": "bool"}
# Open-time failures retrying cannot cure: the URL, the credentials or the database are wrong.
_PERMANENT = ("password", "authentication", "does not exist", "pg_hba.conf", "translate host name", "not known",
              "invalid", "permission denied", "no password supplied", "sslmode")


def _reason(exc: Exception) -> str:
    """The gist of a libpq message: no "connection to server at … failed:" preamble, no hint, lower-case start."""
    text = str(exc).split("\n")[0]
    text = re.sub(r'^connection (?:failed|is bad): |connection to server at "[^"]*"(?: \([^)]*\))?, port \d+ failed: ', "", text)
    text = re.sub(r"^(?:FATAL|ERROR):\s+", "", text.strip())
    return (text[:1].lower() + text[1:]) if text else type(exc).__name__


class PostgresStore(SQLStore):
    """A fleet database in PostgreSQL (``postgresql://user[:password]@host[:port]/database[?options]``).

    Opening connects and creates the schema: a wrong URL, password or database is a
    :class:`StoreError`, a server that does not answer a :class:`StoreUnavailable`. Afterwards a
    lost connection makes ``write`` raise :class:`StoreUnavailable`, and the next call connects
    again. One thread at a time (the consumer's): open one store per thread.
    """

    dialect = "postgres"
    ph = "%s"
    batch_insert = "unnest"  # or "executemany": see _insert_rows

    def __init__(self, url: str) -> None:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise StoreError('PostgreSQL stores need psycopg 3: pip install "edge-sdk[fleet]"') from None
        self.url = redact(url)
        self._params, self._password = self._parse(url)
        self._pg = None
        self._closed = False
        try:
            with self._transaction() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                self._create(cur)
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"PostgresStore({self.url!r})"

    def _parse(self, url: str) -> tuple[dict, str | None]:
        from psycopg.conninfo import conninfo_to_dict

        try:
            params = conninfo_to_dict(url)
        except Exception as exc:
            raise StoreError(f"bad database URL {self.url}: {scrub(_reason(exc), url)}") from None
        password = params.pop("password", None) or env_password()
        params.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
        return params, password

    def _scrub(self, text: str) -> str:
        return scrub(text, self._password)

    def write(self, records):
        reused = self._pg is not None
        try:
            return super().write(records)
        except StoreUnavailable:
            if not reused or self._pg is not None:  # a new connection failed, or a live one hit a deadlock
                raise
            # An idle connection the server dropped (it restarted between two batches): the batch
            # was rolled back, so it goes once more on a new connection instead of failing for nothing.
            return super().write(records)

    # -- connecting and errors ---------------------------------------------------------------
    def _connection(self):
        import psycopg

        if self._closed:
            raise StoreError(f"{self!r} is closed")
        if self._pg is not None and not (self._pg.closed or self._pg.broken):
            return self._pg
        self._drop()
        try:
            self._pg = psycopg.connect(**self._params, password=self._password)
        except psycopg.Error as exc:
            reason = self._scrub(_reason(exc))
            if any(word in reason.lower() for word in _PERMANENT):
                raise StoreError(f"cannot open database {self.url}: {reason}") from None
            raise StoreUnavailable(f"cannot reach database {self.url}: {reason}") from None
        return self._pg

    def _drop(self) -> None:
        if self._pg is not None:
            try:
                self._pg.close()
            except Exception:  # a broken connection may fail to close; it is gone either way
                pass
            self._pg = None

    def _translate(self, exc: Exception) -> StoreError:
        import psycopg

        reason = self._scrub(_reason(exc))
        # OperationalError covers a lost connection, a server shutting down, deadlocks and
        # serialisation failures: all end with the same batch written again later.
        if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
            if self._pg is None or self._pg.closed or self._pg.broken:
                self._drop()
            log.warning("database %s unavailable: %s", self.url, reason)
            return StoreUnavailable(f"database {self.url} unavailable: {reason}")
        return StoreError(f"database {self.url}: {reason}")

    @contextmanager
    def _transaction(self, *, durable: bool = True):
        import psycopg

        conn = self._connection()
        try:
            with conn.transaction(), conn.cursor() as cur:
                if not durable:
                    cur.execute("SET LOCAL synchronous_commit = off")
                yield cur
        except psycopg.Error as exc:
            raise self._translate(exc) from None

    @contextmanager
    def _read(self):
        with self._transaction() as cur:
            yield cur

    # -- inserting ---------------------------------------------------------------------------
    def _insert_messages(self, cur, rows: list[tuple]) -> set[tuple[str, int]]:
        return {(d, s) for d, s in self._insert_rows(cur, TABLES["messages"], rows, returning="device_id, seq")}

    def _insert(self, cur, name: str, rows: list[tuple]) -> None:
        # The rows broken out of a message belong to keys this transaction has just inserted, so
        # they conflict only where someone deleted messages and kept their rows: COPY, which psycopg
        # feeds from C (half the CPU of unnest arrays), and the conflict-proof insert when it must.
        import psycopg

        t = TABLES[name]
        try:
            with cur.connection.transaction(), cur.copy(f"COPY {t.name} ({', '.join(t.names)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        except psycopg.errors.UniqueViolation:
            self._insert_rows(cur, t, rows)

    def _insert_rows(self, cur, t: Table, rows: list[tuple], returning: str = "") -> list[tuple]:
        """One INSERT … SELECT FROM unnest(column arrays) per table (faster than a pipelined
        executemany here, see the module's measurements), or that executemany."""
        if self.batch_insert == "executemany":
            return self._insert_executemany(cur, t, rows, returning)
        names = ", ".join(t.names)
        arrays = ", ".join(f"%b::{_ARRAY[kind]}[]" for _, kind in t.columns)  # binary: no per-element escaping
        select = ", ".join(f"u.{n}::jsonb" if kind == "json" else f"u.{n}" for n, kind in t.columns)
        sql = f"INSERT INTO {t.name} ({names}) SELECT {select} FROM unnest({arrays}) AS u({names}) ON CONFLICT DO NOTHING"
        cur.execute(sql + (f" RETURNING {returning}" if returning else ""), [list(col) for col in zip(*rows)])
        return cur.fetchall() if returning else []

    def _insert_executemany(self, cur, t: Table, rows: list[tuple], returning: str) -> list[tuple]:
        values = ", ".join("%s::jsonb" if kind == "json" else "%s" for _, kind in t.columns)
        sql = f"INSERT INTO {t.name} ({', '.join(t.names)}) VALUES ({values}) ON CONFLICT DO NOTHING"
        if not returning:
            cur.executemany(sql, rows)
            return []
        cur.executemany(f"{sql} RETURNING {returning}", rows, returning=True)
        out = []
        while True:
            out.extend(cur.fetchall())
            if not cur.nextset():
                return out

    def _greatest(self, a: str, b: str) -> str:
        return f"GREATEST({a}, {b})"

    def _columns_source(self, kinds: list[str]) -> str:
        return "SELECT * FROM unnest(" + ", ".join(f"%b::{_ARRAY[kind]}[]" for kind in kinds) + ")"

    def _placeholder(self, kind: str) -> str:
        return "%s::jsonb" if kind == "json" else "%s"  # psycopg sends a str as text, which a jsonb column refuses

    def close(self) -> None:
        self._closed = True
        self._drop()
