"""One message from a device, read once: who sent it, its place in that device's sequence, what it is."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

# The kinds a fleet stores, by the last level of their topic. The device's own topics are
# {root}/{device}/{name} and, for messages about one camera, {root}/{device}/{camera}/{name}.
DEVICE_KINDS = ("status", "info", "metrics", "alert")
CAMERA_KINDS = ("detections", "events", "counts")
KINDS = DEVICE_KINDS + CAMERA_KINDS
# A seq is a BIGINT in the fleet's databases; a larger one could never be stored, only refused forever.
MAX_SEQ = 2**63 - 1


@dataclass(frozen=True)
class Record:
    """A device's message as a consumer received it.

    ``seq`` is None for the retained ``status`` (the broker publishes its Last Will, so it carries
    no sequence number): state, stored by overwriting, never a row of a log.
    """

    device_id: str
    seq: int | None
    kind: str  # one of KINDS
    topic: str
    camera: str | None
    ts: float | None  # when the device stamped it (seconds since the epoch)
    received_ts: float  # when the consumer read it
    body: dict
    payload: bytes  # as received, for storing verbatim

    @property
    def key(self) -> tuple[str, int] | None:
        """The de-duplication key, ``(device_id, seq)``; None for state without a sequence."""
        return None if self.seq is None else (self.device_id, self.seq)


def subscriptions(root: str = "edge", kinds: tuple[str, ...] = KINDS) -> list[str]:
    """The topic filters that carry ``kinds`` (no commands, no snapshots: a model archive is megabytes)."""
    filters = []
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"unknown message kind {kind!r} (known: {', '.join(KINDS)})")
        filters.append(f"{root}/+/{kind}" if kind in DEVICE_KINDS else f"{root}/+/+/{kind}")
    return filters


def parse(topic: str, payload: bytes, *, root: str = "edge", received_ts: float) -> Record | None:
    """The record in one message, or None for anything that is not a well-formed device message.

    The device id comes from the topic, which the broker's ACL ties to the sender; a payload
    that claims another device is not one of this device's messages.
    """
    parts = topic.split("/")
    if len(parts) not in (3, 4) or parts[0] != root or not parts[1]:
        return None
    kind = parts[-1]
    if (len(parts) == 3 and kind not in DEVICE_KINDS) or (len(parts) == 4 and kind not in CAMERA_KINDS):
        return None
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(body, dict) or body.get("device_id") != parts[1]:
        return None
    seq = body.get("seq")
    if kind != "status" and (not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= MAX_SEQ):
        return None
    return Record(
        device_id=parts[1], seq=seq if kind != "status" else None, kind=kind, topic=topic,
        camera=parts[2] if len(parts) == 4 else None,
        ts=_seconds(body.get("ts")),
        received_ts=received_ts, body=body, payload=bytes(payload),
    )


def _seconds(value) -> float | None:
    """A payload's ``ts`` as a finite float, else None (JSON allows 1e999 and NaN, and ints too big for a float)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        value = float(value)
    except OverflowError:
        return None
    return value if math.isfinite(value) else None
