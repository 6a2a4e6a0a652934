"""A fleet consumer: one member of an MQTT 5 shared subscription that stores before it acknowledges.

Three things make N consumers lose nothing and store nothing twice:

* **One persistent session per member.** The client id is fixed by the group and the member's
  name, the session outlives the connection (``clean_start`` off, a session expiry), and the
  subscription is ``$share/{group}/...``. Mosquitto 2.0 keeps sending a dead member its share
  into its offline session, so only the same client id gets those messages back: restarting
  with the same command resumes the same session. Two live processes with one id would take
  the session from each other in turn, so a lock file refuses the second one on a host.
* **Acknowledge after storing.** paho's manual acknowledgement: a batch is written to the sink,
  and only when ``write`` returned are its PUBACKs sent, in the order the messages came. A kill
  in between makes the broker send them again; the store ignores what it already holds.
* **Acknowledge on the connection that received.** A packet id names a message only on its
  connection; after a reconnect the broker resends everything unacknowledged under new ids, so
  an acknowledgement of the old id could confirm an unrelated new message. Messages carry the
  connection they came on, and those of a lost connection are never acknowledged.

While the store is down the batch is retried, nothing is acknowledged, and the broker stops
sending once the member's receive maximum is in flight: the rest waits in the session.
"""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from edge_sdk.errors import ConfigError, PublishError, StoreError, StoreUnavailable
from edge_sdk.fleet.records import KINDS, Record, parse, subscriptions
from edge_sdk.fleet.sink import Sink, WriteResult
from edge_sdk.mqtt.settings import MQTTSettings

log = logging.getLogger("edge_sdk.fleet")

SESSION_EXPIRY_S = 7 * 24 * 3600  # how long the broker keeps a stopped member's share for it
RETRY_MIN_S, RETRY_MAX_S = 0.2, 5.0  # waits between writes of a batch while the store is down
IDLE_FLUSH_S = 0.005  # a batch is written once no message came for this long (or it is full, or old)
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass
class ConsumerStats:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    invalid: int = 0  # not a device message: acknowledged and dropped
    batches: int = 0
    store_retries: int = 0
    connects: int = 0
    last_error: str | None = None

    def line(self) -> str:
        parts = [f"received {self.received}", f"stored {self.stored}", f"duplicates {self.duplicates}"]
        parts += [f"invalid {self.invalid}"] if self.invalid else []
        parts += [f"store retries {self.store_retries}"] if self.store_retries else []
        return ", ".join(parts)


@dataclass(frozen=True)
class _Inbound:
    connection: int  # which connection delivered it; acknowledgements go back on that one only
    mid: int
    qos: int
    record: Record | None


def check_name(value: str, what: str) -> str:
    if not _NAME.match(value or ""):
        raise ConfigError(f"{what} {value!r} must be 1-64 letters, digits, '.', '_' or '-'")
    return value


