"""The fleet back-end under load: N simulated devices -> Mosquitto -> K shared consumers -> PostgreSQL.

Everything real and local: a Mosquitto and a PostgreSQL 15 this script starts on loopback ports
(PostgreSQL with its default durability: fsync and synchronous_commit on), devices that are real
publishers with outboxes (:mod:`edge_sdk.fleet.simulate`), consumers that are real
:class:`edge_sdk.fleet.consumer.Consumer` processes writing through ``open_store``, in one
``$share`` group. For each N (devices) and K (consumers), two phases:

  live      the devices send detections and line events at a set total rate for a while; every
            message must reach a row. Reported: messages/s stored, p50/p99 publish-to-row
            latency (the device's stamp to the consumer's commit), lost and duplicate counts.
  capacity  the consumers stop (their sessions stay), the devices queue a backlog in the broker,
            then the consumers start again and drain it: messages/s from their first connection
            to their last commit. This is the rate K consumers sustain, the number the K = 3
            against K = 1 ratio is about. CPU seconds per component show what limits it.

    .venv/bin/python benchmarks/fleet_bench.py              # N = 100, 500 x K = 1, 3; ~6 minutes
    .venv/bin/python benchmarks/fleet_bench.py --quick      # smoke run

Prints a Markdown table and writes benchmarks/results/fleet_bench.md.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the tests' harnesses start Mosquitto and PostgreSQL

from common import cpu_flags, cpu_model, write_results  # noqa: E402
from support.broker import Mosquitto  # noqa: E402
from support.postgres import Postgres  # noqa: E402

from edge_sdk.fleet.simulate import SimulatedFleet  # noqa: E402


def log(message: str) -> None:
    print(f"[fleet_bench] {message}", file=sys.stderr, flush=True)


def member(broker: str, db: str, group: str, name: str, locks: str, ready, go, stop, out) -> None:
    """One consumer process: imports and opens its store, waits for ``go``, stores until told to
    stop, then reports what it did and when."""
    from edge_sdk.fleet.consumer import Consumer
    from edge_sdk.fleet.store import open_store
    from edge_sdk.mqtt.settings import MQTTSettings

    latencies: list[float] = []
    marks = {"first": None, "last": None, "received": 0}

    def on_stored(records, result) -> None:
        now = time.time()
        marks["last"] = now
        if marks["first"] is None:
            marks["first"] = min(r.received_ts for r in records)
        ours = [r for r in records if r.seq is not None and r.device_id.startswith("sim-")]
        marks["received"] += len(ours)
        latencies.extend(now - r.ts for r in ours if r.ts is not None)

    store = open_store(db)
    consumer = Consumer(MQTTSettings(broker=broker, device_id="bench"), store, group=group, name=name,
                        lock_folder=Path(locks), on_stored=on_stored, receive_maximum=1000)
    ready.set()
    go.wait()
    cpu_start = os.times()
    consumer.start()
    runner = threading.Thread(target=consumer.run)
    runner.start()
    stop.wait()
    consumer.stop()
    runner.join()
    consumer.close()
    store.close()
    cpu = os.times()
    out.put({"name": name, "first": marks["first"], "last": marks["last"], "received": marks["received"],
             "latencies": latencies, "cpu": cpu.user + cpu.system - cpu_start.user - cpu_start.system})


class Members:
    """K consumer processes of one group, started and stopped together."""

    def __init__(self, broker: str, db: str, group: str, k: int, locks: Path) -> None:
        self.args = (broker, db, group)
        self.k, self.locks = k, locks
        self.ctx = mp.get_context("spawn")

    def start(self) -> Members:
        self.stop_event, self.go_event, self.out = self.ctx.Event(), self.ctx.Event(), self.ctx.Queue()
        self.ready = [self.ctx.Event() for _ in range(self.k)]
        self.processes = [self.ctx.Process(target=member, args=(*self.args, f"m{i}", str(self.locks), self.ready[i],
                                                                self.go_event, self.stop_event, self.out))
                          for i in range(self.k)]
        for process in self.processes:
            process.start()
        for event in self.ready:
            if not event.wait(60):
                raise RuntimeError("a consumer did not start")
        return self

    def go(self) -> float:
        """Every member connects now (they are started, imported and hold a database connection)."""
        self.go_event.set()
        return time.time()

    def stop(self) -> list[dict]:
        self.stop_event.set()
        reports = [self.out.get(timeout=120) for _ in self.processes]
        for process in self.processes:
            process.join(30)
        return reports


def cpu_of(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def machine_busy() -> float:
    """CPU seconds the whole machine spent busy so far (every core, every process)."""
    import psutil

    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def wait_rows(store, expected: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    count = store.count("messages")
    while count < expected and time.monotonic() < deadline:
        time.sleep(0.25)
        count = store.count("messages")
    return count


def one(broker: Mosquitto, pg: Postgres, work: Path, n: int, k: int, *, offered: float, live_s: float, backlog: int) -> dict:
    from edge_sdk.fleet.store import open_store

    db = pg.new_database()
    group, locks = f"bench{n}x{k}", work / f"locks-{n}-{k}"
    locks.mkdir(parents=True, exist_ok=True)
    reader = open_store(db)  # makes the schema once, before K writers race to
    members = Members(broker.url, db, group, k, locks).start()
    members.go()
    time.sleep(1.0)  # subscribed before the devices start
    # live: the devices at the offered rate
    fleet = SimulatedFleet(broker.url, work / f"devices-{n}-{k}", count=n, rate=offered / n).start()
    time.sleep(live_s)
    if not fleet.stop(flush_timeout=120):
        log("a device's outbox did not drain")
    sent = fleet.sent()
    stored = wait_rows(reader, len(sent), 120)
    live = members.stop()
    keys = reader.keys()
    sim = {key for key in keys if key[0].startswith("sim-")}
    latencies = sorted(x for r in live for x in r["latencies"])
    result = {
        "n": n, "k": k, "sent": len(sent), "lost": len(set(sent) - sim), "unexpected": len(sim - set(sent)),
        # rows stored twice (the key forbids it; counted to prove it), and copies the consumers got again and dropped
        "duplicates": reader.count("messages") - len(keys), "redelivered": sum(r["received"] for r in live) - len(sim),
        "stored": stored,
        "live_rate": len(sent) / live_s, "p50_ms": 1000 * statistics.median(latencies) if latencies else None,
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))] if latencies else None,
    }
    # capacity: a backlog queued in the stopped members' sessions, then drained
    before = reader.count("messages")
    fleet = SimulatedFleet(broker.url, work / f"devices-{n}-{k}", count=n, rate=1000.0).start()
    while sum(len(d.sent.keys) for d in fleet.devices) < backlog:
        time.sleep(0.05)
    fleet.stop(flush_timeout=120)
    queued = set(fleet.sent())
    members.start()
    broker_cpu, busy = cpu_of(broker.process.pid), machine_busy()
    began = members.go()
    wait_rows(reader, before + len(queued), 300)
    window = time.time() - began
    busy, broker_cpu = machine_busy() - busy, cpu_of(broker.process.pid) - broker_cpu  # (the row polls are in "rest")
    drained = members.stop()
    last = max(r["last"] or 0 for r in drained)
    missing = queued - reader.keys()
    consumers = sum(r["cpu"] for r in drained)
    result.update(backlog=len(queued), drain_s=last - began, capacity=(len(queued) - len(missing)) / (last - began),
                  lost_backlog=len(missing), shares=[r["received"] for r in drained])
    result["cpu"] = {"consumers": consumers, "broker": broker_cpu, "postgres and rest": busy - consumers - broker_cpu}
    result["cores"] = busy / window
    result["window"] = window
    reader.close()
    log(f"N={n} K={k}: live {result['live_rate']:.0f} msg/s p99 {result['p99_ms']:.0f} ms lost {result['lost']}; "
        f"capacity {result['capacity']:.0f} msg/s, {result['cores']:.2f} cores busy, shares {result['shares']}")
    return result


def table(results: list[dict]) -> str:
    lines = ["| devices N | consumers K | live msg/s | p50 ms | p99 ms | lost | duplicates | redelivered | capacity msg/s | K / K=1 | cores busy: all (consumers, broker, postgres and rest) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    base = {r["n"]: r["capacity"] for r in results if r["k"] == 1}
    for r in results:
        ratio = f"{r['capacity'] / base[r['n']]:.2f}x" if r["k"] != 1 and r["n"] in base else ""
        cpu = r["cpu"]
        lines.append(
            f"| {r['n']} | {r['k']} | {r['live_rate']:.0f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | "
            f"{r['lost'] + r['lost_backlog']} | {r['duplicates']} | {r['redelivered']} | {r['capacity']:.0f} | {ratio} | "
            f"{r['cores']:.2f} ({cpu['consumers'] / r['window']:.2f}, {cpu['broker'] / r['window']:.2f}, "
            f"{cpu['postgres and rest'] / r['window']:.2f}) |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default="100,500", help="N values")
    parser.add_argument("--consumers", default="1,3", help="K values")
    parser.add_argument("--offered", type=float, default=1000.0, help="live phase: messages/s from all devices together")
    parser.add_argument("--live", type=float, default=30.0, help="live phase: seconds")
    parser.add_argument("--backlog", type=int, default=60000, help="capacity phase: messages queued before the drain")
    parser.add_argument("--quick", action="store_true", help="a smoke run: N=20, K=1,2, short phases")
    args = parser.parse_args()
    if args.quick:
        args.devices, args.consumers, args.live, args.backlog = "20", "1,2", 5.0, 5000
    work = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    results = []
    # The broker as a fleet's would be set: room to queue a stopped consumer's share, and a
    # window wide enough for consumers to batch (Mosquitto's default is 20 in flight).
    with Mosquitto(work / "broker", max_queued_messages=1_000_000, max_inflight_messages=1000) as broker, \
            Postgres(fsync=True) as pg:
        for n in [int(x) for x in args.devices.split(",")]:
            for k in [int(x) for x in args.consumers.split(",")]:
                results.append(one(broker, pg, work, n, k, offered=args.offered, live_s=args.live, backlog=args.backlog))
    import psycopg

    text = "\n".join([
        f"fleet_bench on {cpu_model()}, {os.cpu_count()} cores, {cpu_flags()}; "
        f"Python {platform.python_version()}, psycopg {psycopg.__version__}, PostgreSQL 15 (fsync on), Mosquitto 2.0",
        f"live phase: {args.offered:.0f} msg/s offered for {args.live:.0f} s; capacity phase: a backlog of {args.backlog} messages drained",
        "", table(results), "",
    ])
    print(text)
    write_results(HERE / "results" / "fleet_bench.md", text, log=log)


if __name__ == "__main__":
    main()
