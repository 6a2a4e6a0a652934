"""Network faults between the device and a real Mosquitto, fast tier: nothing is lost, a dead link is
noticed in time, recovery is prompt, reconnects back off with jitter and without spinning.

The real Publisher talks to the broker through tests/support/faultproxy.py; the backend is a durable
MQTT 5 subscriber connected straight to the broker that de-duplicates on (device_id, seq).
"""

from __future__ import annotations

import collections
import socket
import threading
import time

import psutil
import pytest

from edge_sdk.mqtt import payloads
from edge_sdk.mqtt.client import Publisher
from edge_sdk.mqtt.settings import MQTTSettings
from support import wait
from support.faultproxy import FaultProxy
from support.subscriber import Subscriber

KEEPALIVE = 5  # the settings' minimum: a dead link must be noticed within 1.5 x this
RECONNECT_MIN_S, RECONNECT_MAX_S = 0.1, 0.5
FIRST_ACK_S = 1.5  # link back -> first PUBACK, on top of the reconnect delay being waited


class StateLog:
    """The publisher's on_state listener: every state it reports, stamped with time.monotonic()."""

    def __init__(self) -> None:
        self.entries: list[tuple[float, str, str | None]] = []

    def __call__(self, state: str, error: str | None) -> None:
        self.entries.append((time.monotonic(), state, error))

    def left_online(self, after: float) -> tuple[float, str, str | None] | None:
        return next((e for e in list(self.entries) if e[0] >= after and e[1] != "online"), None)


class Producer:
    """Publishes ``count`` detections at ``rate`` a second from its own thread, whatever the link does;
    each carries its frame number as the event id."""

    def __init__(self, publisher: Publisher, *, count: int, rate: float) -> None:
        self.publisher, self.count, self.rate = publisher, count, rate
        self.seqs: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="producer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        start = time.monotonic()
        for frame in range(self.count):
            if self._stop.wait(max(0.0, start + frame / self.rate - time.monotonic())):
                return
            body = self.publisher.envelope(payloads.DETECTIONS, {"camera": "main", "frame": frame, "frame_ts": time.time(), "width": 640, "height": 480, "detections": []})
            self.publisher.publish("detections", body)
            self.seqs.append(body["seq"])

    def reached(self, n: int, timeout: float = 30.0) -> bool:
        return wait(lambda: len(self.seqs) >= n, timeout)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def proxies(mosquitto):
    """Opens FaultProxies to the test's broker and closes each one, proving it left no thread behind."""
    opened: list[FaultProxy] = []

    def open_proxy() -> FaultProxy:
        opened.append(FaultProxy(mosquitto.port))
        return opened[-1]

    yield open_proxy
    for proxy in opened:
        proxy.close()
    assert not [t for t in threading.enumerate() if t.name == "faultproxy"]


@pytest.fixture
def proxy(proxies) -> FaultProxy:
    return proxies()


@pytest.fixture
def backend(mosquitto):
    subscriber = Subscriber(mosquitto.port, "edge/+/detections", client_id="backend", durable=True)
    yield subscriber
    subscriber.close()


@pytest.fixture
def publishers(tmp_path):
    """Starts real Publishers (keepalive 5 s, small reconnect delays) and closes every one."""
    started: list[Publisher] = []

    def start(proxy: FaultProxy, *, device_id: str = "cam-1", **extra) -> tuple[Publisher, StateLog]:
        extra.setdefault("reconnect_min_s", RECONNECT_MIN_S)
        extra.setdefault("reconnect_max_s", RECONNECT_MAX_S)
        settings = MQTTSettings(
            broker=proxy.url, device_id=device_id, keepalive=KEEPALIVE, outbox={"path": str(tmp_path / f"{device_id}.sqlite3")}, **extra,
        )
        log = StateLog()
        started.append(Publisher(settings, on_state=log).start())
        return started[-1], log

    yield start
    for publisher in started:
        publisher.close()


def first_ack_after(publisher: Publisher, since: float, *, acked_before: int, timeout: float = 15.0) -> float:
    """Seconds from ``since`` until the outbox's acknowledged count passes ``acked_before`` (inf if it does not)."""
    if not wait(lambda: publisher.counters["acked"] > acked_before, timeout):
        return float("inf")
    return time.monotonic() - since