def default_name() -> str:
    """This host's name as a member name (one consumer per host; give others their own --name)."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname().split(".")[0])[:64]
    return host or "consumer"


class SessionLock:
    """One process per client id on this host: a second one would take the session from the first."""

    def __init__(self, client_id: str, folder: Path | None = None) -> None:
        base = folder or Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "edge-sdk" / "consumers"
        base.mkdir(parents=True, exist_ok=True)
        self.path = base / f"{client_id}.lock"
        self._handle = open(self.path, "a+")  # noqa: SIM115 - held for the consumer's life
        try:
            fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._handle.seek(0)
            pid = self._handle.read().strip() or "?"
            self._handle.close()
            raise ConfigError(f"consumer {client_id} already runs on this host (pid {pid}); give each consumer its own --name") from None
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.write(str(os.getpid()))
        self._handle.flush()

    def release(self) -> None:
        if not self._handle.closed:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()


class Consumer:
    """Reads devices' messages from a broker into ``sink``, as one member of ``group`` (or alone).

    ``start`` connects and subscribes (PublishError in one line if the broker cannot be reached or
    refuses); ``run`` stores batches until stopped, a count or a duration; ``stop`` writes what
    was received, acknowledges it and disconnects, keeping the session for the next start.
    """

    def __init__(
        self, connection: MQTTSettings, sink: Sink, *, group: str | None = None, name: str | None = None,
        root: str = "edge", kinds: Iterable[str] = KINDS, session_expiry_s: int = SESSION_EXPIRY_S,
        batch_size: int = 500, linger_s: float = 0.1, receive_maximum: int = 1000,
        on_stored: Callable[[list[Record], WriteResult], None] | None = None, lock_folder: Path | None = None,
    ) -> None:
        if batch_size < 1 or receive_maximum < 1 or linger_s <= 0 or session_expiry_s < 0:
            raise ConfigError("batch_size and receive_maximum must be >= 1, linger_s > 0, session_expiry_s >= 0")
        self.group = check_name(group, "group") if group is not None else None
        self.name = check_name(name or default_name(), "consumer name")
        self.client_id = f"edge-sdk-{self.group or 'consumer'}-{self.name}"
        self.settings, self.sink, self.root = connection, sink, root
        self.filters = subscriptions(root, tuple(kinds))
        self.session_expiry_s, self.batch_size, self.linger_s = session_expiry_s, batch_size, linger_s
        self.receive_maximum, self.on_stored, self.lock_folder = receive_maximum, on_stored, lock_folder
        self.stats = ConsumerStats()
        self._inbox: queue.Queue[_Inbound] = queue.Queue()
        self._connection = 0  # the live connection's number; 0 before the first
        self._ack_lock = threading.Lock()
        self._stopping = threading.Event()
        self._connected = threading.Event()
        self._refused: str | None = None
        self._client = None
        self._lock: SessionLock | None = None

    @property
    def topic_filters(self) -> list[str]:
        return [f"$share/{self.group}/{f}" if self.group else f for f in self.filters]

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, *, timeout: float = 10.0) -> Consumer:
        self._lock = SessionLock(self.client_id, self.lock_folder)
        try:
            self._client = self._new_client()
            self._connect(timeout)
        except BaseException:
            self._lock.release()
            raise
        return self

    def _new_client(self):
        import paho.mqtt.client as mqtt

        from edge_sdk.mqtt.client import secure

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5,
                             transport=self.settings.transport, manual_ack=True)
        secure(client, self.settings, credentials=self.settings.credentials())
        client.reconnect_delay_set(self.settings.reconnect_min_s, self.settings.reconnect_max_s)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _connect(self, timeout: float) -> None:
        import ssl

        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.session_expiry_s
        props.ReceiveMaximum = min(self.receive_maximum, 65535)
        where = self.settings.redacted_broker()
        try:
            self._client.connect(self.settings.host, self.settings.port, keepalive=self.settings.keepalive,
                                 clean_start=False, properties=props)
        except (OSError, ssl.SSLError) as exc:
            raise PublishError(f"cannot reach broker {where}: {exc.strerror or exc}") from None
        self._client.loop_start()
        if not self._connected.wait(timeout) or self._refused:
            self._client.loop_stop()
            raise PublishError(f"broker {where} " + (f"refused: {self._refused}" if self._refused else f"sent no CONNACK within {timeout:g} s"))

    def stop(self) -> None:
        """Stop taking messages; ``run`` writes and acknowledges what it holds, then returns."""
        self._stopping.set()

    def close(self) -> None:
        """Disconnect (the session stays on the broker) and let go of the lock; idempotent."""
        self._stopping.set()
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> Consumer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        self.close()

    # -- paho's thread: only queue, never block ---------------------------------------------

    def _on_connect(self, client, userdata, flags, reason, props) -> None:
        if reason.is_failure:
            self._refused = str(reason)
            self._connected.set()
            return
        with self._ack_lock:
            self._connection += 1
        self.stats.connects += 1
        # Subscribing again on a resumed session changes nothing; on a new one it makes the session.
        client.subscribe([(topic, 1) for topic in self.topic_filters])
        self._connected.set()

    def _on_disconnect(self, client, userdata, flags, reason, props) -> None:
        if not self._stopping.is_set():
            self.stats.last_error = f"disconnected: {reason}"
            log.warning("consumer %s disconnected from %s: %s", self.client_id, self.settings.redacted_broker(), reason)

    def _on_message(self, client, userdata, message) -> None:
        record = parse(message.topic, message.payload, root=self.root, received_ts=time.time())
        self._inbox.put(_Inbound(self._connection, message.mid, message.qos, record))

    # -- the caller's thread: batch, store, acknowledge -------------------------------------

    def run(self, *, duration: float | None = None, count: int | None = None) -> ConsumerStats:
        """Store batches until :meth:`stop`, ``duration`` seconds, or ``count`` messages received."""
        deadline = None if duration is None else time.monotonic() + duration
        while not self._stopping.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            if count is not None and self.stats.received >= count:
                break
            batch = self._take(limit=None if count is None else count - self.stats.received)
            if batch:
                self._store(batch)
        self._drain()
        return self.stats

    def _take(self, *, limit: int | None) -> list[_Inbound]:
        """A batch: up to batch_size, written when full, when the inbox went idle, or after linger_s."""
        size = self.batch_size if limit is None else min(self.batch_size, limit)
        try:
            batch = [self._inbox.get(timeout=0.1)]
        except queue.Empty:
            return []
        oldest = time.monotonic()
        while len(batch) < size and time.monotonic() - oldest < self.linger_s:
            try:
                while len(batch) < size:  # what is already there, without a timed wait for each
                    batch.append(self._inbox.get_nowait())
            except queue.Empty:
                try:
                    batch.append(self._inbox.get(timeout=IDLE_FLUSH_S))
                except queue.Empty:
                    break  # the broker has nothing more in flight for now (its window may be full)
        return batch

    def _drain(self) -> None:
        """What arrived before stop: stored and acknowledged, so the next start does not get it again."""
        batch: list[_Inbound] = []
        while True:
            try:
                batch.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        for start in range(0, len(batch), self.batch_size):
            self._store(batch[start:start + self.batch_size], retry=False)

    def _store(self, batch: list[_Inbound], *, retry: bool = True) -> None:
        records = [item.record for item in batch if item.record is not None]
        self.stats.received += len(batch)
        self.stats.invalid += len(batch) - len(records)
        result = self._write(records, retry=retry) if records else WriteResult(0, 0)
        if result is None:
            return  # stopped while the store was down: unacknowledged, the broker keeps them
        self.stats.stored += result.stored
        self.stats.duplicates += result.duplicates
        self.stats.batches += 1
        self._acknowledge(batch)
        if self.on_stored is not None and records:
            self.on_stored(records, result)

    def _write(self, records: list[Record], *, retry: bool) -> WriteResult | None:
        wait = RETRY_MIN_S
        while True:
            try:
                return self.sink.write(records)
            except StoreUnavailable as exc:
                self.stats.store_retries += 1
                if self.stats.last_error != str(exc):
                    log.warning("consumer %s: %s; keeping %d message(s) unacknowledged and retrying", self.client_id, exc, len(records))
                self.stats.last_error = str(exc)
                if not retry or self._stopping.wait(wait):
                    return None
                wait = min(wait * 2, RETRY_MAX_S)
            except StoreError:
                raise  # nothing retrying can fix; nothing was acknowledged, so nothing is lost

    def _acknowledge(self, batch: list[_Inbound]) -> None:
        client = self._client
        if client is None:
            return
        # Under the lock on_connect takes to count a connection: an acknowledgement never reaches
        # a newer connection than the one its message came on (paho drops those queued while down).
        with self._ack_lock:
            for item in batch:
                if item.qos > 0 and item.connection == self._connection:
                    client.ack(item.mid, item.qos)


def read_retained(settings: MQTTSettings, *, root: str = "edge", kinds: Iterable[str] = ("status", "info", "counts"),
                  wait: float = 1.0) -> list[Record]:
    """The retained state the broker holds (each device's status and info, each camera's counts).

    A shared subscription is never sent retained messages, so a store that starts after its
    devices learns of them here, once, through a plain subscription.
    """
    from edge_sdk.fleet.devices import retained

    found: list[Record] = []

    def keep(topic: str, payload: bytes) -> None:
        record = parse(topic, payload, root=root, received_ts=time.time())
        if record is not None:
            found.append(record)

    retained(settings, subscriptions(root, tuple(kinds)), keep, wait=wait, only_retained=True)
    return list(found)
