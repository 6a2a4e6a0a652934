"""The combined delivery gate of issue #7: every QoS 1 detection the runtime accepted is delivered
across network cuts, blackholes, graceful broker restarts and SIGKILLs of the runtime during broker
outages; duplicates ≤ 1 %, each a byte-identical resend carrying the same event id.

One runtime process (support/reliability/combined_runtime.py: the real Publisher on a persistent outbox) publishes
through support/faultproxy.py to a real Mosquitto with persistence, so a graceful restart keeps the
backend's session and what was queued for it. The backend is a durable subscriber connected straight
to the broker. Faults run one at a time in a seeded shuffled order, each triggered by the runtime's
progress so it lands mid-stream, and each recovered from (everything queued before it delivered)
before the next. A SIGKILL always falls in a broker outage, after the killed life has queued
detections it could not send; the next life starts on the same outbox and frame log.
"""

from __future__ import annotations

import collections
import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from support import wait
from support.faultproxy import FaultProxy
from support.reliability.combined_runtime import EXIT_STATS, FRAME_LOG, OUTBOX
from support.reliability.report import Check, Plot, Section, Series
from support.subscriber import Subscriber


RUNTIME = Path(__file__).with_name("combined_runtime.py")
KEEPALIVE = 5  # the settings' minimum: a blackhole is noticed within 1.5 x this
RECONNECT_MIN_S, RECONNECT_MAX_S = 0.1, 1.0
RECOVERY_S = 60.0  # a fault's backlog must be delivered within this before the next fault
DUPLICATES_PERCENT = 1.0
CUT, BLACKHOLE, RESTART, KILL = "cut", "blackhole", "broker restart", "runtime kill"


@dataclass(frozen=True)
class CombinedSize:
    events: int  # detections produced at least; production goes on until the last fault is over
    cuts: int
    blackholes: int
    restarts: int  # graceful broker restarts, besides the outages the kills fall in
    kills: int
    rate: float  # detections a second
    outage_s: float = 1.0  # a broker outage (restart or kill) lasts at least this
    seed: int = 7

    def plan(self) -> list[str]:
        kinds = [CUT] * self.cuts + [BLACKHOLE] * self.blackholes + [RESTART] * self.restarts + [KILL] * self.kills
        random.Random(self.seed).shuffle(kinds)
        return kinds

    def __str__(self) -> str:
        return (f"{self.events} detections at {self.rate:g}/s; {self.cuts} cuts, {self.blackholes} blackholes, "
                f"{self.restarts} graceful broker restarts, {self.kills} SIGKILLs of the runtime during broker outages "
                f"(held ≥ {self.outage_s:g} s); fault order shuffled with seed {self.seed}")


