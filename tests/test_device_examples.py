"""The device examples, run as a user runs them: each script in its own process, on a video file in
place of the camera, with real bundles from the converter and a real Mosquitto."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import cv2
import paho.mqtt.client as mqtt
import pytest

from edge_sdk.converters import convert
from support import ROOT, wait

pytestmark = pytest.mark.slow
EXAMPLES = ROOT / "examples"
FRAMES = 20
SCRIPTS = ["pi_camera.py", "coral_usb.py", "openvino_npu.py", "fleet_subscriber.py", "home_assistant_check.py"]


@pytest.fixture(scope="module")
def bundles(keras3_model, digits, tmp_path_factory) -> dict[str, Path]:
    """The digits classifier for a Raspberry Pi, an Intel CPU and a Coral USB (uncompiled: no compiler here)."""
    root = tmp_path_factory.mktemp("example-bundles")
    for name, profile in (("rpi4", "rpi4"), ("intel", "intel-cpu"), ("coral", "coral-usb")):
        convert(keras3_model, profile=profile, out=root / name, calib=digits["calib"], compile=False)
    return {name: root / name for name in ("rpi4", "intel", "coral")}


@pytest.fixture(scope="module")
def video(digits, tmp_path_factory) -> tuple[Path, list[str]]:
    """A short camera-sized clip of validation digits, and the digit shown in each frame."""
    path = tmp_path_factory.mktemp("example-video") / "digits.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (240, 180))
    truth = []
    for i in range(FRAMES):
        index = digits["val_idx"][i]
        writer.write(cv2.resize(digits["images"][index], (240, 180), interpolation=cv2.INTER_NEAREST))
        truth.append(str(digits["labels"][index]))
    writer.release()
    return path, truth


def environment(tmp_path: Path) -> dict[str, str]:
    # The runtime keeps its MQTT outbox under XDG_STATE_HOME: keep it inside the test.
    return {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}


def run_example(name: str, *args, env: dict | None = None, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EXAMPLES / name), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def start_example(name: str, *args, env: dict, folder: Path) -> tuple[subprocess.Popen, Path, Path]:
    out, err = folder / f"{name}.{time.monotonic_ns()}.out", folder / f"{name}.{time.monotonic_ns()}.err"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        command = [sys.executable, str(EXAMPLES / name), *map(str, args)]
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=env)
    return process, out, err


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def top_labels(results: list[dict]) -> list[str]:
    return [r["detections"][0]["label"] for r in results]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_explains_its_board_install_and_use(name):
    proc = run_example(name, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "pip install" in proc.stdout and "Run" in proc.stdout and "usage:" in proc.stdout


@pytest.mark.timeout(300)
def test_pi_camera_runs_a_pi_bundle_on_a_video_in_place_of_the_camera(bundles, video):
    path, truth = video
    proc = run_example("pi_camera.py", bundles["rpi4"], "--source", path, "--max-frames", 6, "--json")
    assert proc.returncode == 0, proc.stderr
    results = json_lines(proc.stdout)
    assert [r["frame"] for r in results] == list(range(6))
    assert all((r["width"], r["height"]) == (240, 180) for r in results)
    assert sum(a == b for a, b in zip(top_labels(results), truth)) >= 5
    assert "built for rpi4" in proc.stderr and "6 frames" in proc.stderr
    # Text mode, as a user first sees it: one line per frame, the true digit first.
    proc = run_example("pi_camera.py", bundles["rpi4"], "--source", path, "--max-frames", 3)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["frame 0", "frame 1", "frame 2"]
    assert sum(line.split(": ")[1].split()[0] == label for line, label in zip(lines, truth)) >= 2


@pytest.mark.timeout(300)
def test_coral_usb_says_it_runs_on_the_cpu_when_there_is_no_stick(bundles, video):
    path, truth = video
    refused = run_example("coral_usb.py", bundles["coral"], "--source", path, "--max-frames", 3)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and refused.stderr.startswith("coral_usb: error: ")
    assert "Edge TPU" in refused.stderr and "--cpu-fallback" in refused.stderr
    proc = run_example("coral_usb.py", bundles["coral"], "--source", path, "--max-frames", 5, "--cpu-fallback", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "running the Edge-TPU-ready model.tflite on the CPU" in proc.stderr
    assert "[CPU FALLBACK] 5 frames" in proc.stderr
    results = json_lines(proc.stdout)
    assert [r["frame"] for r in results] == list(range(5))
    assert sum(a == b for a, b in zip(top_labels(results), truth)) >= 4


@pytest.mark.timeout(300)
def test_openvino_npu_lists_devices_and_falls_back_when_there_is_no_npu(bundles, video):
    import openvino

    path, truth = video
    devices = openvino.Core().available_devices
    proc = run_example("openvino_npu.py", bundles["intel"], "--source", path, "--max-frames", 5, "--json")
    assert proc.returncode == 0, proc.stderr
    listed = proc.stderr.split("OpenVINO devices:\n")[1].split("device:")[0]
    assert [line.split()[0] for line in listed.splitlines()] == devices
    if "NPU" in devices:
        assert "device: NPU" in proc.stderr and "[NPU] 5 frames" in proc.stderr
    else:
        assert "no NPU found" in proc.stderr and "falling back to CPU" in proc.stderr and "[CPU] 5 frames" in proc.stderr
    results = json_lines(proc.stdout)
    assert [r["frame"] for r in results] == list(range(5))
    assert sum(a == b for a, b in zip(top_labels(results), truth)) >= 4


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("name", "args", "message"), [
    ("pi_camera.py", ["{rpi4}", "--max-frames", "0"], "--max-frames: expected a whole number >= 1"),
    ("pi_camera.py", ["{rpi4}", "--source", "{tmp}/missing.mp4"], "missing.mp4 does not exist"),
    ("pi_camera.py", ["{rpi4}", "--source", "{video}", "--threshold", "2"], "field 'threshold'"),
    ("coral_usb.py", ["{rpi4}", "--source", "{video}"], "is a tflite bundle; convert the model with --profile coral-usb"),
    ("openvino_npu.py", ["{intel}", "--fallback-device", "TPU"], "invalid choice: 'TPU'"),
    ("fleet_subscriber.py", ["--broker", "http://broker", "--db", "{tmp}/x.sqlite3"], "must look like mqtt://host"),
    ("fleet_subscriber.py", ["--db", "{tmp}/absent.sqlite3", "--summary"], "absent.sqlite3 does not exist"),
    ("home_assistant_check.py", ["--broker", "mqtt://127.0.0.1:1"], "cannot connect to 127.0.0.1:1"),
])
def test_bad_input_is_one_line_on_stderr_and_exit_2(bundles, video, tmp_path, name, args, message):
    values = {"rpi4": bundles["rpi4"], "intel": bundles["intel"], "video": video[0], "tmp": tmp_path}
    proc = run_example(name, *(arg.format(**values) for arg in args))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"{name[:-3]}: error: "), proc.stderr
    assert message in proc.stderr and proc.stdout == ""


def stored_rows(db: Path) -> list[tuple[str, int, int, list[str]]]:
    """(device, seq, frame, labels) per stored message, in seq order."""
    with sqlite3.connect(db) as connection:
        messages = connection.execute("SELECT device_id, seq, frame FROM messages ORDER BY seq").fetchall()
        labels = connection.execute("SELECT device_id, seq, label FROM detections ORDER BY seq, idx").fetchall()
    by_message: dict[tuple[str, int], list[str]] = {}
    for device, seq, label in labels:
        by_message.setdefault((device, seq), []).append(label)
    return [(device, seq, frame, by_message.get((device, seq), [])) for device, seq, frame in messages]


def republish(port: int, payloads: list[tuple[str, str]]) -> None:
    """Send stored messages again, as a broker does after a lost acknowledgement."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for topic, payload in payloads:
            client.publish(topic, payload, qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.mark.timeout(300)
def test_fleet_subscriber_stores_every_detection_once_across_a_crash(bundles, video, mosquitto, tmp_path):
    path, _ = video
    env = environment(tmp_path)
    db = tmp_path / "fleet.sqlite3"
    subscriber = ["--broker", mosquitto.url, "--db", db, "--client-id", "test-backend"]

    def device_run(frames: int) -> list[dict]:
        proc = run_example("pi_camera.py", bundles["rpi4"], "--source", path, "--max-frames", frames, "--threshold", 0.5,
                           "--broker", mosquitto.url, "--device-id", "cam-1", "--json", env=env)
        assert proc.returncode == 0, proc.stderr
        assert "0 kept for later" in proc.stderr  # the broker acknowledged everything before the run ended
        # publish: on_detection (the default): frames with nothing above the threshold send nothing.
        return [r for r in json_lines(proc.stdout) if r["detections"]]

    first, out, err = start_example("fleet_subscriber.py", *subscriber, env=env, folder=tmp_path)
    try:
        assert wait(lambda: "subscribed to edge/+/+/detections" in err.read_text(), 20, step=0.05), err.read_text()
        sent_first = device_run(10)
        assert wait(lambda: out.read_text().count("stored cam-1") == len(sent_first), 20, step=0.05), out.read_text()
        time.sleep(0.5)  # let the last acknowledgements reach the broker before the crash
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)

    # While the back-end is down: more detections, and two it already has, sent again.
    sent_second = device_run(8)
    with sqlite3.connect(db) as connection:
        again = connection.execute("SELECT topic, payload FROM messages ORDER BY seq LIMIT 2").fetchall()
    republish(mosquitto.port, again)

    proc = run_example("fleet_subscriber.py", *subscriber, "--count", len(sent_second) + 2, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "resumed the session" in proc.stderr
    assert proc.stdout.count("duplicate, already stored:") == 2
    assert proc.stdout.count("stored cam-1") == len(sent_second)

    rows = stored_rows(db)
    sent = sent_first + sent_second
    expected = [(r["frame"], [d["label"] for d in r["detections"]]) for r in sent]
    assert [(frame, labels) for _, _, frame, labels in rows] == expected
    assert len({(device, seq) for device, seq, _, _ in rows}) == len(rows) == len(sent)
    assert {device for device, _, _, _ in rows} == {"cam-1"}

    summary = run_example("fleet_subscriber.py", "--db", db, "--summary")
    assert summary.returncode == 0, summary.stderr
    table = [line.split() for line in summary.stdout.splitlines()]
    counted = {(f[0], f[1]): int(f[2]) for f in table if len(f) == 4 and f[0] == "cam-1"}
    assert counted == Counter(("cam-1", d["label"]) for r in sent for d in r["detections"])
    assert f"cam-1: {len(sent)} messages" in summary.stdout


@pytest.mark.timeout(300)
def test_home_assistant_check_validates_a_running_device_and_its_states(bundles, video, mosquitto, tmp_path):
    path, truth = video
    env = environment(tmp_path)
    config = tmp_path / "run.yaml"
    # A device id with a dot: Home Assistant's node id and entity ids must come out sanitised.
    config.write_text(
        f"source: {path}\nloop: true\nfps: 10\nmqtt:\n  broker: {mosquitto.url}\n  device_id: porch.cam\n"
        f"  home_assistant: true\n  watch_labels: ['{truth[0]}', '{truth[1]}']\n  metrics_interval_s: 0.5\n"
    )
    device, out, err = start_example("pi_camera.py", bundles["rpi4"], "--config", config, env=env, folder=tmp_path)
    check = ["--broker", mosquitto.url, "--device-id", "porch.cam"]
    try:
        assert wait(lambda: out.read_text().count("\n") >= 3, 20, step=0.05), err.read_text()
        proc = run_example("home_assistant_check.py", *check, "--label", truth[0], "--label", truth[1], "--live", 10)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "4 entities, 0 problems" in proc.stdout
        assert "availability from edge/porch.cam/status: available" in proc.stdout
        states = dict(re.findall(r"^  (\S+) .*-> (.+)$", proc.stdout, re.MULTILINE))
        assert set(states) == {"sensor.porch_cam_fps", "sensor.porch_cam_main_last_detection",
                               f"binary_sensor.porch_cam_main_seen_{truth[0]}", f"binary_sensor.porch_cam_main_seen_{truth[1]}"}
        assert float(states["sensor.porch_cam_fps"].removesuffix(" fps")) > 0
        assert states["sensor.porch_cam_main_last_detection"] in {str(i) for i in range(10)} | {"none"}
        assert {states[f"binary_sensor.porch_cam_main_seen_{label}"] for label in truth[:2]} <= {"ON", "OFF"}

        missing = run_example("home_assistant_check.py", *check, "--label", "not-watched")
        assert missing.returncode == 1
        assert "problem: no binary sensor for label 'not-watched'" in missing.stdout
    finally:
        device.terminate()  # SIGTERM: a clean stop, so the device says 'offline' itself
        assert device.wait(20) == 0, err.read_text()
    assert re.search(r"\d+ frames, .*mqtt: \d+ acknowledged", err.read_text())
    after = run_example("home_assistant_check.py", *check, "--live", 1)
    assert after.returncode == 0, after.stdout
    assert "availability from edge/porch.cam/status: unavailable (device offline)" in after.stdout
