"""Staged rollouts: ring planning, thresholds, the state file, bad input through the CLI, and a real
fleet of ``edge-sdk run`` processes on a real Mosquitto that aborts one rollout and finishes another
after its process was killed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
import yaml
from support import child_env, free_port, single_error_line, wait
from support.subscriber import Subscriber

from edge_sdk.cli import main
from edge_sdk.errors import ConfigError, RolloutError
from edge_sdk.fleet import rollout as plan
from edge_sdk.fleet.devices import FleetWatch

SECRET = "hunter2-rollout-secret"


# -- planning ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("stages, count, rings", [
    ("5%,25%,100%", 20, [1, 4, 15]),
    ("5%,25%,100%", 5, [1, 1, 3]),  # 5% of 5 is still one device: the first ring is never empty
    ("20%,60%,100%", 5, [1, 2, 2]),
    ("50%,100%", 1, [1]),  # a stage that adds no device adds no ring
    ("10%,50%", 10, [1, 4]),  # a partial rollout stops at its last stage
    ("33.3%,100%", 3, [1, 2]),
])
def test_rings_reach_each_stage_cumulatively_in_the_order_given(stages, count, rings):
    devices = [f"d{i:02d}" for i in range(count)][::-1]  # an order that is not sorted
    planned = plan.plan_rings(devices, plan.parse_stages(stages))
    assert [len(r) for r in planned] == rings
    assert [d for ring in planned for d in ring] == devices[: sum(rings)]


@pytest.mark.parametrize("text, error", [
    ("25%,5%,100%", "must increase"),
    ("5%,5%", "must increase"),
    ("5%,150%", "not within"),
    ("0%,100%", "not within"),
    ("5,25,100", "percentage"),
    ("5%,,100%", "percentage"),
    ("abc", "percentage"),
    ("-5%,100%", "percentage"),
])
def test_bad_stages_are_refused_with_the_reason(text, error):
    with pytest.raises(ConfigError, match=error):
        plan.parse_stages(text)


@pytest.mark.parametrize("text, value", [("20%", 0.2), ("0%", 0.0), ("100%", 1.0), ("12.5%", 0.125)])
def test_max_failed_is_a_percentage(text, value):
    assert plan.parse_max_failed(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["20", "0.2", "120%", "-1%", "%", "twenty"])
def test_a_malformed_max_failed_is_refused(text):
    with pytest.raises(ConfigError, match="--max-failed"):
        plan.parse_max_failed(text)


@pytest.mark.parametrize("failed, size, limit, aborts", [
    (0, 1, 0.0, False), (1, 1, 0.2, True), (1, 5, 0.2, False), (2, 5, 0.2, True), (1, 2, 0.5, False),
    (2, 2, 0.5, True), (3, 10, 0.3, False), (1, 4, 0.25, False),
])
def test_a_ring_fails_when_its_failures_pass_the_threshold(failed, size, limit, aborts):
    assert plan.ring_failed(failed, size, limit) is aborts


def test_devices_come_from_a_list_in_its_order_or_a_pattern_sorted_and_unknown_ones_are_refused():
    known = {"cam-b": None, "cam-a": None, "door-1": None}
    assert plan.select_devices(known, devices=["door-1", "cam-b"]) == ["door-1", "cam-b"]
    assert plan.select_devices(known, pattern="cam-*") == ["cam-a", "cam-b"]
    with pytest.raises(RolloutError, match="names no device the broker has seen"):
        plan.select_devices(known, devices=["nope", "other"])
    with pytest.raises(RolloutError, match="never seen nope"):
        plan.select_devices(known, devices=["cam-a", "nope"])
    with pytest.raises(RolloutError, match="matches"):
        plan.select_devices(known, pattern="yard-*")


def test_the_fleet_watch_keeps_each_devices_newest_info_and_status():
    watch = FleetWatch("edge")
    info = {"ts": 10.0, "model": {"name": "m", "sha256": "a" * 64, "version": 3},
            "update": {"state": "accepted", "version": 3, "sha256": "a" * 64, "detail": None, "ts": 9.0}}
    assert watch.feed("edge/cam-1/info", json.dumps(info).encode()) == "cam-1"
    assert watch.feed("edge/cam-1/status", json.dumps({"state": "online", "ts": 12.0}).encode()) == "cam-1"
    assert watch.feed("edge/cam-1/main/detections", b"{}") is None
    assert watch.feed("other/cam-1/info", b"{}") is None
    assert watch.feed("edge/cam-2/info", b"not json") is None
    seen = watch.get("cam-1")
    assert (seen.status, seen.sha256, seen.version, seen.update["state"], seen.last_seen) == ("online", "a" * 64, 3, "accepted", 12.0)
    assert list(watch.devices()) == ["cam-1"]


def _facts(version=4) -> plan.BundleFacts:
    return plan.BundleFacts("/b", "digits", f"{version:x}" * 64, "e" * 64, version, "k" * 16)


def test_the_state_file_round_trips_and_is_replaced_atomically(tmp_path):
    state = plan.RolloutState.new(_facts(), ["a", "b", "c", "d"], targets={"devices": ["a", "b", "c", "d"]},
                                  broker="mqtt://backend:***@host:1883", root="edge", stages=(25.0, 100.0), max_failed=0.2, timeout=60)
    state.set("a", state=plan.DeviceStage.SUCCEEDED, pushes=1, old_sha256="0" * 64, new_sha256="e" * 64)
    state.set("b", state=plan.DeviceStage.FAILED, reason="refused: no", pushes=1)
    path = tmp_path / "rollouts" / "r.json"
    state.save(path)
    first = os.stat(path).st_ino
    state.save(path)
    assert os.stat(path).st_ino != first  # a new file renamed over the old, never rewritten in place
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # no temporary file left
    again = plan.load_state(path)
    assert again.to_json() == state.to_json()
    assert again.rings == [["a"], ["b", "c", "d"]] and again.devices["b"].reason == "refused: no"
    other = plan.RolloutState.new(_facts(5), ["a"], targets={"devices": ["a"]}, broker="", root="edge", stages=(100.0,),
                                  max_failed=0.2, timeout=60)
    with pytest.raises(RolloutError, match="other bundle, devices, stages"):
        plan.check_resumable(again, other, path)
    path.write_text("{not json")
    with pytest.raises(RolloutError, match="cannot be read"):
        plan.load_state(path)


# -- bad input through the CLI ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def fleet_bundles(digits, tmp_path_factory):
    """v1: the untrained digits CNN as rpi4 runs it; v2: the same network built for x86-cpu (another
    model file, so another sha256); a fleet key pair and a foreign one."""
    from support.digits import build_cnn

    from edge_sdk.converters import _tf, convert
    from edge_sdk.ota.keys import generate_keypair

    folder = tmp_path_factory.mktemp("rollout-bundles")
    keras = _tf.keras3()
    keras.utils.set_random_seed(0)
    inp, out = build_cnn(keras.layers)
    keras.Model(inp, out).save(folder / "digits.keras")
    convert(folder / "digits.keras", profile="rpi4", out=folder / "v1", calib=digits["calib"], compile=False)
    convert(folder / "digits.keras", profile="x86-cpu", out=folder / "v2", calib=digits["calib"], compile=False)
    generate_keypair(folder / "fleet.key", folder / "fleet.pub")
    generate_keypair(folder / "rogue.key", folder / "rogue.pub")
    return folder


def _signed(fleet_bundles, name: str, version: int, *, key: str = "fleet", decoder: str | None = None,
            base: str = "v2") -> Path:
    from edge_sdk.ota.keys import sign_bundle

    folder = fleet_bundles / name
    if folder.exists():
        return folder
    shutil.copytree(fleet_bundles / base, folder)
    if decoder is not None:
        manifest = json.loads((folder / "edge-bundle.json").read_text())
        manifest["decoder"] = {"kind": decoder, "options": {}}
        (folder / "edge-bundle.json").write_text(json.dumps(manifest))
    if key is not None:
        sign_bundle(folder, fleet_bundles / f"{key}.key", version=version)
    return folder


def _rollout_args(bundle, broker_url, fleet_bundles, *extra) -> list[str]:
    return ["rollout", str(bundle), "--broker", broker_url, "--public-key", str(fleet_bundles / "fleet.pub"), *extra]


def test_bad_rollout_input_is_one_line_and_exit_2_before_any_device_is_touched(fleet_bundles, mosquitto, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    good = _signed(fleet_bundles, "good", 7)
    unsigned = _signed(fleet_bundles, "unsigned", 7, key=None)
    foreign = _signed(fleet_bundles, "foreign", 7, key="rogue")
    url = f"mqtt://backend:{SECRET}@127.0.0.1:{mosquitto.port}"
    watcher = Subscriber(mosquitto.port, "edge/#")
    cases = [
        (_rollout_args(unsigned, url, fleet_bundles, "--devices", "cam-1"), "is not signed"),
        (_rollout_args(foreign, url, fleet_bundles, "--devices", "cam-1"), "not among the --public-key keys"),
        (_rollout_args(good, url, fleet_bundles, "--devices", "cam-1", "--stages", "50%,25%"), "stages must increase"),
        (_rollout_args(good, url, fleet_bundles, "--devices", "cam-1", "--stages", "5%,150%"), "not within"),
        (_rollout_args(good, url, fleet_bundles, "--devices", "cam-1", "--stages", "five"), "percentage"),
        (_rollout_args(good, url, fleet_bundles, "--devices", "cam-1", "--max-failed", "0.2"), "--max-failed"),
        (_rollout_args(good, url, fleet_bundles, "--devices", "cam-1", "--match", "cam-*"), "exactly one of"),
        (_rollout_args(good, url, fleet_bundles, "--devices", " , "), "device list is empty"),
        (_rollout_args(good, url, fleet_bundles, "--devices", "cam-1,cam-2"), "names no device the broker has seen"),
        (_rollout_args(good, url, fleet_bundles, "--match", "cam-*"), "no device the broker has seen matches"),
        (_rollout_args(good, f"mqtt://backend:{SECRET}@127.0.0.1:{free_port()}", fleet_bundles, "--devices", "cam-1"),
         "cannot reach broker"),
        (["rollout", str(good), "--broker", url, "--devices", "cam-1"], "--public-key"),
    ]
    other = tmp_path / "other-rollout.json"
    plan.RolloutState.new(_facts(), ["cam-1"], targets={"devices": ["cam-1"]}, broker="", root="edge", stages=(100.0,),
                          max_failed=0.2, timeout=60).save(other)
    cases.append((_rollout_args(good, url, fleet_bundles, "--devices", "cam-1", "--state", str(other)),
                  "belongs to a rollout with other bundle"))
    (tmp_path / "password").write_text(SECRET + "\n")
    cases.append((_rollout_args(good, f"mqtt://backend@127.0.0.1:{free_port()}", fleet_bundles, "--devices", "cam-1",
                                "--password-file", str(tmp_path / "password")), "cannot reach broker"))
    (tmp_path / "devices.txt").write_text("# canaries first\ncam-7\n\ncam-8  # the yard\n")
    cases.append((_rollout_args(good, url, fleet_bundles, "--devices-file", str(tmp_path / "devices.txt")),
                  "names no device the broker has seen"))
    cases.append((_rollout_args(good, url, fleet_bundles, "--devices-file", str(tmp_path / "missing.txt")), "cannot be read"))
    for args, error in cases:
        assert main(args) == 2, args
        line = single_error_line(capsys)
        assert error in line, (args, line)
        assert SECRET not in line
    monkeypatch.setenv("EDGE_SDK_MQTT_PASSWORD", SECRET)
    assert main(_rollout_args(good, f"mqtt://backend@127.0.0.1:{free_port()}", fleet_bundles, "--devices", "cam-1")) == 2
    assert SECRET not in single_error_line(capsys)
    assert not any(m.topic.split("/")[2:3] == ["cmd"] for m in watcher.messages)  # no command was sent to anyone
    watcher.close()
    assert not (tmp_path / "state").exists() or not list((tmp_path / "state").rglob("*.json"))


# -- a real fleet -----------------------------------------------------------------------------------

def _video(path: Path, digits: dict, size: tuple[int, int]) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, size)
    for i in range(30):
        writer.write(cv2.resize(digits["images"][digits["val_idx"][i]], size, interpolation=cv2.INTER_NEAREST))
    writer.release()
    return path


class Fleet:
    """``edge-sdk run`` devices in their own processes, each with its config file, outbox and bundle store."""

    def __init__(self, bundle: Path, broker, folder: Path, videos: dict[str, Path], public_key: Path) -> None:
        self.folder, self.processes = folder, {}
        for device, video in videos.items():
            home = folder / device
            home.mkdir(parents=True)
            config = {"source": str(video), "loop": True, "fps": 10, "threshold": 0.0,
                      "mqtt": {"broker": broker.url, "device_id": device, "update_keys": [str(public_key)],
                               "bundle_store": str(home / "store"), "outbox": {"path": str(home / "outbox.sqlite3")},
                               "reconnect_min_s": 0.1, "reconnect_max_s": 0.5}}
            (home / "run.yaml").write_text(yaml.safe_dump(config))
            with open(home / "device.log", "wb") as log:
                self.processes[device] = subprocess.Popen(
                    [sys.executable, "-m", "edge_sdk.cli", "run", str(bundle), "--config", str(home / "run.yaml")],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=child_env(),
                )

    def store(self, device: str):
        from edge_sdk.ota.store import BundleStore

        return BundleStore(self.folder / device / "store")

    def log(self, device: str) -> str:
        return (self.folder / device / "device.log").read_text(errors="replace")[-3000:]

    def close(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in self.processes.values():
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _model_sha(folder: Path) -> str:
    from edge_sdk.bundle import open_bundle

    manifest = open_bundle(folder).manifest
    return next(f.sha256 for f in manifest.files if f.path == manifest.model_file)


def _signed_version(archive: bytes) -> int:
    """The signed version of a bundle archive as a device received it."""
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("edge-bundle.sig"))
        return json.loads(tar.extractfile(member).read())["version"]


def _retained_info(port: int, devices: list[str]) -> dict[str, dict]:
    """Each device's retained info as a newcomer reads it now."""
    late = Subscriber(port, "edge/+/info")
    try:
        wait(lambda: {p["device_id"] for p in late.payloads("/info")} >= set(devices), 10, what="every retained info")
        return {p["device_id"]: p for p in late.payloads("/info")}
    finally:
        late.close()


