"""The SDK publisher (durable outbox) against a plain paho publish loop, side by side in one run.

Against one local Mosquitto that this script starts on a free loopback port (persistence on):

  rate      N detection-sized messages (~300 bytes JSON) as fast as each contender goes, at QoS 0
            and QoS 1: messages/s until the last one is acknowledged (QoS 1) or written (QoS 0),
            and p99 publish-to-receive latency measured by a subscriber in another process.
            Rounds alternate the order of the contenders; the median is reported.
  restart   a steady stream (200 msg/s for 6 s, QoS 1); the broker is stopped for 2 s in the middle
            and started again on the same port. A durable subscriber counts unique ids.
  kill      the producer runs in a child process while the broker is down, is SIGKILLed, then a
            new child starts with the broker up (the SDK on the same outbox file; plain paho has
            nothing to resume from). Counted: ids produced before the kill that ever arrive.

    .venv/bin/python benchmarks/mqtt_bench.py               # 5000 messages x 3 rounds, ~2 minutes
    .venv/bin/python benchmarks/mqtt_bench.py --quick       # smoke run

Prints a Markdown table and writes benchmarks/results/mqtt_bench.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path

import paho.mqtt.client as mqtt

from edge_sdk.mqtt.client import Publisher
from edge_sdk.mqtt.settings import MQTTSettings

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
TOPIC = "edge/bench/detections"


def log(message: str) -> None:
    print(f"[mqtt_bench] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, free_port()
        (folder / "data").mkdir(parents=True, exist_ok=True)
        self.config = folder / "mosquitto.conf"
        self.config.write_text("\n".join([
            "user root" if os.geteuid() == 0 else "", "per_listener_settings false",
            f"listener {self.port} 127.0.0.1", "allow_anonymous true", "persistence true",
            f"persistence_location {folder / 'data'}/", "max_queued_messages 1000000", "log_dest none",
        ]) + "\n")
        self.binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen([self.binary, "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


# The subscriber runs in its own process so its work does not share the producers' GIL.
SUBSCRIBER = r"""
import json, sys, time, threading
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
port, out = int(sys.argv[1]), sys.argv[2]
got = {}
lock = threading.Lock()
def on_message(c, u, m):
    now = time.time()
    if m.topic == "bench/ctl":
        with lock:
            snapshot = dict(got)
            got.clear()
        with open(m.payload.decode(), "w") as f:
            json.dump(snapshot, f)
        return
    if not m.topic.endswith("/detections"):
        return  # status, info: the SDK's own retained messages
    body = json.loads(m.payload)
    with lock:
        got.setdefault(f"{body['run']}:{body['i']}", now - body["t"])
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-subscriber", protocol=mqtt.MQTTv5)
c.on_message = on_message
c.on_connect = lambda c, u, f, rc, p: c.subscribe([("edge/#", 1), ("bench/ctl", 1)])
c.reconnect_delay_set(0.05, 0.2)
props = Properties(PacketTypes.CONNECT)
props.SessionExpiryInterval = 3600
c.connect("127.0.0.1", port, clean_start=False, properties=props)
print("ready", flush=True)
c.loop_forever(retry_first_connection=True)
"""


class Subscriber:
    def __init__(self, port: int, folder: Path) -> None:
        self.port, self.folder = port, folder
        self.process = subprocess.Popen([sys.executable, "-c", SUBSCRIBER, str(port), ""], stdout=subprocess.PIPE, text=True)
        assert self.process.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        self._control = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self._control.reconnect_delay_set(0.05, 0.2)
        self._control.connect("127.0.0.1", port)
        self._control.loop_start()
        self._n = 0

    def collect(self, *, settle: float = 1.0, timeout: float = 30.0) -> dict[str, float]:
        """Everything received since the last collect: id -> publish-to-receive seconds."""
        time.sleep(settle)
        self._n += 1
        path = self.folder / f"received-{self._n}.json"
        self._control.publish("bench/ctl", str(path).encode(), qos=1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists():
                try:
                    return json.loads(path.read_text())
                except ValueError:
                    pass
            time.sleep(0.05)
        raise TimeoutError("the subscriber did not answer")

    def close(self) -> None:
        self._control.loop_stop()
        self.process.kill()
        self.process.wait(10)


def payload(run: str, i: int) -> dict:
    return {"run": run, "i": i, "t": time.time(), "frame": i, "width": 640, "height": 480,
            "detections": [{"class_id": 0, "label": "person", "score": 0.91, "box": [0.1, 0.2, 0.3, 0.4], "box_px": [64, 96, 192, 192]},
                           {"class_id": 2, "label": "car", "score": 0.77, "box": [0.5, 0.5, 0.9, 0.8], "box_px": [320, 240, 576, 384]}]}


# -- contenders ------------------------------------------------------------------------------

def plain_rate(broker: Broker, run: str, n: int, qos: int) -> float:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"plain-{run}", protocol=mqtt.MQTTv5)
    done = threading.Event()
    count = [0]

    def on_publish(c, u, mid, rc, props):
        count[0] += 1
        if count[0] >= n:
            done.set()

    client.on_publish = on_publish
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    time.sleep(0.2)
    started = time.perf_counter()
    for i in range(n):
        client.publish(TOPIC, json.dumps(payload(run, i), separators=(",", ":")), qos=qos)
    done.wait(120)
    elapsed = time.perf_counter() - started
    client.loop_stop()
    client.disconnect()
    return n / elapsed


def sdk_settings(broker: Broker, outbox: Path) -> MQTTSettings:
    return MQTTSettings(broker=broker.url, device_id="bench", outbox={"path": str(outbox)}, reconnect_min_s=0.1, reconnect_max_s=0.5)


def sdk_rate(broker: Broker, run: str, n: int, qos: int, folder: Path) -> float:
    publisher = Publisher(sdk_settings(broker, folder / f"outbox-{run}.sqlite3")).start()
    publisher.wait_online(10)
    started = time.perf_counter()
    for i in range(n):
        publisher.publish("detections", payload(run, i), qos=qos)
    publisher.flush(120)
    elapsed = time.perf_counter() - started
    publisher.close()
    return n / elapsed


def steady(send, run: str, *, rate: float, seconds: float, broker: Broker, outage: tuple[float, float]) -> int:
    """Send at ``rate`` for ``seconds``; stop the broker during ``outage`` (start, end) seconds."""
    started = time.monotonic()
    sent, stopped = 0, False
    while (elapsed := time.monotonic() - started) < seconds:
        if not stopped and elapsed >= outage[0]:
            broker.stop()
            stopped = True
        if stopped and broker.process is None and elapsed >= outage[1]:
            broker.start()
        send(payload(run, sent))
        sent += 1
        time.sleep(max(0.0, started + sent / rate - time.monotonic()))
    if broker.process is None:
        broker.start()
    return sent


def plain_restart(broker: Broker, run: str, **kw) -> int:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"plain-{run}", protocol=mqtt.MQTTv5)
    client.reconnect_delay_set(0.1, 0.5)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    time.sleep(0.2)
    sent = steady(lambda p: client.publish(TOPIC, json.dumps(p), qos=1), run, broker=broker, **kw)
    time.sleep(3)  # let paho's own reconnect resend what it kept in memory
    client.loop_stop()
    client.disconnect()
    return sent


def sdk_restart(broker: Broker, run: str, folder: Path, **kw) -> int:
    publisher = Publisher(sdk_settings(broker, folder / f"outbox-{run}.sqlite3")).start()
    publisher.wait_online(10)
    sent = steady(lambda p: publisher.publish("detections", p, qos=1), run, broker=broker, **kw)
    publisher.flush(30)
    publisher.close()
    return sent


KILLED_PRODUCER = r"""
import json, sys, time
kind, url, run, n, outbox = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
sys.path.insert(0, sys.argv[6])
from mqtt_bench import payload, TOPIC
if kind == "plain":
    import paho.mqtt.client as mqtt
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="plain-" + run, protocol=mqtt.MQTTv5)
    c.reconnect_delay_set(0.1, 0.5)
    c.connect_async("127.0.0.1", int(url.rsplit(":", 1)[1]))
    c.loop_start()
    send = lambda p: c.publish(TOPIC, json.dumps(p), qos=1)
