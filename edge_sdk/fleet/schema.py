"""The fleet database's tables, once for both dialects (SQLite, PostgreSQL).

Logs are keyed on the device's ``(device_id, seq)`` and only ever inserted; state (``devices``,
``counts``) is upserted, newest wins, so a message arriving late never overwrites a newer one.
A device message's verbatim payload lives once, in ``messages``; the other log tables break out
the columns worth querying and join back on the key.
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA_VERSION = 1

# Portable column types -> each dialect's. "json" is JSONB in PostgreSQL (queryable), text in SQLite.
TYPES = {
    "sqlite": {"text": "TEXT", "int": "INTEGER", "float": "REAL", "json": "TEXT", "bool": "INTEGER"},
    "postgres": {"text": "TEXT", "int": "BIGINT", "float": "DOUBLE PRECISION", "json": "JSONB", "bool": "BOOLEAN"},
}


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[tuple[str, str], ...]  # (name, portable type)
    key: tuple[str, ...]
    required: tuple[str, ...] = ()  # NOT NULL besides the key

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns)

    def ddl(self, dialect: str) -> str:
        types = TYPES[dialect]
        cols = [f"{n} {types[t]}{' NOT NULL' if n in self.key or n in self.required else ''}" for n, t in self.columns]
        return f"CREATE TABLE IF NOT EXISTS {self.name} ({', '.join(cols)}, PRIMARY KEY ({', '.join(self.key)}))"


def _cols(spec: str) -> tuple[tuple[str, str], ...]:
    """'a:text b:int' -> (('a', 'text'), ('b', 'int'))."""
    return tuple(tuple(item.split(":")) for item in spec.split())  # type: ignore[misc]


MESSAGES = Table("messages", _cols(
    "device_id:text seq:int kind:text topic:text camera:text schema:text ts:float received_ts:float payload:json"),
    key=("device_id", "seq"), required=("kind", "topic", "received_ts", "payload"))
DETECTIONS = Table("detections", _cols(
    "device_id:text seq:int idx:int camera:text frame:int frame_ts:float class_id:int label:text score:float "
    "x1:float y1:float x2:float y2:float track_id:int"), key=("device_id", "seq", "idx"))
EVENTS = Table("events", _cols(
    "device_id:text seq:int camera:text frame:int frame_ts:float ts:float type:text action:text track_id:int "
    "label:text score:float zone:text line:text direction:text reason:text dwell_s:float stationary:bool"),
    key=("device_id", "seq"))
ALERTS = Table("alerts", _cols("device_id:text seq:int ts:float kind:text detail:text camera:text path:text"),
               key=("device_id", "seq"))
METRICS = Table("metrics", _cols(
    "device_id:text seq:int ts:float fps:float latency_ms_p50:float latency_ms_p99:float frames:int "
    "frames_dropped:int detections:int outbox_depth:int dropped:int reconnects:int rss_mb:float cpu_temp_c:float "
    "source_state:text engine_state:text engine_restarts:int"), key=("device_id", "seq"))
DEVICES = Table("devices", _cols(
    "device_id:text status:text status_detail:text status_ts:float status_order:text sdk_version:text model_name:text "
    "model_sha256:text model_target:text model_precision:text model_task:text model_version:int update_state:text "
    "update_version:int info_seq:int info_ts:float "
    "last_seq:int last_seen:float last_received:float"), key=("device_id",))
COUNTS = Table("counts", _cols("device_id:text camera:text seq:int ts:float zones:json lines:json"),
               key=("device_id", "camera"), required=("seq",))
VERSION = Table("schema_version", _cols("version:int applied_ts:float"), key=("version",))

LOGS = (MESSAGES, DETECTIONS, EVENTS, ALERTS, METRICS)
STATE = (DEVICES, COUNTS)
TABLES = {t.name: t for t in (*LOGS, *STATE, VERSION)}
INDEXES = (
    "CREATE INDEX IF NOT EXISTS messages_by_ts ON messages (ts)",
    "CREATE INDEX IF NOT EXISTS detections_by_label ON detections (label, frame_ts)",
    "CREATE INDEX IF NOT EXISTS events_by_camera ON events (device_id, camera, frame_ts)",
)


def ddl(dialect: str) -> list[str]:
    """Every statement that creates the schema if it is not there yet."""
    return [t.ddl(dialect) for t in TABLES.values()] + list(INDEXES)


def table(name: str) -> Table:
    """A table by name; ValueError naming the known ones otherwise (the read helpers take names)."""
    if name not in TABLES:
        raise ValueError(f"unknown table {name!r} (known: {', '.join(TABLES)})")
    return TABLES[name]
