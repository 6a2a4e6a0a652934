"""Records -> table rows, the same for every dialect, in each table's column order (``schema``).

A device's payload is validated by nobody before it lands here, and a row the database refuses
would refuse its whole batch again on every redelivery. So every broken-out column takes only a
value of its type (anything else is NULL), and text reaches the database without what PostgreSQL
rejects (NUL, lone surrogates, NaN in JSON); the verbatim payload keeps everything else.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from edge_sdk.fleet.records import Record

INT64 = 2**63 - 1


def as_int(value) -> int | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and -INT64 <= value <= INT64
    return value if ok else None


def as_float(value) -> float | None:
    if type(value) is float:  # the common case first: called for every number of every detection
        return value if math.isfinite(value) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def as_text(value) -> str | None:
    return clean_text(value) if isinstance(value, str) else None


def as_bool(value) -> bool | None:
    return value if isinstance(value, bool) else None


def clean_text(text: str) -> str:
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def _clean(value):
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {clean_text(str(k)): _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def json_text(value) -> str:
    return json.dumps(_clean(value), ensure_ascii=False, separators=(",", ":"))


def payload_text(record: Record) -> str:
    """The payload as received when it is plain UTF-8 JSON every database takes; else re-serialised."""
    try:
        text = record.payload.decode("utf-8")
    except UnicodeDecodeError:
        return json_text(record.body)
    if "\\u" in text or "NaN" in text or "Infinity" in text:  # maybe NUL, a lone surrogate, a non-JSON number
        return json_text(record.body)
    return text


@dataclass
class Batch:
    """One write's records sorted out: the first of each key (sorted, so concurrent writers lock rows
    in the same order and cannot deadlock), the statuses, and how many repeated a key of the batch."""

    logged: list[Record] = field(default_factory=list)
    statuses: list[Record] = field(default_factory=list)
    repeats: int = 0


def sort_out(records: list[Record]) -> Batch:
    batch, seen = Batch(), set()
    for record in records:
        if record.key is None:
            batch.statuses.append(record)
        elif record.key in seen:
            batch.repeats += 1
        else:
            seen.add(record.key)
            batch.logged.append(record)
    batch.logged.sort(key=lambda r: r.key)
    batch.statuses.sort(key=lambda r: r.device_id)
    return batch


def message_row(r: Record) -> tuple:
    return (r.device_id, r.seq, r.kind, r.topic, r.camera, as_text(r.body.get("schema")), as_float(r.ts), r.received_ts,
            payload_text(r))


def detection_rows(r: Record) -> list[tuple]:
    items = r.body.get("detections")
    frame, frame_ts = as_int(r.body.get("frame")), as_float(r.body.get("frame_ts"))
    rows = []
    for idx, det in enumerate(items if isinstance(items, list) else []):
        det = det if isinstance(det, dict) else {}
        box = det.get("box")
        box = [as_float(v) for v in box] if isinstance(box, list) and len(box) == 4 else [None] * 4
        rows.append((r.device_id, r.seq, idx, r.camera, frame, frame_ts, as_int(det.get("class_id")),
                     as_text(det.get("label")), as_float(det.get("score")), *box, as_int(det.get("track_id"))))
    return rows


def event_row(r: Record) -> tuple:
    b = r.body
    return (r.device_id, r.seq, r.camera, as_int(b.get("frame")), as_float(b.get("frame_ts")), as_float(r.ts),
            as_text(b.get("type")), as_text(b.get("action")), as_int(b.get("track_id")), as_text(b.get("label")),
            as_float(b.get("score")), as_text(b.get("zone")), as_text(b.get("line")), as_text(b.get("direction")),
            as_text(b.get("reason")), as_float(b.get("dwell_s")), as_bool(b.get("stationary")))


def alert_row(r: Record) -> tuple:
    b = r.body
    return (r.device_id, r.seq, as_float(r.ts), as_text(b.get("kind")), as_text(b.get("detail")), as_text(b.get("camera")),
            as_text(b.get("path")))


def metrics_row(r: Record) -> tuple:
    b = r.body
    ints = [as_int(b.get(k)) for k in ("frames", "frames_dropped", "detections", "outbox_depth", "dropped", "reconnects")]
    return (r.device_id, r.seq, as_float(r.ts), as_float(b.get("fps")), as_float(b.get("latency_ms_p50")),
            as_float(b.get("latency_ms_p99")), *ints, as_float(b.get("rss_mb")), as_float(b.get("cpu_temp_c")),
            as_text(b.get("source_state")), as_text(b.get("engine_state")), as_int(b.get("engine_restarts")))


# kind -> (table, row builder returning a list of rows); kinds not here (info, counts) are state.
CHILDREN = {
    "detections": ("detections", detection_rows),
    "events": ("events", lambda r: [event_row(r)]),
    "alert": ("alerts", lambda r: [alert_row(r)]),
    "metrics": ("metrics", lambda r: [metrics_row(r)]),
}


def child_rows(records: list[Record]) -> dict[str, list[tuple]]:
    """The broken-out rows of new records, by table."""
    out: dict[str, list[tuple]] = {}
    for record in records:
        if record.kind in CHILDREN:
            name, build = CHILDREN[record.kind]
            out.setdefault(name, []).extend(build(record))
    return out


def seen_rows(records: list[Record], *, also: list[str] = ()) -> list[tuple]:
    """(device_id, last_seq, last_seen, last_received) per device: the batch's highest of each; the
    devices in ``also`` too (with NULLs, which change nothing), so that every device has a row."""
    by: dict[str, list] = {d: [d, None, None, None] for d in also}
    for r in records:
        row = by.setdefault(r.device_id, [r.device_id, None, None, None])
        for i, value in ((1, r.seq), (2, as_float(r.ts)), (3, as_float(r.received_ts))):
            if value is not None and (row[i] is None or value > row[i]):
                row[i] = value
    return [tuple(by[d]) for d in sorted(by)]


def info_row(r: Record) -> tuple:
    """(device_id, sdk_version, model_name, model_sha256, model_target, model_precision, model_task,
    model_version, update_state, update_version, info_seq, info_ts): ``model_version`` is the signed
    version of the installed update it runs (None: the bundle it started with), ``update_*`` its last update."""
    model = r.body.get("model") if isinstance(r.body.get("model"), dict) else {}
    update = r.body.get("update") if isinstance(r.body.get("update"), dict) else {}
    fields = [as_text(model.get(k)) for k in ("name", "sha256", "target", "precision", "task")]
    return (r.device_id, as_text(r.body.get("sdk_version")), *fields, as_int(model.get("version")),
            as_text(update.get("state")), as_int(update.get("version")), r.seq, as_float(r.ts))


def status_row(r: Record) -> tuple:
    """(device_id, status, status_detail, status_ts, status_order): the newest status has the largest order.

    The order is (epoch, offline last, ts, text) as one sortable string. The device's Last Will is
    stamped when its connection starts, before that connection's "online": by time alone a crashed
    device would stay online forever. A status without an epoch (an older device) is ordered by time.
    """
    state, detail, ts = as_text(r.body.get("state")), as_text(r.body.get("detail")), as_float(r.ts) or 0.0
    epoch = as_int(r.body.get("epoch"))
    last = 1 if epoch is not None and state == "offline" else 0
    order = f"{max(0, epoch or 0):020d}|{last}|{max(0.0, ts):024.6f}|{state or ''}|{detail or ''}"
    return (r.device_id, state, detail, ts, order)


def counts_row(r: Record) -> tuple:
    return (r.device_id, r.camera, r.seq, as_float(r.ts), json_text(r.body.get("zones")), json_text(r.body.get("lines")))
