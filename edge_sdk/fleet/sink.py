"""Where a consumer puts what it received: the small protocol every store implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from edge_sdk.fleet.records import Record


@dataclass(frozen=True)
class WriteResult:
    stored: int  # records new to the store (state records count when they changed something)
    duplicates: int  # records whose (device_id, seq) the store already held


class Sink(Protocol):
    """Stores batches of records, all or nothing, idempotently on ``(device_id, seq)``.

    ``write`` returns only once the batch is durable: the consumer acknowledges the messages to the
    broker after it returns, so a batch that raised is received again. It raises
    :class:`~edge_sdk.errors.StoreUnavailable` while the store cannot be reached (the consumer
    waits and tries the same batch again) and :class:`~edge_sdk.errors.StoreError` for anything
    that retrying cannot fix.
    """

    def write(self, records: list[Record]) -> WriteResult: ...

    def close(self) -> None: ...
