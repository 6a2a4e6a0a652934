"""The write path every fleet store shares, and the read helpers; a dialect (``sqlite``, ``postgres``) supplies the SQL hooks.

A batch is one transaction: insert the messages that are new on ``(device_id, seq)``, break out
only those, then upsert the state tables so that the newest state wins whatever order messages
arrive in.

``WriteResult.stored`` counts the logged records new to the store plus the statuses that changed a
device's state; ``duplicates`` counts the rest (keys already stored or repeated within the batch,
statuses older than or equal to the stored one), so ``stored + duplicates == len(records)``.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager

from edge_sdk.errors import StoreError
from edge_sdk.fleet import rows as R
from edge_sdk.fleet.records import Record
from edge_sdk.fleet.schema import COUNTS, DEVICES, SCHEMA_VERSION, TABLES, ddl, table
from edge_sdk.fleet.sink import WriteResult


class SQLStore:
    """The write path and the read helpers every dialect shares; a dialect supplies the SQL hooks."""

    dialect = ""
    ph = "?"  # the driver's placeholder

    # -- the dialect's hooks -----------------------------------------------------------------
    def _transaction(self, *, durable: bool = True) -> AbstractContextManager:
        """A cursor inside one transaction; commits at the end, translates the driver's errors.
        ``durable=False`` may return before the commit reaches the disk (advisory data only)."""
        raise NotImplementedError

    def _read(self) -> AbstractContextManager:
        raise NotImplementedError

    def _insert_messages(self, cur, rows: list[tuple]) -> set[tuple[str, int]]:
        """Inserts the rows that are new; the keys of those."""
        raise NotImplementedError

    def _insert(self, cur, name: str, rows: list[tuple]) -> None:
        raise NotImplementedError

    def _greatest(self, a: str, b: str) -> str:
        raise NotImplementedError

    def _placeholder(self, kind: str) -> str:
        """The parameter marker for a column of portable type ``kind``."""
        return self.ph

    # -- the write path ----------------------------------------------------------------------
    def write(self, records: list[Record]) -> WriteResult:
        """Stores ``records`` in one transaction (see the module's docstring for the counts)."""
        if not records:
            return WriteResult(stored=0, duplicates=0)
        batch = R.sort_out(records)
        with self._transaction() as cur:
            new = self._insert_messages(cur, [R.message_row(r) for r in batch.logged]) if batch.logged else set()
            fresh = [r for r in batch.logged if r.key in new]
            for name, rows in R.child_rows(fresh).items():
                if rows:  # a frame without detections has none
                    self._insert(cur, name, rows)
            changed = self._upsert_state(cur, batch, fresh)
        self._mark_seen(batch)
        logged_dups = len(batch.logged) - len(fresh) + batch.repeats
        return WriteResult(stored=len(fresh) + changed, duplicates=logged_dups + len(batch.statuses) - changed)

    def _upsert_state(self, cur, batch: R.Batch, fresh: list[Record]) -> int:
        # The devices whose state changes are touched first, in device order, so that concurrent
        # writers lock those rows in one order (no deadlock) before the conditional upserts below.
        self._feed(cur, "seen", R.seen_rows([], also=[r.device_id for r in (*fresh, *batch.statuses) if r.kind in ("info", "status")]))
        self._many(cur, self._sql("info"), [R.info_row(r) for r in fresh if r.kind == "info"])
        self._many(cur, self._sql("counts"), sorted((R.counts_row(r) for r in fresh if r.kind == "counts"), key=lambda t: t[:3]))
        return sum(1 for r in batch.statuses if cur.execute(self._sql("status"), R.status_row(r)).fetchall())

    def _mark_seen(self, batch: R.Batch) -> None:
        """Each device's last seq, last seen and last received, in a short transaction of its own
        after the batch's. Every member of a shared group writes the same devices' rows: held through
        each batch's commit, their locks made the members take turns (measured: three members with
        500 devices stored 1.6x one member's rate, against 2.1x with 100). These columns only say
        when a device was last heard; the messages are already stored, and a batch written again
        after a failure here writes them again (never backwards: a replay changes nothing)."""
        seen = R.seen_rows(batch.logged, also=[r.device_id for r in batch.statuses])
        if seen:
            with self._transaction(durable=False) as cur:
                self._feed(cur, "seen", seen)

    def _many(self, cur, sql: str, rows: list[tuple]) -> None:
        if rows:
            cur.executemany(sql, rows)

    def _sql(self, name: str) -> str:
        cache = self.__dict__.setdefault("_sql_cache", {})
        if name not in cache:
            cache[name] = getattr(self, f"_{name}_sql")()
        return cache[name]

    def _columns_source(self, kinds: list[str]) -> str | None:
        """For a dialect that takes a batch as column arrays, the SELECT that unpacks them; else None."""
        return None

    def _feed(self, cur, name: str, rows: list[tuple]) -> None:
        """Runs the statement ``name`` (an ``arrays`` upsert) over ``rows``: once, over column arrays,
        where the dialect takes them (a batch of a 500-device fleet touches 500 device rows)."""
        if not rows:
            return
        if self._columns_source(["text"]) is None:
            cur.executemany(self._sql(name), rows)
        else:
            cur.execute(self._sql(name), [list(column) for column in zip(*rows)])

    def _upsert(self, name: str, cols: list[str], sets: list[str], where: str = "", returning: str = "", *,
                arrays: bool = False) -> str:
        t = TABLES[name]
        kinds = dict(t.columns)
        source = self._columns_source([kinds[c] for c in cols]) if arrays else None
        values = source or "VALUES (" + ", ".join(self._placeholder(kinds[c]) for c in cols) + ")"
        sql = (f"INSERT INTO {name} ({', '.join(cols)}) {values} ON CONFLICT ({', '.join(t.key)}) "
               f"DO UPDATE SET {', '.join(sets)}")
        return sql + (f" WHERE {where}" if where else "") + (f" RETURNING {returning}" if returning else "")

    def _seen_sql(self) -> str:
        cols = ["device_id", "last_seq", "last_seen", "last_received"]
        # last_received moves only with a newer seq: a redelivery or a replay arrives later, yet is not news.
        received = ("last_received = CASE WHEN devices.last_seq IS NULL OR excluded.last_seq > devices.last_seq "
                    "THEN excluded.last_received ELSE devices.last_received END")
        return self._upsert("devices", cols, [received, *(f"{c} = {self._greatest(f'devices.{c}', f'excluded.{c}')}" for c in cols[1:3])],
                            arrays=True)

    def _info_sql(self) -> str:
        cols = ["device_id", "sdk_version", "model_name", "model_sha256", "model_target", "model_precision", "model_task",
                "model_version", "update_state", "update_version", "info_seq", "info_ts"]
        return self._upsert("devices", cols, [f"{c} = excluded.{c}" for c in cols[1:]],
                            "devices.info_seq IS NULL OR devices.info_seq < excluded.info_seq")

    def _status_sql(self) -> str:
        # The larger order wins (rows.status_row): the result does not depend on arrival order.
        cols = ["device_id", "status", "status_detail", "status_ts", "status_order"]
        newer = "devices.status_order IS NULL OR devices.status_order < excluded.status_order"
        return self._upsert("devices", cols, [f"{c} = excluded.{c}" for c in cols[1:]], newer, returning="device_id")

    def _counts_sql(self) -> str:
        cols = list(COUNTS.names)
        return self._upsert("counts", cols, [f"{c} = excluded.{c}" for c in cols[2:]], "counts.seq < excluded.seq")

    def _create(self, cur) -> None:
        """The schema if missing; StoreError when the database was made by a newer edge-sdk."""
        for statement in ddl(self.dialect):
            cur.execute(statement)
        cur.execute(f"INSERT INTO schema_version (version, applied_ts) VALUES ({self.ph}, {self.ph}) ON CONFLICT DO NOTHING",
                    (SCHEMA_VERSION, time.time()))
        version = cur.execute("SELECT max(version) FROM schema_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self!r} holds schema version {version}, newer than this edge-sdk's {SCHEMA_VERSION}: upgrade edge-sdk")

    # -- the read side -----------------------------------------------------------------------
    def devices(self) -> list[dict]:
        """Every device's state (the ``devices`` table's columns), by device id."""
        with self._read() as cur:
            cur.execute(f"SELECT {', '.join(DEVICES.names)} FROM devices ORDER BY device_id")
            return [dict(zip(DEVICES.names, row)) for row in cur.fetchall()]

    def count(self, name: str = "messages") -> int:
        """How many rows ``name`` holds (a table of ``edge_sdk.fleet.schema``)."""
        t = table(name)
        with self._read() as cur:
            return cur.execute(f"SELECT count(*) FROM {t.name}").fetchone()[0]

    def keys(self) -> set[tuple[str, int]]:
        """Every stored ``(device_id, seq)``."""
        with self._read() as cur:
            return {(d, s) for d, s in cur.execute("SELECT device_id, seq FROM messages").fetchall()}

    def rows(self, name: str) -> list[tuple]:
        """All of a table, sorted by its key (for dumps and tests)."""
        t = table(name)
        with self._read() as cur:
            return [tuple(row) for row in cur.execute(f"SELECT {', '.join(t.names)} FROM {t.name} ORDER BY {', '.join(t.key)}").fetchall()]

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        raise NotImplementedError