def test_a_rollout_aborts_on_real_probation_failures_and_a_killed_rollout_resumes_to_100_percent(
    fleet_bundles, digits, mosquitto, tmp_path, capsys, monkeypatch,
):
    import jsonschema

    from edge_sdk.mqtt import payloads

    started = time.monotonic()
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    v1 = fleet_bundles / "v1"
    bad = _signed(fleet_bundles, "picky-v2", 2, decoder="plugin:support.decoders.picky:decode")
    healthy = _signed(fleet_bundles, "healthy-v3", 3)
    old_sha, new_sha = _model_sha(v1), _model_sha(healthy)
    assert old_sha != new_sha == _model_sha(bad)
    narrow = _video(tmp_path / "narrow.avi", digits, (240, 180))
    wide = _video(tmp_path / "wide.avi", digits, (400, 180))  # the picky decoder fails on these devices' frames
    devices = ["cam-1", "cam-2", "cam-3", "cam-4", "cam-5"]
    wide_devices = {"cam-3", "cam-5"}  # 40 %
    pushes = Subscriber(mosquitto.port, "edge/+/cmd/model")
    infos = Subscriber(mosquitto.port, "edge/+/info")
    answers = Subscriber(mosquitto.port, "edge/+/cmd/+/result/#")
    fleet = Fleet(v1, mosquitto, tmp_path / "fleet", {d: wide if d in wide_devices else narrow for d in devices},
                  fleet_bundles / "fleet.pub")
    url = f"mqtt://backend:{SECRET}@127.0.0.1:{mosquitto.port}"
    try:
        # Every device up and inferring (a trial needs a live frame): its info, then a second of frames.
        wait(lambda: {p["device_id"] for p in infos.payloads("/info")} >= set(devices), 90, step=0.2, what="every device's info")
        time.sleep(2.0)
        boot_s = time.monotonic() - started

        # 1. The picky bundle: ring 1 (cam-1) accepts it, ring 2 (cam-2, cam-3) has cam-3 failing its
        # probation: 1 of 2 > 20 %, abort; ring 3 (cam-4, cam-5) is never touched.
        state1 = tmp_path / "picky.json"
        args = _rollout_args(bad, url, fleet_bundles, "--devices", ",".join(devices), "--stages", "20%,60%,100%",
                             "--max-failed", "20%", "--timeout", "60", "--state", str(state1))
        t0 = time.monotonic()
        assert main(args + ["--json"]) == 1, [fleet.log(d) for d in devices]
        abort_s = time.monotonic() - t0
        captured = capsys.readouterr()
        report = json.loads(captured.out)
        assert SECRET not in captured.out + captured.err + state1.read_text()
        states = {d["device"]: (d["state"], d["reason"]) for d in report["devices"]}
        assert report["status"] == "aborted" and report["reason"].startswith("ring 2: 1 of 2 devices failed"), report
        assert states["cam-1"][0] == "rolled-back" and states["cam-2"][0] == "rolled-back", states
        assert states["cam-3"][0] == "failed" and "rolled back by itself" in states["cam-3"][1] and "picky decoder" in states["cam-3"][1]
        assert states["cam-4"][0] == states["cam-5"][0] == "not-started"
        assert json.loads(state1.read_text())["status"] == "aborted"
        # Nobody outside the started rings got it: no cmd/model on their topics, nothing in their stores.
        time.sleep(0.5)
        assert sorted(m.topic.split("/")[1] for m in pushes.messages) == ["cam-1", "cam-2", "cam-3"]
        assert {_signed_version(bytes(m.payload)) for m in pushes.messages} == {2}
        for device in ("cam-4", "cam-5"):
            assert fleet.store(device).state() == {} and not list((fleet.store(device).root / "releases").iterdir())
        # Every device that took it runs its previous model again, by its retained info and its store.
        info = _retained_info(mosquitto.port, devices)
        for device in devices:
            jsonschema.validate(info[device], payloads.schema("info"))
            assert info[device]["model"]["sha256"] == old_sha and info[device]["model"]["version"] is None, info[device]
        for device in ("cam-1", "cam-2", "cam-3"):
            store = fleet.store(device)
            assert store.current() is None and store.state()["highest_version"] == 2  # the failed version stays refused
            assert info[device]["update"]["state"] == "rolled-back" and info[device]["update"]["version"] == 2
        assert info["cam-1"]["update"]["detail"] == "rolled back by the fleet"
        rollbacks = {m.topic.split("/")[1]: json.loads(m.payload) for m in answers.messages if "/cmd/rollback/" in m.topic}
        assert sorted(rollbacks) == ["cam-1", "cam-2", "cam-3"]  # the started rings' devices that were pushed
        assert rollbacks["cam-1"]["rolled_back"] and not rollbacks["cam-3"]["rolled_back"]  # cam-3 had left it already
        assert all(r["ok"] and r["sha256"] == old_sha for r in rollbacks.values())

        # 2. The healthy bundle to 100 %, its first process killed in the middle of a ring.
        # This one keeps its state where rollouts do by default, so the fleet listing finds it.
        state2 = plan.default_state_path(plan.bundle_facts(healthy, [fleet_bundles / "fleet.pub"]))
        assert str(state2).startswith(str(tmp_path / "state"))
        args = _rollout_args(healthy, url, fleet_bundles, "--devices", ",".join(devices), "--stages", "20%,60%,100%",
                             "--max-failed", "20%", "--timeout", "60")
        with open(tmp_path / "rollout.log", "wb") as log:
            first = subprocess.Popen([sys.executable, "-m", "edge_sdk.cli", *args], stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=child_env())

        def in_ring_two():
            try:
                data = json.loads(state2.read_text())
            except (OSError, ValueError):
                return False
            ring = [d["state"] for d in data["devices"] if d["ring"] == 2]
            # Both pushes sent (one device already answered) and the ring not over: the middle of it.
            return data["ring"] == 1 and "pending" not in ring and "probation" in ring

        try:
            wait(in_ring_two, 90, step=0.05, what="the second ring under way")
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        killed = json.loads(state2.read_text())  # whole: written atomically
        assert killed["status"] == "running" and killed["devices"][0]["state"] == "succeeded"
        assert main(args) == 0, (tmp_path / "rollout.log").read_text()
        out = capsys.readouterr()
        assert SECRET not in out.out + out.err + state2.read_text()
        final = json.loads(state2.read_text())
        assert final["status"] == "complete" and [d["state"] for d in final["devices"]] == ["succeeded"] * 5, final
        assert all(d["pushes"] == 1 for d in final["devices"]), final  # nobody pushed twice
        sent = [(m.topic.split("/")[1], _signed_version(bytes(m.payload))) for m in pushes.messages]
        assert sorted(d for d, version in sent if version == 3) == devices  # once each, resumed or not
        assert sorted(d for d, version in sent if version == 2) == ["cam-1", "cam-2", "cam-3"]
        info = _retained_info(mosquitto.port, devices)
        for device in devices:
            assert info[device]["model"]["sha256"] == new_sha and info[device]["model"]["version"] == 3
            assert info[device]["update"]["state"] == "accepted"
            assert fleet.store(device).current().name.startswith("3-")

        # 3. The fleet listing shows it all.
        assert main(["fleet", "--broker", url, "--json", "--wait", "0.5"]) == 0
        listing = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [d["device"] for d in listing] == devices
        assert all(d["status"] == "online" and d["sha256"] == new_sha and d["version"] == 3 for d in listing)
        assert all(d["update"]["state"] == "accepted" for d in listing)
        assert all(d["rollout"] == {"version": 3, "status": "complete", "state": "succeeded", "reason": None} for d in listing)
        for message in answers.messages:
            jsonschema.validate(json.loads(message.payload), payloads.schema("command-result"))
        print(f"fleet up in {boot_s:.1f} s, aborting rollout {abort_s:.1f} s, total {time.monotonic() - started:.1f} s")
    finally:
        fleet.close()
        for subscriber in (pushes, infos, answers):
            subscriber.close()