else:
    from edge_sdk.mqtt.client import Publisher
    from edge_sdk.mqtt.settings import MQTTSettings
    p = Publisher(MQTTSettings(broker=url, device_id="bench", outbox={"path": outbox}, reconnect_min_s=0.1, reconnect_max_s=0.5)).start()
    send = lambda body: p.publish("detections", body, qos=1)
for i in range(n):
    send(payload(run, i))
print("produced", flush=True)
if kind == "sdk" and n == 0:
    p.flush(30)
    print("flushed", flush=True)
time.sleep(60)
"""


def killed(kind: str, broker: Broker, run: str, n: int, folder: Path) -> None:
    outbox = str(folder / f"outbox-{run}.sqlite3")
    broker.stop()
    child = subprocess.Popen([sys.executable, "-c", KILLED_PRODUCER, kind, broker.url, run, str(n), outbox, str(HERE)],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "produced"
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    broker.start()
    if kind == "sdk":  # a restarted device: the same outbox, nothing new to send
        again = subprocess.Popen([sys.executable, "-c", KILLED_PRODUCER, kind, broker.url, run, "0", outbox, str(HERE)],
                                 stdout=subprocess.PIPE, text=True)
        again.stdout.readline()
        again.stdout.readline()
        again.kill()
        again.wait(10)


# -- the run ---------------------------------------------------------------------------------

def p99(values: list[float]) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(0.99 * len(values)))] * 1e3 if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=None, help="messages per rate round (default 5000, 1000 with --quick)")
    parser.add_argument("--rounds", type=int, default=None, help="rate rounds (default 3, 1 with --quick)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    n = args.messages or (1000 if args.quick else 5000)
    rounds = args.rounds or (1 if args.quick else 3)
    folder = Path(tempfile.mkdtemp(prefix="mqtt-bench-"))
    broker = Broker(folder / "broker")
    broker.start()
    subscriber = Subscriber(broker.port, folder)
    results: dict = {"rate": {}, "latency_p99_ms": {}, "lost": {}, "received": {}}
    try:
        for qos in (0, 1):
            rates: dict[str, list[float]] = {"plain": [], "sdk": []}
            latencies: dict[str, list[float]] = {"plain": [], "sdk": []}
            got: dict[str, int] = {"plain": 0, "sdk": 0}
            for r in range(rounds):
                order = ["plain", "sdk"] if r % 2 == 0 else ["sdk", "plain"]
                for who in order:
                    run = f"{who}-q{qos}-r{r}"
                    rate = plain_rate(broker, run, n, qos) if who == "plain" else sdk_rate(broker, run, n, qos, folder)
                    received = subscriber.collect()
                    rates[who].append(rate)
                    latencies[who] += list(received.values())
                    got[who] += len(received)
                    log(f"QoS {qos} round {r + 1}/{rounds} {who}: {rate:,.0f} msg/s, {len(received)}/{n} received")
            for who in rates:
                results["rate"][f"{who}_q{qos}"] = statistics.median(rates[who])
                results["latency_p99_ms"][f"{who}_q{qos}"] = p99(latencies[who])
                results["received"][f"{who}_q{qos}"] = [got[who], n * rounds]
        seconds, rate = (4.0, 100.0) if args.quick else (6.0, 200.0)
        outage = (seconds / 3, seconds / 3 + 2.0)
        for who in ("plain", "sdk"):
            run = f"{who}-restart"
            log(f"{who}: {rate:.0f} msg/s for {seconds:.0f} s with the broker stopped from {outage[0]:.0f} s to {outage[1]:.0f} s")
            if who == "plain":
                sent = plain_restart(broker, run, rate=rate, seconds=seconds, outage=outage)
            else:
                sent = sdk_restart(broker, run, folder, rate=rate, seconds=seconds, outage=outage)
            received = subscriber.collect(settle=2.0)
            results["lost"][f"{who}_restart"] = [sent - len(received), sent]
        produced = 300 if args.quick else 1000
        for who in ("plain", "sdk"):
            run = f"{who}-kill"
            log(f"{who}: {produced} messages produced with the broker down, then SIGKILL and a restart")
            killed(who, broker, run, produced, folder)
            received = subscriber.collect(settle=2.0)
            results["lost"][f"{who}_kill"] = [produced - len(received), produced]
    finally:
        subscriber.close()
        broker.stop()
        shutil.rmtree(folder, ignore_errors=True)
    report(results, n, rounds)
    return 0


def machine() -> str:
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    version = subprocess.run([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-h"], capture_output=True, text=True).stdout.splitlines()
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {load:.2f} at the end; "
            f"Python {platform.python_version()}, paho-mqtt {metadata.version('paho-mqtt')}, {version[0] if version else 'mosquitto ?'}")


def report(results: dict, n: int, rounds: int) -> None:
    rate, lat, lost, got = results["rate"], results["latency_p99_ms"], results["lost"], results["received"]
    lines = [
        "| | plain paho | edge-sdk publisher (SQLite outbox) | edge-sdk / plain |",
        "|---|---|---|---|",
        f"| QoS 0 messages/s (median of {rounds}, {n} each) | {rate['plain_q0']:,.0f} | {rate['sdk_q0']:,.0f} | {rate['sdk_q0'] / rate['plain_q0']:.2f} |",
        f"| QoS 1 messages/s, to the last PUBACK | {rate['plain_q1']:,.0f} | {rate['sdk_q1']:,.0f} | **{rate['sdk_q1'] / rate['plain_q1']:.2f}** |",
        f"| QoS 0 received in the rate rounds | {got['plain_q0'][0]} of {got['plain_q0'][1]} | {got['sdk_q0'][0]} of {got['sdk_q0'][1]} | |",
        f"| QoS 0 p99 publish-to-receive | {lat['plain_q0']:.0f} ms | {lat['sdk_q0']:.0f} ms | |",
        f"| QoS 1 p99 publish-to-receive | {lat['plain_q1']:.0f} ms | {lat['sdk_q1']:.0f} ms | |",
        f"| lost across a broker restart (QoS 1) | {lost['plain_restart'][0]} of {lost['plain_restart'][1]} | {lost['sdk_restart'][0]} of {lost['sdk_restart'][1]} | |",
        f"| lost across a process kill during an outage | {lost['plain_kill'][0]} of {lost['plain_kill'][1]} | {lost['sdk_kill'][0]} of {lost['sdk_kill'][1]} | |",
    ]
    text = "\n".join(lines) + f"\n\nMachine: {machine()}\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "mqtt_bench.md").write_text(text)
    (RESULTS / "mqtt_bench.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    sys.exit(main())