class FrameLog:
    """The runtime's frame log (see support/reliability/combined_runtime.py), read incrementally."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.claimed: set[int] = set()
        self.queued: dict[int, int] = {}  # frame -> seq
        self.times: list[float] = []  # monotonic time of each confirmation, in order
        self._offset = 0
        self._partial = b""

    def poll(self) -> int:
        """Read what was appended since the last poll; returns how many detections were confirmed."""
        if self.path.exists():
            with open(self.path, "rb") as handle:
                handle.seek(self._offset)
                data = self._partial + handle.read()
                self._offset = handle.tell()
            *lines, self._partial = data.split(b"\n")
            for line in lines:
                word, *fields = line.decode().split()
                if word == "claim":
                    self.claimed.add(int(fields[0]))
                elif word == "queued":
                    self.queued[int(fields[0])] = int(fields[1])
                    self.times.append(float(fields[2]))
        return len(self.queued)


class Runtime:
    """The runtime's lives: one process at a time on the same folder (outbox and frame log)."""

    def __init__(self, folder: Path, broker_url: str, *, device_id: str, rate: float) -> None:
        self.folder, self.broker_url, self.device_id, self.rate = folder, broker_url, device_id, rate
        self.frames = FrameLog(folder / FRAME_LOG)
        self.lives: list[subprocess.Popen] = []

    @property
    def process(self) -> subprocess.Popen | None:
        return self.lives[-1] if self.lives else None

    def produced(self) -> int:
        return self.frames.poll()

    def start(self) -> None:
        with open(self.folder / f"runtime-{len(self.lives)}.log", "wb") as log:
            self.lives.append(subprocess.Popen(
                [sys.executable, str(RUNTIME), str(self.folder), "--broker", self.broker_url, "--device-id", self.device_id,
                 "--rate", str(self.rate), "--keepalive", str(KEEPALIVE), "--reconnect-min-s", str(RECONNECT_MIN_S),
                 "--reconnect-max-s", str(RECONNECT_MAX_S)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            ))

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self, timeout: float) -> int | None:
        """SIGTERM: stop producing, drain the outbox, exit; the exit code (None if it did not exit)."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        for process in self.lives:
            if process.poll() is None:
                process.kill()
                process.wait(10)

    def logs(self) -> str:
        return "\n".join(f"--- life {i} ---\n{(self.folder / f'runtime-{i}.log').read_text(errors='replace')}"
                         for i in range(len(self.lives)))


@dataclass
class Fault:
    kind: str
    at: float  # monotonic
    produced: int  # detections confirmed when it began
    held_s: float = 0.0  # fault to restore
    noticed_s: float | None = None  # blackhole: until the runtime gave up on the dead link
    outage: str = ""  # runtime kill: which broker outage it fell in
    queued_offline: int | None = None  # runtime kill: confirmed by the killed life during the outage
    unconfirmed: int | None = None  # runtime kill: claimed by the killed life, never confirmed
    recovered_s: float = float("inf")  # restore to: everything confirmed before the restore delivered


class Faults:
    """The four faults, each applied and restored against the broker, the proxy and the runtime."""

    def __init__(self, broker, proxy: FaultProxy, runtime: Runtime, backend: Subscriber, size: CombinedSize) -> None:
        self.broker, self.proxy, self.runtime, self.backend, self.size = broker, proxy, runtime, backend, size
        self.kills = 0
        self.unconfirmed = 0  # frames claimed and never confirmed by the lives killed so far

    def run(self, kind: str) -> Fault:
        fault = Fault(kind, time.monotonic(), self.runtime.produced())
        {CUT: self._cut, BLACKHOLE: self._blackhole, RESTART: self._restart, KILL: self._kill}[kind](fault)
        restored = time.monotonic()
        fault.held_s = restored - fault.at
        # Recovered once the runtime is online again: a detection confirmed after the restore is
        # delivered, and so is everything confirmed before it.
        before = self.runtime.produced()
        deadline = restored + RECOVERY_S
        if wait(lambda: self.runtime.produced() > before, RECOVERY_S):
            expected = self.expected()
            if self.backend.wait_for(lambda b: b.keys() >= expected, max(0.0, deadline - time.monotonic())):
                fault.recovered_s = time.monotonic() - restored
        return fault

    def expected(self) -> set[tuple[str, int]]:
        self.runtime.produced()
        return {(self.runtime.device_id, seq) for seq in list(self.runtime.frames.queued.values())}

    def _offline_frames(self) -> int:
        return max(1, round(self.size.rate * self.size.outage_s))

    def _cut(self, fault: Fault) -> None:
        self.proxy.cut()

    def _blackhole(self, fault: Fault) -> None:
        before = self.proxy.connections
        self.proxy.blackhole()
        # The runtime gives up on the silent link and tries again: the proxy holds that attempt.
        if wait(lambda: self.proxy.connections > before, 1.5 * KEEPALIVE + 10):
            fault.noticed_s = time.monotonic() - fault.at
        self.proxy.passthrough()

    def _restart(self, fault: Fault) -> None:
        self.broker.stop()
        time.sleep(self.size.outage_s)
        self.broker.start()

    def _kill(self, fault: Fault) -> None:
        # Half the kills fall while the broker is stopped, half while it is unreachable.
        stopped = self.kills % 2 == 0
        self.kills += 1
        fault.outage = "broker stopped" if stopped else "broker unreachable"
        if stopped:
            self.broker.stop()
        else:
            self.proxy.refuse()
        begun = self.runtime.produced()
        wait(lambda: self.runtime.produced() >= begun + self._offline_frames(), self.size.outage_s + 30)
        self.runtime.kill()
        frames = self.runtime.frames
        frames.poll()
        fault.queued_offline = len(frames.queued) - begun
        fault.unconfirmed = len(frames.claimed) - len(frames.queued) - self.unconfirmed
        self.unconfirmed += fault.unconfirmed
        self.runtime.start()
        # The next life is up and producing, still offline, before the broker comes back.
        again = self.runtime.produced()
        wait(lambda: self.runtime.produced() > again, 30)
        if stopped:
            self.broker.start()
        else:
            self.proxy.passthrough()


def combined_gate(broker, folder: Path, size: CombinedSize, *, device_id: str = "cam-c") -> Section:
    """Run the scenario against a started ``support.broker.Mosquitto`` and return its report section."""
    proxy = FaultProxy(broker.port)
    backend = Subscriber(broker.port, f"edge/{device_id}/detections", client_id=f"backend-{device_id}", durable=True)
    runtime = Runtime(folder, proxy.url, device_id=device_id, rate=size.rate)
    faults: list[Fault] = []
    figures: dict = {}
    try:
        runtime.start()
        begun = time.monotonic()
        plan = size.plan()
        runner = Faults(broker, proxy, runtime, backend, size)
        for i, kind in enumerate(plan):
            target = (i + 1) * size.events // (len(plan) + 1)
            wait(lambda: runtime.produced() >= target, 30 + target / size.rate)
            faults.append(runner.run(kind))
        wait(lambda: runtime.produced() >= size.events, 30 + size.events / size.rate)
        figures["exit_code"] = runtime.stop(90)
        expected = runner.expected()
        backend.wait_for(lambda b: b.keys() >= expected, RECOVERY_S)
        time.sleep(1.0)  # a late resend would be a duplicate: give it the time to show
        figures["duration_s"] = time.monotonic() - begun
        figures["begun"] = begun
        figures["connections"] = proxy.connections
    finally:
        runtime.close()
        backend.close()
        proxy.close()
    exit_stats = folder / EXIT_STATS
    figures["exit_stats"] = json.loads(exit_stats.read_text()) if exit_stats.exists() else {}
    if (folder / OUTBOX).exists():
        with sqlite3.connect(folder / OUTBOX) as db:
            figures["outbox_rows"] = db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
    figures["lives"] = len(runtime.lives)
    section = _section(size, runtime, backend, faults, figures)
    if not section.ok:
        print(runtime.logs()[-20000:])
    return section


def _section(size: CombinedSize, runtime: Runtime, backend: Subscriber, faults: list[Fault], f: dict) -> Section:
    device_id, frames = runtime.device_id, runtime.frames
    frames.poll()
    produced = {(device_id, seq): frame for frame, seq in frames.queued.items()}
    received = {(body["device_id"], body["seq"]): body.get("frame") for body in backend.bodies()}
    lost = sorted(set(produced) - set(received))
    extra = {key: frame for key, frame in received.items() if key not in produced}
    duplicates, altered = backend.duplicates, backend.altered()
    n = len(produced)
    # The event id a backend sees must be the one the runtime queued under that seq, and no frame
    # may arrive under two seqs (a resend re-enveloped as a new message).
    wrong_frame = [key for key, frame in received.items() if key in produced and produced[key] != frame]
    per_frame = collections.Counter(received.values())
    twice = sorted(frame for frame, count in per_frame.items() if count > 1)
    planned = collections.Counter(size.plan())
    ran = collections.Counter(fault.kind for fault in faults)
    kills = [fault for fault in faults if fault.kind == KILL]
    blackholes = [fault for fault in faults if fault.kind == BLACKHOLE]
    recovered = [fault.recovered_s for fault in faults]
    exit_stats = f.get("exit_stats", {})
    checks = [
        Check("every planned fault ran, in the seeded order", [x.kind for x in faults] == size.plan(),
              ", ".join(f"{ran[k]}/{planned[k]} {k}" for k in (CUT, BLACKHOLE, RESTART, KILL))),
        Check("each blackhole was noticed and the runtime tried again",
              all(fault.noticed_s is not None for fault in blackholes),
              ", ".join(f"{fault.noticed_s:.1f} s" if fault.noticed_s is not None else "never" for fault in blackholes) or "none"),
        Check("each SIGKILL fell in a broker outage after the killed life had queued detections it could not send",
              all((fault.queued_offline or 0) >= 1 for fault in kills),
              ", ".join(f"{fault.queued_offline} queued ({fault.outage})" for fault in kills) or "none"),
        Check(f"each fault's backlog was delivered within {RECOVERY_S:g} s of the restore, before the next fault",
              all(r <= RECOVERY_S for r in recovered), f"worst {max(recovered, default=0.0):.2f} s"),
        Check(f"≥ {size.events} detections accepted into the outbox", n >= size.events, f"{n} over {f.get('lives')} runtime lives"),
        Check("0 lost: every accepted detection delivered", n > 0 and not lost,
              f"{n - len(lost)} of {n} delivered" + (f"; lost seqs {[seq for _, seq in lost[:20]]}" if lost else "")),
        Check(f"duplicates ≤ {DUPLICATES_PERCENT:g} % of the detections", duplicates * 100 <= DUPLICATES_PERCENT * n,
              f"{duplicates} ({100 * duplicates / max(n, 1):.2f} %)"),
        Check("every duplicate is a byte-identical resend carrying the same event id",
              not altered and not wrong_frame and not twice,
              f"altered {altered[:10]}, wrong frame {wrong_frame[:10]}, frames under two seqs {twice[:10]}"),
        Check("nothing unexpected: only frames a killed life claimed but had not confirmed, at most one per kill",
              all(frame in frames.claimed for frame in extra.values()) and len(extra) <= len(kills),
              f"{len(extra)} delivered unconfirmed: frames {sorted(extra.values())[:10]}"),
        Check("the last life drained its outbox and exited 0",
              f.get("exit_code") == 0 and exit_stats.get("drained") is True and f.get("outbox_rows") == 0,
              f"exit code {f.get('exit_code')}, drained {exit_stats.get('drained')}, rows left {f.get('outbox_rows')}"),
    ]
    begun = f.get("begun", 0.0)
    rows = [[i, fault.kind, fault.at - begun, fault.produced, fault.held_s, fault.noticed_s, fault.outage or None,
             fault.queued_offline, fault.unconfirmed, fault.recovered_s] for i, fault in enumerate(faults)]
    return Section(
        title="D. Combined faults: cuts, blackholes, broker restarts, runtime kills",
        gate=f"0 of {size.events:,} QoS 1 detections lost across {size.cuts} network cuts, {size.blackholes} blackholes, "
             f"{size.restarts} graceful broker restarts and {size.kills} SIGKILLs of the runtime during broker outages; "
             f"duplicates ≤ {DUPLICATES_PERCENT:g} %, all carrying the same event id",
        sizes=f"{size}; one runtime process (tests/support/reliability/combined_runtime.py: the real Publisher, keep-alive {KEEPALIVE} s, "
              f"reconnect {RECONNECT_MIN_S:g}–{RECONNECT_MAX_S:g} s) through the fault proxy to Mosquitto with persistence; "
              "a durable backend subscriber on the broker",
        checks=checks,
        tables=[
            (["detections", "delivered", "lost", "duplicates", "duplicates %", "delivered unconfirmed", "runtime lives",
              "connections", "run s"],
             [[n, n - len(lost), len(lost), duplicates, 100 * duplicates / max(n, 1), len(extra), f.get("lives"),
               f.get("connections"), f.get("duration_s")]]),
            (["#", "fault", "at s", "detections before", "held s", "blackhole noticed s", "kill during",
              "queued offline", "claimed unconfirmed", "recovered s"], rows),
        ],
        notes=[f"Last life's publisher counters: `{exit_stats}`."] if exit_stats else [],
        plots=[_delivery_plot(frames.times, backend.arrivals, faults, begun)],
    )


def _delivery_plot(confirmed: list[float], arrivals: list[float], faults: list[Fault], begun: float) -> Plot:
    def cumulative(times: list[float]) -> tuple[list[float], list[float]]:
        return [t - begun for t in times], [float(i + 1) for i in range(len(times))]

    top = float(max(len(confirmed), len(arrivals), 1))
    series = [Series("accepted", *cumulative(confirmed)), Series("delivered (unique)", *cumulative(sorted(arrivals)))]
    # A fault is a spike from the baseline, one series per group so the legend names them; the report
    # draws five colours, so the two network faults share one (the fault table tells them apart).
    for label, kinds in (("cut / blackhole", {CUT, BLACKHOLE}), (RESTART, {RESTART}), (KILL, {KILL})):
        at = [fault.at - begun for fault in faults if fault.kind in kinds]
        if at:
            series.append(Series(label, [x for t in at for x in (t, t, t)], [y for _ in at for y in (0.0, top, 0.0)]))
    return Plot("combined-delivery", "Combined faults: detections accepted and delivered", "seconds", "detections", series)
