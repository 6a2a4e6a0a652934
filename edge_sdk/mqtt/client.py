"""The publisher: a durable outbox drained to the broker by one network thread.

One thread owns the paho client and does all its I/O through paho's external-loop calls
(``loop_read``/``loop_write``/``loop_misc``). paho's callbacks therefore run in that thread and
only append to a deque: no lock is ever taken inside a callback (one that does deadlocks under
reconnects). Producers never touch paho: they commit to the outbox and poke a socketpair.

Each connection uses a fresh paho client with a clean start, so nothing stale in paho's memory
is ever resent; the outbox is the only queue, resent in id order after every reconnect. The
reconnect delay grows, is capped and jittered, and resets only after a connection stayed up.
"""

from __future__ import annotations

import collections
import json
import logging
import queue
import random
import select
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from edge_sdk.errors import ConfigError, PublishError
from edge_sdk.mqtt import topics
from edge_sdk.mqtt.outbox import Message, Outbox
from edge_sdk.mqtt.settings import MQTTSettings, Protocol

log = logging.getLogger("edge_sdk.mqtt")

STABLE_AFTER_S = 10.0  # a connection up this long resets the reconnect delay
ACK_FLUSH_S = 0.25  # how often the outbox journal moves into SQLite, in one transaction
DEAD_LINK_EARLY_S = 0.25  # a silent link is declared dead this long before 1.5 keep-alives (see _pump)
QOS0_QUEUE = 256  # QoS 0 messages waiting for a connection; older ones are dropped and counted


@dataclass(frozen=True)
class Command:
    """One command received on ``cmd/{name}``."""

    name: str
    payload: bytes
    response_topic: str | None = None
    correlation: bytes | None = None
    too_large: bool = False


@dataclass
class _Connection:
    """One live connection's sending state, shared by the network thread and producers under the send lock."""

    client: object
    window: int
    inflight: dict = field(default_factory=dict)  # paho mid -> stored message
    cursor: int = 0  # the highest outbox id sent on this connection


class Backoff:
    """Capped exponential delay with jitter: each wait is uniform in [d/2, d], d doubling up to the cap."""

    def __init__(self, initial: float, cap: float, *, rng: random.Random | None = None) -> None:
        self.initial, self.cap = initial, cap
        self.attempt = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        ceiling = min(self.cap, self.initial * (2 ** min(self.attempt, 32)))
        self.attempt += 1
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


def secure(client, settings: MQTTSettings, *, credentials: tuple[str | None, str | None]) -> None:
    """Apply the settings' transport path, TLS and credentials to a new paho client."""
    if settings.transport == "websockets":
        client.ws_set_options(path=settings.websocket_path)
    if settings.uses_tls:
        tls = settings.tls
        try:
            client.tls_set(
                ca_certs=str(tls.ca_file) if tls and tls.ca_file else None,
                certfile=str(tls.cert_file) if tls and tls.cert_file else None,
                keyfile=str(tls.key_file) if tls and tls.key_file else None,
                cert_reqs=ssl.CERT_NONE if tls and tls.insecure else ssl.CERT_REQUIRED,
            )
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConfigError(f"TLS files cannot be used: {_describe(exc)}") from exc
        if tls and tls.insecure:
            client.tls_insecure_set(True)
    username, password = credentials
    if username is not None or password is not None:
        client.username_pw_set(username or "", password)


def _ready(sock, wake, *, write: bool, timeout: float) -> tuple[list, list]:
    """(readable, writable) among the broker's socket and the wake-up socket, waiting up to ``timeout``.

    poll, not select: select refuses a descriptor numbered 1024 or more, which a process holding
    many files reaches (a host simulating 500 devices did: no device ever connected).
    """
    poller = select.poll()
    poller.register(sock, select.POLLIN | (select.POLLOUT if write else 0))
    poller.register(wake, select.POLLIN)
    gone = select.POLLIN | select.POLLHUP | select.POLLERR  # as select, a closed or failed socket reads
    events = dict(poller.poll(max(0.0, timeout) * 1000))
    readable = [s for s in (sock, wake) if events.get(s.fileno(), 0) & gone]
    writable = [sock] if events.get(sock.fileno(), 0) & (select.POLLOUT | select.POLLERR) and write else []
    return readable, writable


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return str(exc) or type(exc).__name__


_PUBLISHER_COUNTERS = ("sent", "qos0_sent", "qos0_dropped", "acked", "refused", "connected", "connect_attempts",
                       "reconnect_waits", "disconnects", "commands_dropped")