@pytest.mark.timeout(20)
def test_the_proxy_passes_cuts_and_closes_without_leaking(mosquitto):
    process = psutil.Process()
    fds = process.num_fds()
    proxy = FaultProxy(mosquitto.port)
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as device:
            device.sendall(bytes.fromhex("101000044d5154540402003c000474657374"))  # CONNECT, MQTT 3.1.1, client id "test"
            assert device.recv(4) == bytes.fromhex("20020000")  # CONNACK, accepted
            proxy.cut()
            with pytest.raises(ConnectionResetError):
                device.recv(4)
        assert proxy.connections == 1 and wait(lambda: proxy.attempts[0].closed is not None)
    finally:
        proxy.close()
    assert not [t for t in threading.enumerate() if t.name == "faultproxy"]
    assert wait(lambda: process.num_fds() <= fds, 5), (fds, process.num_fds())


@pytest.mark.timeout(60)
def test_no_qos1_message_is_lost_across_cuts_and_a_blackhole(proxy, backend, publishers):
    n = 1000
    publisher, log = publishers(proxy)
    assert publisher.wait_online(10)
    producer = Producer(publisher, count=n, rate=70)
    try:
        # Faults are triggered by the producer's progress, so each one lands mid-stream.
        assert producer.reached(100)
        proxy.cut()
        assert producer.reached(200)
        proxy.refuse()  # the broker is away for 50 messages
        assert producer.reached(250)
        proxy.passthrough()
        assert producer.reached(300)
        proxy.delay(0.2)  # a slow link for 50 messages
        assert producer.reached(350)
        proxy.passthrough()  # (a fault on a slow link resends every message whose ack was on the way)
        assert producer.reached(370)
        started = proxy.blackhole()
        assert wait(lambda: log.left_online(started), 15), "the blackhole was never noticed"
        assert producer.reached(len(producer.seqs) + 30)
        proxy.passthrough()
        assert producer.reached(900)
        proxy.cut()
        assert producer.reached(n)
    finally:
        producer.stop()
    assert publisher.flush(30), publisher.stats()
    expected = {("cam-1", seq) for seq in producer.seqs}
    assert len(expected) == n
    assert backend.wait_for(lambda b: b.keys() >= expected, 30), f"lost {len(expected - backend.keys())} of {n}"

    stats = publisher.stats()
    assert stats.disconnects >= 4, stats  # the faults really broke the link
    assert stats.outbox_dropped_overflow == 0 and stats.refused == 0, stats
    assert backend.keys() == expected  # nothing the device did not produce
    assert backend.duplicates <= n // 100, backend.duplicates
    assert backend.altered() == []  # a duplicate is a byte-identical resend: same seq, same event
    frames = collections.Counter(body["frame"] for body in backend.bodies())
    assert set(frames) == set(range(n)) and max(frames.values()) == 1  # no event was re-sent under a new seq
    print(f"{n} produced, {backend.unique} delivered, {backend.duplicates} duplicates, {stats.disconnects} disconnects")


@pytest.mark.timeout(40)
def test_a_blackhole_is_noticed_within_one_and_a_half_keepalives_and_the_link_back_acks_promptly(proxy, publishers):
    publisher, log = publishers(proxy)
    assert publisher.wait_online(10)
    producer = Producer(publisher, count=2000, rate=50)  # traffic up to the last moment
    try:
        assert producer.reached(50)
        started = proxy.blackhole()
        assert wait(lambda: log.left_online(started), 15), "the blackhole was never noticed"
        noticed = log.left_online(started)[0] - started
        attempts = proxy.connections
        assert wait(lambda: proxy.connections > attempts, 5)  # it is trying again, into the blackhole
        acked = publisher.counters["acked"]
        back = proxy.passthrough()
        first_ack = first_ack_after(publisher, back, acked_before=acked)
    finally:
        producer.stop()
    print(f"blackhole noticed after {noticed:.3f} s; first ack {first_ack:.3f} s after the link came back")
    assert noticed <= 1.5 * KEEPALIVE, noticed
    # The attempt made during the blackhole is answered as soon as the link is back: the reconnect
    # delay being waited is at most reconnect_max_s, then one round trip and the resend.
    assert first_ack <= FIRST_ACK_S + RECONNECT_MAX_S, first_ack


