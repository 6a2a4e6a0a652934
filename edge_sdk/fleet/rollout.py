"""Staged rollouts: a signed bundle pushed ring by ring, each ring watched through its probation.

A ring starts only when the one before succeeded within the failure threshold. A device succeeds
when it answered its ``cmd/model`` with ok and its retained info then shows the new model with the
update ``accepted`` (through its probation frames); it fails when it refuses, rolls back by itself,
or does neither within the timeout. When a ring's failures pass the threshold the rollout aborts:
no device outside the rings started is touched, and every device of those rings that took the
update is told to roll back (``cmd/rollback``).

The rollout's state is a JSON file, written atomically after every change, so a rollout whose
process was killed is resumed by running the same command again.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import queue
import re
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path

from edge_sdk.errors import ConfigError, RolloutError, UpdateError
from edge_sdk.fleet.devices import FleetWatch

STATE_SCHEMA = "edge-sdk/rollout-state@1"
RESUME_GRACE_S = 15.0  # a device pushed by a killed run gets this long to show the update before it is pushed again


class DeviceStage(str, Enum):
    """Where one device of a rollout stands."""

    PENDING = "pending"  # in a ring, not pushed yet
    PUSHED = "pushed"  # the bundle was sent; no answer yet
    PROBATION = "probation"  # it installed the bundle and runs it on probation
    SUCCEEDED = "succeeded"  # it runs the bundle, through its probation
    FAILED = "failed"  # it refused, rolled back by itself, or timed out
    ROLLED_BACK = "rolled-back"  # it took the bundle and was told to roll back when the rollout aborted
    NOT_STARTED = "not-started"  # its ring never started (the rollout aborted before)


TERMINAL = frozenset({DeviceStage.SUCCEEDED, DeviceStage.FAILED, DeviceStage.ROLLED_BACK, DeviceStage.NOT_STARTED})


class RolloutStatus(str, Enum):
    RUNNING = "running"
    ABORTING = "aborting"  # rolling back the devices that took the bundle
    ABORTED = "aborted"
    COMPLETE = "complete"


# -- input -----------------------------------------------------------------------------------------

_PERCENT = re.compile(r"^(\d+(?:\.\d+)?)%$")


def parse_stages(text: str) -> tuple[float, ...]:
    """``"5%,25%,100%"`` -> (5.0, 25.0, 100.0): percentages of the devices reached by the end of each ring."""
    stages = []
    for item in text.split(","):
        match = _PERCENT.match(item.strip())
        if match is None:
            raise ConfigError(f"--stages {text!r}: each stage is a percentage such as 25%, not {item.strip()!r}")
        value = float(match.group(1))
        if not 0 < value <= 100:
            raise ConfigError(f"--stages {text!r}: {item.strip()} is not within 0% (excluded) and 100%")
        if stages and value <= stages[-1]:
            raise ConfigError(f"--stages {text!r}: stages must increase ({item.strip()} follows {stages[-1]:g}%)")
        stages.append(value)
    return tuple(stages)


def parse_max_failed(text: str) -> float:
    """``"20%"`` -> 0.2: the share of a ring that may fail without aborting the rollout."""
    match = _PERCENT.match(text.strip())
    value = float(match.group(1)) if match else None
    if value is None or value > 100:
        raise ConfigError(f"--max-failed {text!r} must be a percentage from 0% to 100%, such as 20%")
    return value / 100


def plan_rings(devices: list[str], stages: tuple[float, ...]) -> list[list[str]]:
    """The devices, in order, cut into rings reaching ``stages`` percent of them cumulatively; the
    first ring has at least one device, and a stage that adds no device adds no ring."""
    rings: list[list[str]] = []
    done = 0
    for stage in stages:
        reach = min(len(devices), max(1, math.ceil(len(devices) * stage / 100 - 1e-9)))
        if reach > done:
            rings.append(devices[done:reach])
            done = reach
    return rings


def ring_failed(failed: int, size: int, max_failed: float) -> bool:
    """Whether ``failed`` devices out of ``size`` pass the threshold."""
    return size > 0 and failed / size > max_failed + 1e-12


def select_devices(known: dict, *, devices: list[str] | None = None, pattern: str | None = None) -> list[str]:
    """The rollout's devices among those the broker has seen: a list (in its order, canaries first)
    or an fnmatch pattern (sorted by id)."""
    if pattern is not None:
        chosen = sorted(d for d in known if fnmatch.fnmatchcase(d, pattern))
        if not chosen:
            raise RolloutError(f"no device the broker has seen matches {pattern!r} (seen: {_few(known)})")
        return chosen
    listed = list(dict.fromkeys(d.strip() for d in devices or [] if d.strip()))
    if not listed:
        raise RolloutError("the device list is empty")
    unknown = [d for d in listed if d not in known]
    if len(unknown) == len(listed):
        raise RolloutError(f"the device list names no device the broker has seen (seen: {_few(known)})")
    if unknown:
        raise RolloutError(f"the broker has never seen {', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}: "
                           "fix the device list")
    return listed


def _few(known) -> str:
    names = sorted(known)
    return ", ".join(names[:8]) + (" ..." if len(names) > 8 else "") if names else "none"


# -- state -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BundleFacts:
    """What identifies the bundle being rolled out (read and verified locally before any device is touched)."""

    path: str
    name: str
    manifest_sha256: str
    model_sha256: str
    version: int
    key_id: str


@dataclass(frozen=True)
class DeviceRecord:
    """One device of a rollout."""

    device: str
    ring: int  # 1-based
    state: DeviceStage = DeviceStage.PENDING
    reason: str | None = None
    old_sha256: str | None = None
    new_sha256: str | None = None
    pushes: int = 0
    pushed_at: float | None = None
    rollback_checked: bool = False  # an aborted rollout asked it to roll back and it answered
    updated_at: float | None = None

    def to_json(self) -> dict:
        return {"device": self.device, "ring": self.ring, "state": self.state.value, "reason": self.reason,
                "old_sha256": self.old_sha256, "new_sha256": self.new_sha256, "pushes": self.pushes,
                "pushed_at": self.pushed_at, "rollback_checked": self.rollback_checked, "updated_at": self.updated_at}

    @classmethod
    def from_json(cls, data: dict) -> DeviceRecord:
        return cls(**{**data, "state": DeviceStage(data["state"])})


@dataclass
class RolloutState:
    """A rollout as persisted: its inputs, its rings, and every device's state."""

    bundle: BundleFacts
    targets: dict  # {"devices": [...]} or {"pattern": "..."}: how the devices were chosen
    broker: str  # redacted: never a password
    root: str
    stages: tuple[float, ...]
    max_failed: float
    timeout: float
    rings: list[list[str]]
    devices: dict[str, DeviceRecord]
    status: RolloutStatus = RolloutStatus.RUNNING
    ring: int = 0  # the ring under way (0-based)
    reason: str | None = None  # why it aborted
    started_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

    @classmethod
    def new(cls, bundle: BundleFacts, devices: list[str], *, targets: dict, broker: str, root: str,
            stages: tuple[float, ...], max_failed: float, timeout: float) -> RolloutState:
        rings = plan_rings(devices, stages)
        records = {d: DeviceRecord(d, index + 1) for index, ring in enumerate(rings) for d in ring}
        return cls(bundle, targets, broker, root, stages, max_failed, timeout, rings, records)

    def set(self, device: str, **changes) -> DeviceRecord:
        record = replace(self.devices[device], **changes, updated_at=round(time.time(), 3))
        self.devices[device] = record
        return record

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for record in self.devices.values():
            counts[record.state.value] = counts.get(record.state.value, 0) + 1
        return counts

    def to_json(self) -> dict:
        return {
            "schema": STATE_SCHEMA, "bundle": self.bundle.__dict__, "targets": self.targets, "broker": self.broker,
            "root": self.root, "stages": list(self.stages), "max_failed": self.max_failed, "timeout": self.timeout,
            "status": self.status.value, "reason": self.reason, "ring": self.ring, "rings": self.rings,
            "started_at": self.started_at, "updated_at": self.updated_at,
            "devices": [self.devices[d].to_json() for ring in self.rings for d in ring],
        }

    @classmethod
    def from_json(cls, data: dict) -> RolloutState:
        records = {d["device"]: DeviceRecord.from_json(d) for d in data["devices"]}
        return cls(BundleFacts(**data["bundle"]), data["targets"], data["broker"], data["root"], tuple(data["stages"]),
                   data["max_failed"], data["timeout"], [list(r) for r in data["rings"]], records,
                   RolloutStatus(data["status"]), data["ring"], data.get("reason"), data["started_at"], data["updated_at"])

    def save(self, path: Path) -> None:
        """Write atomically: a temporary file in the same folder, fsync'd, then renamed over the old one."""
        self.updated_at = round(time.time(), 3)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        with open(temp, "w", encoding="utf-8") as handle:
            json.dump(self.to_json(), handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def load_state(path: Path) -> RolloutState | None:
    """The rollout persisted at ``path``; None when there is none; RolloutError when it is unreadable."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("schema") != STATE_SCHEMA:
            raise ValueError(f"schema {data.get('schema')!r}")
        return RolloutState.from_json(data)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RolloutError(f"rollout state {path} cannot be read ({exc}); move it aside to start over") from None


def state_dir() -> Path:
    """Where rollouts keep their state by default: $XDG_STATE_HOME/edge-sdk/rollouts (~/.local/state/...)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "edge-sdk" / "rollouts"


def default_state_path(bundle: BundleFacts) -> Path:
    return state_dir() / f"{bundle.manifest_sha256[:16]}.json"


def check_resumable(saved: RolloutState, fresh: RolloutState, path: Path) -> None:
    """RolloutError unless ``saved`` is the state of the very rollout ``fresh`` describes."""
    differences = [what for what, a, b in (
        ("bundle", saved.bundle.manifest_sha256, fresh.bundle.manifest_sha256),
        ("devices", saved.targets, fresh.targets),
        ("stages", list(saved.stages), list(fresh.stages)),
        ("--max-failed", saved.max_failed, fresh.max_failed),
    ) if a != b]
    if differences:
        raise RolloutError(f"rollout state {path} belongs to a rollout with other {', '.join(differences)}; "
                           "give another --state file to start a new one")


def bundle_facts(folder: Path, public_keys: list[Path]) -> BundleFacts:
    """Open and verify ``folder`` against the fleet's public keys, before any device is touched."""
    from edge_sdk.bundle import open_bundle
    from edge_sdk.ota.keys import SIGNATURE_NAME, load_public_keys, verify_bundle_signature

    folder = Path(folder)
    if not public_keys:
        raise ConfigError("--public-key is required: the fleet's update key(s), to verify the bundle before pushing it")
    bundle = open_bundle(folder)
    if not (folder / SIGNATURE_NAME).is_file():
        raise RolloutError(f"{folder} is not signed: run 'edge-sdk sign {folder} --key KEY' first")
    try:
        signature = verify_bundle_signature(folder, load_public_keys(public_keys))
    except UpdateError as exc:
        raise RolloutError(f"{folder}: {str(exc).replace('this device does not trust', 'is not among the --public-key keys')}") from None
    manifest = bundle.manifest
    model_sha = next((f.sha256 for f in manifest.files if f.path == manifest.model_file), None)
    return BundleFacts(str(folder.resolve()), manifest.name, signature.manifest_sha256, model_sha or "", signature.version,
                       signature.key_id)


# -- running ---------------------------------------------------------------------------------------

class Rollout:
    """Runs (or resumes) the rollout ``state`` over one MQTT connection, saving it to ``path`` after
    every change. ``notify`` gets one line per event for a person."""

    def __init__(self, state: RolloutState, *, folder: Path, settings, path: Path,
                 notify: Callable[[str], None] | None = None) -> None:
        self.state, self.folder, self.settings, self.path = state, Path(folder), settings, Path(path)
        self.notify = notify or (lambda line: None)
        self.watch = FleetWatch(state.root)
        self._inbox: queue.Queue = queue.Queue()
        self._token = uuid.uuid4().hex[:12]
        self._answers: dict[tuple[str, str], dict] = {}  # (device, command) -> its answer to this run's request
        self._deadlines: dict[str, float] = {}
        self._grace: dict[str, float] = {}  # devices pushed by a killed run: when to push them again
        self._archive: bytes | None = None
        self._client = None

    # -- MQTT ---------------------------------------------------------------------------------

    def _topic(self, device: str, name: str) -> str:
        return f"{self.state.root}/{device}/{name}"

    def _connect(self) -> None:
        import threading

        from edge_sdk.mqtt.push import connect

        client = connect(self.settings, client_id=f"edge-sdk-rollout-{self._token}")
        subscribed = threading.Event()
        client.on_message = lambda c, u, m: self._inbox.put((m.topic, bytes(m.payload), getattr(m.properties, "CorrelationData", None)))
        client.on_subscribe = lambda *a: subscribed.set()
        filters = self.watch.subscriptions() + [f"{self.state.root}/+/cmd/+/result/{self._token}"]
        client.subscribe([(f, 1) for f in filters])
        # paho reconnects by itself, but on a fresh session: subscribe again, or the answers and
        # info of a broker restart's other side never arrive and every device times out.
        client.on_connect = lambda c, u, flags, reason, props: None if reason.is_failure else c.subscribe([(f, 1) for f in filters])
        self._client = client
        if not subscribed.wait(10):
            raise RolloutError(f"broker {self.settings.redacted_broker()} did not confirm the rollout's subscriptions")

    def _drain(self, timeout: float) -> None:
        """Take every message waiting (at least one wait of ``timeout``)."""
        try:
            item = self._inbox.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            topic, payload, correlation = item
            if topic.endswith(f"/result/{self._token}"):
                parts = topic.split("/")
                device, command = parts[-5], parts[-3]
                if correlation == f"{device}:{command}:{self._token}".encode():
                    try:
                        body = json.loads(payload)
                    except ValueError:
                        body = {"ok": False, "error": "the device's answer is not JSON"}
                    self._answers[(device, command)] = body if isinstance(body, dict) else {"ok": False, "error": "bad answer"}
            else:
                self.watch.feed(topic, payload)
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return

    def _send(self, device: str, command: str, payload: bytes) -> None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self._answers.pop((device, command), None)
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = self._topic(device, f"cmd/{command}/result/{self._token}")
        props.CorrelationData = f"{device}:{command}:{self._token}".encode()
        self._client.publish(self._topic(device, f"cmd/{command}"), payload, qos=1, properties=props)

    # -- the rollout --------------------------------------------------------------------------

    def run(self) -> RolloutState:
        state = self.state
        if state.status in (RolloutStatus.COMPLETE, RolloutStatus.ABORTED):
            return state
        self._connect()
        try:
            self._drain(0.5)  # the retained info and status of every device
            if state.status is RolloutStatus.ABORTING:
                self._abort(state.reason or "aborted")
                return state
            for index in range(state.ring, len(state.rings)):
                state.ring = index
                state.save(self.path)
                self.notify(f"ring {index + 1}/{len(state.rings)}: {', '.join(state.rings[index])}")
                why = self._run_ring(state.rings[index])
                if why is not None:
                    self._abort(why)
                    return state
            state.status = RolloutStatus.COMPLETE
            state.save(self.path)
            return state
        finally:
            self._client.loop_stop()
            self._client.disconnect()

    def _run_ring(self, ring: list[str]) -> str | None:
        """Push ``ring`` and watch it; the reason to abort, or None when it succeeded within the threshold."""
        state = self.state
        now = time.monotonic()
        for device in ring:
            record = state.devices[device]
            if record.state in (DeviceStage.PUSHED, DeviceStage.PROBATION):
                self._deadlines[device] = now + state.timeout  # a resumed run: the clock starts again
                if record.state is DeviceStage.PUSHED:
                    self._grace[device] = now + min(RESUME_GRACE_S, state.timeout)
        for device in ring:
            if state.devices[device].state is DeviceStage.PENDING:
                self._push(device)
        while True:
            self._drain(0.2)
            for device in ring:
                self._advance(device)
            failed = sum(state.devices[d].state is DeviceStage.FAILED for d in ring)
            if ring_failed(failed, len(ring), state.max_failed):
                return (f"ring {state.ring + 1}: {failed} of {len(ring)} devices failed, more than "
                        f"--max-failed {state.max_failed * 100:g}%")
            if all(state.devices[d].state in TERMINAL for d in ring):
                return None

    def _push(self, device: str) -> None:
        from edge_sdk.ota.archive import pack_bundle

        if self._archive is None:
            self._archive = pack_bundle(self.folder)
        record = self.state.devices[device]
        seen = self.watch.get(device)
        self.state.set(device, state=DeviceStage.PUSHED, reason=None, pushes=record.pushes + 1, pushed_at=round(time.time(), 3),
                       old_sha256=record.old_sha256 or (seen.sha256 if seen else None))
        self.state.save(self.path)  # before sending: a killed run knows the device may have it
        self._deadlines[device] = time.monotonic() + self.state.timeout
        self._grace.pop(device, None)
        self._send(device, "model", self._archive)
        self.notify(f"{device}: pushed version {self.state.bundle.version}")

    def _finish(self, device: str, stage: DeviceStage, reason: str | None = None, **changes) -> None:
        self.state.set(device, state=stage, reason=reason, **changes)
        self.state.save(self.path)
        self.notify(f"{device}: {stage.value}" + (f" ({reason})" if reason else ""))

    def _advance(self, device: str) -> None:
        """Move ``device`` on from what it answered and what its retained info says."""
        state, bundle = self.state, self.state.bundle
        record = state.devices[device]
        if record.state in TERMINAL or record.state is DeviceStage.PENDING:
            return
        seen = self.watch.get(device)
        update = (seen.update if seen is not None else None) or {}
        ours = update.get("version") == bundle.version and update.get("sha256") == bundle.model_sha256
        if record.state is DeviceStage.PUSHED:
            answer = self._answers.get((device, "model"))
            if answer is not None and not answer.get("ok"):
                self._finish(device, DeviceStage.FAILED, f"refused: {answer.get('error', 'no reason given')}")
                return
            if answer is not None or ours:
                self._finish(device, DeviceStage.PROBATION, None, new_sha256=bundle.model_sha256,
                             old_sha256=(answer or {}).get("old_sha256", record.old_sha256))
                record = state.devices[device]
            elif device in self._grace and time.monotonic() > self._grace[device]:
                self.notify(f"{device}: no sign of the push of the run that was stopped; pushing again")
                self._push(device)
                return
        if record.state is DeviceStage.PROBATION and ours:
            if update.get("state") == "accepted" and seen.sha256 == bundle.model_sha256:
                self._finish(device, DeviceStage.SUCCEEDED)
                return
            if update.get("state") == "rolled-back":
                self._finish(device, DeviceStage.FAILED, f"rolled back by itself: {update.get('detail') or 'no detail'}")
                return
        if time.monotonic() > self._deadlines.get(device, math.inf):
            if record.state is DeviceStage.PUSHED:
                status = seen.status if seen is not None and seen.status else "unknown"
                self._finish(device, DeviceStage.FAILED, f"no answer within {state.timeout:g} s (its status: {status})")
            else:
                self._finish(device, DeviceStage.FAILED, f"not through probation within {state.timeout:g} s")

    def _abort(self, reason: str) -> None:
        """Roll back every device of the started rings that was pushed; the other devices are not touched."""
        state = self.state
        state.status, state.reason = RolloutStatus.ABORTING, reason
        state.save(self.path)
        self.notify(f"aborting: {reason}")
        started = [d for ring in state.rings[: state.ring + 1] for d in ring]
        asked = [d for d in started if state.devices[d].pushes > 0 and not state.devices[d].rollback_checked]
        body = json.dumps({"sha256": state.bundle.model_sha256}).encode()
        for device in asked:
            self._send(device, "rollback", body)
        deadline = time.monotonic() + state.timeout
        waiting = set(asked)
        while waiting and time.monotonic() < deadline:
            self._drain(0.2)
            for device in sorted(waiting):
                answer = self._answers.get((device, "rollback"))
                if answer is None:
                    continue
                waiting.discard(device)
                record = state.devices[device]
                if not answer.get("ok"):
                    self._finish(device, record.state if record.state in TERMINAL else DeviceStage.FAILED,
                                 f"{record.reason or 'rollout aborted'}; rollback refused: {answer.get('error')}", rollback_checked=True)
                elif answer.get("rolled_back"):
                    self._finish(device, DeviceStage.ROLLED_BACK, f"rollout aborted; back on {str(answer.get('sha256'))[:12]}",
                                 rollback_checked=True)
                elif record.state is DeviceStage.FAILED:
                    self._finish(device, DeviceStage.FAILED, record.reason, rollback_checked=True)
                else:
                    self._finish(device, DeviceStage.ROLLED_BACK,
                                 f"rollout aborted; it no longer ran the update (runs {str(answer.get('sha256'))[:12]})",
                                 rollback_checked=True)
        for device in waiting:
            record = state.devices[device]
            self._finish(device, record.state, f"{record.reason or 'rollout aborted'}; no answer to the rollback within "
                                               f"{state.timeout:g} s")
        for device in state.devices:
            if state.devices[device].pushes == 0:
                self._finish(device, DeviceStage.NOT_STARTED, "rollout aborted before its ring" if device not in started else
                             "rollout aborted before it was pushed")
        state.status = RolloutStatus.ABORTED if not waiting else RolloutStatus.ABORTING
        state.save(self.path)


def rollout_states(folder: Path | None = None) -> dict[str, tuple[RolloutState, DeviceRecord]]:
    """Each device's newest rollout in the state folder: device -> (rollout, its record there)."""
    folder = folder or state_dir()
    newest: dict[str, tuple[RolloutState, DeviceRecord]] = {}
    for path in sorted(Path(folder).glob("*.json")) if Path(folder).is_dir() else []:
        try:
            state = load_state(path)
        except RolloutError:
            continue
        for device, record in state.devices.items():
            if device not in newest or newest[device][0].updated_at < state.updated_at:
                newest[device] = (state, record)
    return newest