_OUTBOX_COUNTERS = ("depth", "bytes", "dropped_overflow", "dropped_expired", "dead_lettered")


@dataclass(frozen=True)
class PublisherStats:
    """What the publisher has done since it started (the outbox's counters survive restarts)."""

    state: str  # connecting, online, offline, ...
    sent: int  # QoS 1 messages written to the socket (again after a reconnect)
    qos0_sent: int
    qos0_dropped: int  # QoS 0 messages dropped while offline (the queue keeps the newest)
    acked: int  # QoS 1 messages the broker acknowledged
    refused: int  # messages the broker refused (dead-lettered)
    connected: int  # successful connections, the first included
    connect_attempts: int
    reconnect_waits: int
    disconnects: int
    commands_dropped: int  # commands that arrived faster than they could be answered
    outbox_depth: int  # messages waiting for an acknowledgement
    outbox_bytes: int
    outbox_dropped_overflow: int
    outbox_dropped_expired: int
    outbox_dead_lettered: int

    def as_dict(self) -> dict:
        return asdict(self)


class Publisher:
    """Publishes under one device's prefix; QoS >= 1 survives outages and restarts via the outbox."""

    def __init__(
        self, settings: MQTTSettings, *, outbox: Outbox | None = None,
        on_command: Callable[[Command], None] | None = None,
        on_state: Callable[[str, str | None], None] | None = None,
    ) -> None:
        import paho.mqtt.client  # noqa: F401  (fail here, in the caller, if paho is missing)

        self.settings = settings
        self.device_id = settings.device_id
        self.outbox = outbox if outbox is not None else Outbox(
            settings.outbox_path, max_messages=settings.outbox.max_messages,
            max_bytes=settings.outbox.max_bytes, ttl_s=settings.outbox.ttl_s, durable=settings.outbox.fsync,
        )
        self._on_command, self._on_state = on_command, on_state
        self._username, self._password = settings.credentials()
        self._qos0: collections.deque = collections.deque()
        self._events: collections.deque = collections.deque()
        self._retained: dict[str, tuple[bytes, int]] = {}  # sent on every connect (status, info, discovery)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._closing = threading.Event()
        self._connected = threading.Event()
        self._commands_heard = threading.Event()  # the broker confirmed the subscription to cmd/+
        self._commands: queue.Queue = queue.Queue(maxsize=16)
        self._threads: list[threading.Thread] = []
        self.state = "stopped"
        self.last_error: str | None = None
        self.counters = collections.Counter()  # written by the network thread only
        self.backoff = Backoff(settings.reconnect_min_s, settings.reconnect_max_s)
        self._online_since: float | None = None
        self._health: tuple[str, str | None] = ("online", None)  # what 'online' status says: online, or degraded and why
        self._idle = True
        self._send_lock = threading.Lock()  # never taken inside a paho callback
        self._live: _Connection | None = None
        self._epoch = 0  # this connection's number among the device's connections (see _new_client)

    # -- topics and payloads ----------------------------------------------------------------

    def topic(self, name: str) -> str:
        return topics.topic(self.device_id, name, prefix=self.settings.prefix)

    def envelope(self, schema: str, body: dict) -> dict:
        """``body`` with the fields every payload carries: schema, device, seq, ts."""
        return {"schema": schema, "device_id": self.device_id, "seq": self.outbox.next_seq(), "ts": round(time.time(), 6), **body}

    # -- producing (any thread) ---------------------------------------------------------------

    def publish(
        self, name: str, payload: dict | bytes, *, qos: int = 1, retain: bool = False,
        topic: str | None = None, response_topic: str | None = None, correlation: bytes | None = None,
    ) -> None:
        """Queue a message for ``name`` under the prefix (or ``topic``); never blocks on the network."""
        data = payload if isinstance(payload, bytes) else json.dumps(payload, separators=(",", ":")).encode()
        full = topic or self.topic(name)
        if qos >= 1:
            self.outbox.add(full, data, qos=qos, retain=retain, response_topic=response_topic, correlation=correlation)
        else:
            if len(self._qos0) >= QOS0_QUEUE:
                self._qos0.popleft()
                self.counters["qos0_dropped"] += 1
            self._qos0.append((full, data, retain))
        if self._live is not None:
            # paho's publish is thread-safe: building the packet here, in the producer's thread,
            # spreads paho's work over two threads as a plain paho program does. Only the network
            # thread touches the socket.
            with self._send_lock:
                if self._live is not None:
                    self._send(self._live)
        self._wake()

    def set_retained(self, name: str, payload: dict | bytes, *, qos: int = 1, topic: str | None = None) -> None:
        """A retained message republished on every connect (status, info, discovery); sent now if online."""
        data = payload if isinstance(payload, bytes) else json.dumps(payload, separators=(",", ":")).encode()
        self._retained[topic or self.topic(name)] = (data, qos)
        self._events.append(("retained", topic or self.topic(name)))
        self._wake()

    def respond(self, command: Command, body: dict) -> None:
        """Answer a command: on its MQTT 5 response topic when it named one, else on cmd/{name}/result."""
        payload = self.envelope("edge-sdk/command-result@1", {"command": command.name, **body})
        if command.response_topic:
            self.publish("", payload, qos=self.settings.qos.results, topic=command.response_topic, correlation=command.correlation)
        else:
            self.publish(f"cmd/{command.name}/result", payload, qos=self.settings.qos.results, correlation=command.correlation)

    def _wake(self) -> None:
        if not self._idle:
            return  # the network thread is polling, it will see the work without a poke
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # already awake, or closing

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> Publisher:
        """Connect in the background; returns at once, even when the broker is down."""
        if self.settings.tls is not None and self.settings.tls.insecure:
            message = f"WARNING: TLS certificate checks are OFF for {self.settings.redacted_broker()}; anyone on the path can read and forge messages"
            print(f"edge-sdk: {message}", file=sys.stderr)
            log.warning(message)
        self.state = "connecting"
        self._threads = [threading.Thread(target=self._network, name="edge-sdk-mqtt", daemon=True)]
        if self._on_command is not None:
            self._threads.append(threading.Thread(target=self._command_worker, name="edge-sdk-commands", daemon=True))
        for thread in self._threads:
            thread.start()
        return self

    def wait_online(self, timeout: float) -> bool:
        """Connected, and (taking commands) subscribed to them: a command sent after this is heard."""
        deadline = time.monotonic() + timeout
        if not self._connected.wait(timeout):
            return False
        return self._on_command is None or self._commands_heard.wait(max(0.0, deadline - time.monotonic()))

    def flush(self, timeout: float) -> bool:
        """Wait until every stored message is acknowledged; False if some are still pending."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.outbox.depth == 0 and not self._qos0:
                return True
            time.sleep(0.02)
        return self.outbox.depth == 0 and not self._qos0

    def close(self, *, timeout: float = 5.0) -> None:
        """Publish 'offline', disconnect cleanly, stop the threads. Unsent messages stay in the outbox."""
        self._closing.set()
        self._wake()
        try:
            self._commands.put_nowait(None)
        except queue.Full:
            pass
        for thread in self._threads:
            thread.join(timeout)
        # The callbacks are usually bound methods of our owner (FleetLink), which owns us: dropping
        # them breaks the cycle, so the pipeline and its engine's threads go now, not at the next GC.
        self._on_command = self._on_state = None
        self.state = "stopped"
        self.outbox.close()
        self._wake_r.close()
        self._wake_w.close()

    def stats(self) -> PublisherStats:
        counted, outbox = dict(self.counters), self.outbox.counters()
        return PublisherStats(
            state=self.state, **{name: counted.get(name, 0) for name in _PUBLISHER_COUNTERS},
            **{f"outbox_{name}": outbox.get(name, 0) for name in _OUTBOX_COUNTERS},
        )

    # -- the network thread -----------------------------------------------------------------

    def _set_state(self, state: str, error: str | None = None) -> None:
        changed = state != self.state or error != self.last_error
        self.state, self.last_error = state, error if error is not None else self.last_error
        if state == "online":
            self._connected.set()
        else:
            self._connected.clear()
            self._commands_heard.clear()
        if changed and self._on_state is not None:
            try:
                self._on_state(state, error)
            except Exception:  # a listener's bug must not stop publishing
                log.exception("state listener failed")

    def _new_client(self):
        import paho.mqtt.client as mqtt

        s = self.settings
        protocol = mqtt.MQTTv5 if s.protocol is Protocol.MQTT5 else mqtt.MQTTv311
        kwargs = {} if protocol == mqtt.MQTTv5 else {"clean_session": True}
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=s.effective_client_id, protocol=protocol,
            transport=s.transport, reconnect_on_failure=False, **kwargs,
        )
        client.max_inflight_messages_set(s.outbox.inflight)
        client.max_queued_messages_set(0)
        secure(client, s, credentials=(self._username, self._password))
        # Every status of this connection, its Last Will included, carries the same epoch, larger
        # than any earlier connection's, restarts included: a store can then tell the Will of a
        # crashed connection from an older one, though the Will was stamped before its "online".
        self._epoch = self.outbox.next_epoch()
        offline = json.dumps(self._status_body("offline"), separators=(",", ":")).encode()
        client.will_set(self.topic(topics.STATUS), offline, qos=self.settings.qos.status, retain=True)
        events = self._events
        client.on_connect = lambda c, u, flags, rc, props: events.append(("connack", rc, props))
        client.on_disconnect = lambda c, u, flags, rc, props: events.append(("disconnect", rc))
        client.on_publish = lambda c, u, mid, rc, props: events.append(("puback", mid, rc))
        client.on_message = lambda c, u, message: events.append(("message", message))
        # With this set, paho queues packets and leaves every socket write to the network thread.
        client.on_subscribe = lambda c, u, mid, codes, props: events.append(("suback", codes))
        client.on_socket_register_write = lambda c, u, sock: self._wake()
        return client

    def _status_body(self, state: str) -> dict:
        detail = None
        if state == "online":
            state, detail = self._health
        body = {"schema": "edge-sdk/status@1", "device_id": self.device_id, "state": state, "ts": round(time.time(), 6),
                "epoch": self._epoch}
        return body if detail is None else {**body, "detail": detail}

    def set_health(self, degraded: str | None) -> None:
        """While connected, the retained status says 'degraded' and why (``degraded``), or 'online'
        (None). Sent now if online and on every connect; the Last Will still says 'offline'."""
        self._health = ("degraded", degraded) if degraded else ("online", None)
        self._events.append(("status",))
        self._wake()

    def _network(self) -> None:
        while not self._closing.is_set():
            try:
                client = self._new_client()
            except ConfigError as exc:
                self._set_state("failed", str(exc))
                return
            self._online_since = None
            try:
                self._connect(client)
                self._serve(client)
            except (OSError, ssl.SSLError, ValueError) as exc:
                self._set_state("offline", _describe(exc))
            except Exception as exc:  # noqa: BLE001 - the network thread must outlive any bug or full disk
                log.exception("MQTT network loop failed")
                self._set_state("offline", f"{type(exc).__name__}: {exc}")
            finally:
                try:
                    client.socket() and client.socket().close()
                except OSError:
                    pass
            if self._closing.is_set():
                break
            if self.state == "online":
                self._set_state("offline", "connection ended")
            if self._online_since is not None and time.monotonic() - self._online_since > STABLE_AFTER_S:
                self.backoff.reset()
            self.counters["reconnect_waits"] += 1
            deadline = time.monotonic() + self.backoff.next()
            while not self._closing.wait(min(1.0, max(0.0, deadline - time.monotonic()))) and time.monotonic() < deadline:
                self._checkpoint_quietly()  # offline: the journal still moves into SQLite now and then
            self._checkpoint_quietly()
        self._set_state("stopped")

    def _connect(self, client) -> None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self._events.clear()
        s = self.settings
        client.connect_timeout = 5.0
        if s.protocol is Protocol.MQTT5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 0
            client.connect(s.host, s.port, keepalive=s.keepalive, clean_start=True, properties=props)
        else:
            client.connect(s.host, s.port, keepalive=s.keepalive)
        self.counters["connect_attempts"] += 1

    def _serve(self, client) -> None:
        """Pump one connection until it ends; all paho calls happen here."""
        conn = _Connection(client, self.settings.outbox.inflight)
        try:
            self._pump(conn)
        finally:
            with self._send_lock:
                self._live = None

    def _pump(self, conn: _Connection) -> None:
        client, inflight = conn.client, conn.inflight
        last_flush = time.monotonic()
        self.outbox.rewind()
        online = False
        closing_sent = False
        wait_until = time.monotonic() + 10.0  # CONNACK must come within this
        last_in = time.monotonic()
        # The promise is "noticed within 1.5 keep-alives" of the last byte. Checking only once that
        # much silence has passed always lands after it (by the thread's wake-up, or by the whole
        # 0.5 s select timeout on an idle link), so the check aims a little early and the select
        # wakes up for it. A healthy broker, sent a PINGREQ after one keep-alive, still has well
        # over a second (keep-alive >= 5 s) to answer.
        dead_after = 1.5 * self.settings.keepalive - DEAD_LINK_EARLY_S
        while True:
            sock = client.socket()
            if sock is None:
                return
            outbox = self.outbox
            # Idle is announced before the work is looked at: a producer that adds work after the
            # look sees it and pokes the socketpair, so the select below never sleeps on work.
            self._idle = True
            busy = online and (self._qos0 or len(inflight) < conn.window and (outbox.fresh or outbox.fresh_lost and outbox.depth > len(inflight)))
            self._idle = not busy
            timeout = 0 if busy else 0.5
            if online:
                timeout = min(timeout, max(0.0, last_in + dead_after - time.monotonic()))
            readable, writable = _ready(sock, self._wake_r, write=client.want_write(), timeout=timeout)
            self._idle = False
            now = time.monotonic()
            if sock in readable:
                if client.loop_read() != 0:
                    return self._lost(client, self._refusal() or "connection lost")
                last_in = now
            elif online and now - last_in > dead_after:
                # paho alone notices a silent link only after two keep-alive periods; a healthy
                # broker answers our PINGREQ within one, so 1.5 periods of silence means it is gone.
                return self._lost(client, f"no traffic from the broker for {now - last_in:.1f} s")
            if self._wake_r in readable:
                try:
                    self._wake_r.recv(65536)
                except BlockingIOError:
                    pass
            if sock in writable and client.loop_write() != 0:
                return self._lost(client, "connection lost while writing")
            if client.loop_misc() != 0:
                return self._lost(client, "keep-alive timed out")
            acked: list[Message] = []
            pubacks: list[tuple] = []
            while self._events:
                event = self._events.popleft()
                kind = event[0]
                if kind == "puback":
                    pubacks.append(event)
                elif kind == "connack":
                    reason = event[1]
                    if reason.is_failure:
                        self._set_state("refused", f"broker refused the connection: {reason}")
                        client.disconnect()
                        return
                    receive_max = getattr(event[2], "ReceiveMaximum", None) if event[2] is not None else None
                    if receive_max:
                        # Sending more than the broker's Receive Maximum gets us disconnected (0x93).
                        conn.window = min(conn.window, int(receive_max))
                    online = True
                    self._online_since = time.monotonic()
                    self.counters["connected"] += 1
                    self._on_connack(client)
                    self._set_state("online", None)
                    with self._send_lock:
                        self._live = conn
                elif kind == "suback":
                    if not any(getattr(code, "is_failure", False) for code in event[1]):
                        self._commands_heard.set()
                elif kind == "disconnect":
                    return self._lost(client, f"disconnected: {event[1]}")
                elif kind == "message":
                    self._on_message(event[1])
                elif kind == "status" and online:
                    status = json.dumps(self._status_body("online"), separators=(",", ":")).encode()
                    client.publish(self.topic(topics.STATUS), status, qos=self.settings.qos.status, retain=True)
                elif kind == "retained" and online:
                    data, qos = self._retained.get(event[1], (None, 0))
                    if data is not None:
                        client.publish(event[1], data, qos=qos, retain=True)
            if pubacks:
                with self._send_lock:  # a producer may be recording one of these mids right now
                    for _, mid, reason in pubacks:
                        self._on_puback(inflight, mid, reason, acked)
            if acked:
                self.outbox.ack(acked)
                self.counters["acked"] += len(acked)
            if time.monotonic() - last_flush > ACK_FLUSH_S:
                self.outbox.checkpoint()  # one transaction for everything added and acknowledged since
                last_flush = time.monotonic()
            if not online:
                if time.monotonic() > wait_until:
                    return self._lost(client, "no CONNACK from the broker within 10 s")
                continue
            if self._closing.is_set():
                with self._send_lock:
                    self._live = None
                if not closing_sent:
                    offline = json.dumps(self._status_body("offline"), separators=(",", ":")).encode()
                    client.publish(self.topic(topics.STATUS), offline, qos=1, retain=True)
                    closing_sent = True
                    wait_until = time.monotonic() + 1.0
                if not client.want_write() and (not inflight or time.monotonic() > wait_until):
                    client.disconnect()
                    client.loop_write()
                    return
                continue
            if self._qos0 or len(inflight) < conn.window:
                with self._send_lock:
                    self._send(conn)

    def _send(self, conn: _Connection) -> None:
        """Hand paho the waiting QoS 0 messages and stored messages up to the window (send lock held)."""
        client = conn.client
        while self._qos0:
            full, data, retain = self._qos0.popleft()
            client.publish(full, data, qos=0, retain=retain)
            self.counters["qos0_sent"] += 1
        if len(conn.inflight) < conn.window:
            self._fill(conn)

    def _fill(self, conn: _Connection) -> None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        outbox, room = self.outbox, conn.window - len(conn.inflight)
        if outbox.fresh_lost:
            batch = outbox.pending(after=conn.cursor, limit=room)
            if len(batch) < room:  # read through: from here on the fresh queue has everything newer
                outbox.resume_fresh()
                batch += outbox.pending(after=batch[-1].id if batch else conn.cursor, limit=room - len(batch))
        else:
            batch = outbox.take_fresh(conn.cursor, room)
        for message in batch:
            props = None
            if message.correlation is not None and self.settings.protocol is Protocol.MQTT5:
                props = Properties(PacketTypes.PUBLISH)
                props.CorrelationData = message.correlation
            info = conn.client.publish(message.topic, message.payload, qos=message.qos, retain=message.retain, properties=props)
            if info.rc != 0:
                outbox.rewind()  # paho's socket is gone; resend from the table on the next connection
                break
            conn.inflight[info.mid] = message
            conn.cursor = message.id
            self.counters["sent"] += 1

    def _on_puback(self, inflight: dict[int, Message], mid: int, reason, acked: list[Message]) -> None:
        message = inflight.pop(mid, None)
        if message is None:
            return  # a QoS 0 or retained-state publish
        if reason.is_failure:
            # Permanent: ACL denial, quota, topic invalid. Retrying would be a storm that never lands.
            self.outbox.dead_letter(message.id, str(reason))
            self.counters["refused"] += 1
            log.warning("broker refused a message (%s); it was moved to the dead-letter table", reason)
        else:
            acked.append(message)

    def _on_connack(self, client) -> None:
        online = json.dumps(self._status_body("online"), separators=(",", ":")).encode()
        client.publish(self.topic(topics.STATUS), online, qos=self.settings.qos.status, retain=True)
        for full, (data, qos) in self._retained.items():
            client.publish(full, data, qos=qos, retain=True)
        if self._on_command is not None:
            client.subscribe(self.topic("cmd/+"), qos=1)

    def _on_message(self, message) -> None:
        name = topics.command_name(message.topic, self.device_id, prefix=self.settings.prefix)
        if name is None:
            return
        limit = self.settings.update_max_bytes if name == "model" else self.settings.command_max_bytes
        props = getattr(message, "properties", None)
        command = Command(
            name=name, payload=b"" if len(message.payload) > limit else bytes(message.payload),
            response_topic=getattr(props, "ResponseTopic", None) or None,
            correlation=getattr(props, "CorrelationData", None) or None,
            too_large=len(message.payload) > limit,
        )
        try:
            self._commands.put_nowait(command)
        except queue.Full:
            self.counters["commands_dropped"] += 1
            self.respond(command, {"ok": False, "error": "busy: too many commands queued; try again"})

    def _checkpoint_quietly(self) -> None:
        self.outbox.rewind()  # offline, the in-memory copies serve no one: keep memory flat
        try:
            self.outbox.checkpoint()
        except PublishError:
            log.exception("outbox checkpoint failed")  # e.g. a full disk; the journal keeps the messages

    def _lost(self, client, why: str) -> None:
        self.counters["disconnects"] += 1
        self._set_state("refused" if why.startswith("broker refused") else "offline", why)

    def _refusal(self) -> str | None:
        """The reason of a refused CONNACK among the events paho left behind, if there is one."""
        for event in self._events:
            if event[0] == "connack" and event[1].is_failure:
                return f"broker refused the connection: {event[1]}"
            if event[0] == "disconnect" and getattr(event[1], "is_failure", False) and event[1].value != 0x80:
                return f"broker closed the connection: {event[1]}"
        return None

    def _command_worker(self) -> None:
        while (command := self._commands.get()) is not None:
            try:
                self._on_command(command)
            except Exception as exc:  # noqa: BLE001 - a handler bug answers with an error, never kills the runtime
                log.exception("command %s failed", command.name)
                self.respond(command, {"ok": False, "error": f"internal error: {type(exc).__name__}: {exc}"})