@pytest.mark.timeout(30)
def test_when_the_broker_comes_back_the_first_ack_follows_within_the_reconnect_delay(proxy, publishers):
    publisher, log = publishers(proxy)
    assert publisher.wait_online(10)
    producer = Producer(publisher, count=2000, rate=50)
    try:
        assert producer.reached(20)
        proxy.refuse()
        # Six refused attempts: the delay has doubled from 0.1 s past the 0.5 s cap, so the
        # publisher is now waiting at most reconnect_max_s; the bound below is FIRST_ACK_S + that.
        attempts = proxy.connections
        assert wait(lambda: proxy.connections >= attempts + 6, 15)
        assert publisher.state != "online"
        acked = publisher.counters["acked"]
        back = proxy.passthrough()
        first_ack = first_ack_after(publisher, back, acked_before=acked)
    finally:
        producer.stop()
    print(f"first ack {first_ack:.3f} s after the broker came back (bound {FIRST_ACK_S + RECONNECT_MAX_S} s)")
    assert first_ack <= FIRST_ACK_S + RECONNECT_MAX_S, first_ack


def thread_cpu_s(thread: threading.Thread) -> float:
    for t in psutil.Process().threads():
        if t.id == thread.native_id:
            return t.user_time + t.system_time
    raise LookupError(f"thread {thread.name} is not running")


@pytest.mark.timeout(60)
def test_reconnects_back_off_capped_and_jittered_while_connacks_are_withheld_without_spinning(proxies, publishers):
    withheld, low, cap = 5, 0.25, 1.0
    devices = []
    for device_id in ("cam-1", "cam-2"):  # one proxy each, so attempts are told apart
        proxy = proxies()
        proxy.withhold_connack(withheld)
        publisher, _ = publishers(proxy, device_id=device_id, reconnect_min_s=low, reconnect_max_s=cap)
        devices.append((proxy, publisher))
    network = [publisher._threads[0] for _, publisher in devices]  # the thread that owns paho

    # CPU over the outage from each device's second withheld attempt to its fourth: waiting for
    # a CONNACK, then waiting out a reconnect delay, twice.
    assert all(wait(lambda proxy=proxy: proxy.connections >= 2, 15) for proxy, _ in devices)
    cpu_before, process_before, window_start = [thread_cpu_s(t) for t in network], time.process_time(), time.monotonic()
    assert all(wait(lambda proxy=proxy: proxy.connections >= 4, 20) for proxy, _ in devices)
    window = time.monotonic() - window_start
    cpu = [thread_cpu_s(t) - b for t, b in zip(network, cpu_before)]
    process_cpu = time.process_time() - process_before

    assert all(publisher.wait_online(20) for _, publisher in devices), [publisher.stats() for _, publisher in devices]
    ceilings = [min(cap, low * 2**k) for k in range(withheld - 1)]  # 0.25, 0.5, 1.0, 1.0
    waits = []
    for proxy, _ in devices:
        tries = proxy.attempts
        assert [a.withheld for a in tries[: withheld + 1]] == [True] * withheld + [False]
        waits.append([tries[k + 1].accepted - tries[k].closed for k in range(withheld - 1)])
    print(f"reconnect waits: {[[round(w, 3) for w in ws] for ws in waits]} (ceilings {ceilings})")
    print(f"over {window:.1f} s of outage: network threads {[round(c, 3) for c in cpu]} s CPU, process {process_cpu:.3f} s")

    assert window >= 5.0 and max(cpu) <= 0.01 * window, cpu  # waiting: under 1 % of a core per network thread
    assert process_cpu <= 0.05 * window, process_cpu  # everything in this process, proxies included
    for ws in waits:
        for k, (w, ceiling) in enumerate(zip(ws, ceilings)):
            # Each wait is drawn in [ceiling / 2, ceiling]; measured from the device's close to its
            # next connect, plus up to 0.1 s of thread scheduling on a shared machine.
            assert ceiling / 2 - 0.03 <= w <= ceiling + 0.1, (k, w, ceiling)
        assert ws[2] > ws[0] and ws[3] > ws[0]  # it grows...
    assert max(max(ws) for ws in waits) <= cap + 0.1  # ...up to the cap, where 2 s would come next
    assert max(abs(a - b) for a, b in zip(*waits)) > 0.02  # two devices do not retry in lockstep
    assert any(w < 0.85 * c for ws in waits for w, c in zip(ws, ceilings))  # not always the full delay
