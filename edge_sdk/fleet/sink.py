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


class RecentKeys:
    """The newest ``capacity`` keys seen, oldest forgotten first: de-duplication without a store."""

    def __init__(self, capacity: int = 1_000_000) -> None:
        self.capacity = capacity
        self._keys: dict[tuple[str, int], None] = {}  # insertion-ordered

    def __contains__(self, key: tuple[str, int]) -> bool:
        return key in self._keys

    def add(self, key: tuple[str, int]) -> None:
        self._keys[key] = None
        if len(self._keys) > self.capacity:
            del self._keys[next(iter(self._keys))]


class CallbackSink:
    """Hands each new record to ``handle``, once per ``(device_id, seq)`` among the recent ones.

    For a consumer that acts rather than stores (``edge-sdk listen --share`` prints): ``handle``
    returning is what "stored" means, so a record is acknowledged only after it was handled. The
    memory of keys is this process's: a redelivery after a restart is handled again.
    """

    def __init__(self, handle, *, capacity: int = 1_000_000) -> None:
        self.handle = handle
        self.seen = RecentKeys(capacity)

    def write(self, records: list[Record]) -> WriteResult:
        stored = duplicates = 0
        for record in records:
            key = record.key
            if key is not None and key in self.seen:
                duplicates += 1
                continue
            self.handle(record)
            if key is not None:
                self.seen.add(key)
            stored += 1
        return WriteResult(stored, duplicates)

    def close(self) -> None:
        pass
