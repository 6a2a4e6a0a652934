"""``edge-sdk demo`` run as a user runs it: the shipped detector converted, run, published and scored.

The first run converts (pruned, int8) and is reused by the others through the cache, as on a
user's machine. The detector's conversion report doubles as the converter's detection test:
mAP@0.5 and mAP@0.5:0.95, reference against converted, on a held-out YOLO dataset.
"""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import pytest

from edge_sdk.bundle import open_bundle
from support import free_port

pytestmark = pytest.mark.slow


def _demo(workdir, *args, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edge_sdk.cli", "demo", "--workdir", str(workdir), *args],
        capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("demo")
    summary = workdir / "summary.json"
    proc = _demo(workdir, "--frames", "60", "--fast", "--json", str(summary))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir, proc, json.loads(summary.read_text())


@pytest.mark.timeout(900)
def test_first_run_converts_the_shipped_detector_pruned_and_int8_with_map_in_the_report(first_run):
    workdir, proc, _ = first_run
    assert "Conversion report" in proc.stdout and "mAP@0.5:0.95" in proc.stdout
    (bundle_dir,) = workdir.glob("bundle-x86-cpu-*")
    manifest = open_bundle(bundle_dir).manifest
    assert manifest.task.value == "detection" and manifest.precision.value == "int8"
    assert manifest.decoder.kind == "yolo" and manifest.decoder.options == {"layout": "v5", "normalized": True}
    assert manifest.preprocessing.resize.value == "letterbox"
    assert (workdir / bundle_dir / "labels.txt").read_text().split() == ["circle", "square", "triangle", "star"]
    report = manifest.report
    assert report.sparsity.prunable >= 0.49
    accuracy = report.accuracy
    for metrics in (accuracy.original, accuracy.reference, accuracy.converted):
        assert metrics.top1 is None and 0 <= metrics.map50_95 <= metrics.map50 <= 1
    assert accuracy.original.map50 >= 0.8  # the shipped detector, before pruning
    assert accuracy.within_budget and accuracy.drop_points <= 1.5
    assert accuracy.drop_points == pytest.approx(100 * (accuracy.reference.map50 - accuracy.converted.map50))


@pytest.mark.timeout(900)
def test_what_arrives_over_mqtt_matches_the_videos_truth(first_run):
    _, proc, summary = first_run
    assert summary["frames"] == 60 and summary["broker"].startswith("Mosquitto")
    # every frame's detections and every track and line event, all acknowledged and all received
    assert summary["received"] == 60 and summary["duplicates"] == 0
    assert summary["acked"] == summary["received"] + summary["events"] and summary["events"] >= 8
    # The detector scores mAP@0.5 0.93 pruned and int8 on held-out scenes; on this video, at the run's
    # 0.4 threshold and IoU 0.5, what arrives measures about 0.9 precision and recall (it was 0.88 and
    # 0.71 before the shapes kept to lanes in colours that stand out along them).
    assert summary["precision"] >= 0.75 and summary["recall"] >= 0.6
    assert summary["latency_p99_ms"] >= summary["latency_p50_ms"] > 0
    # The line 'gate' as the events counted it, against the video's true crossings; one track per shape.
    assert (summary["line_in"], summary["line_out"]) == (summary["truth_in"], summary["truth_out"])
    assert summary["tracks_new"] == summary["objects"] == 4
    assert len(summary["pngs"]) == 4
    for path in summary["pngs"]:
        image = cv2.imread(path)
        assert image is not None and image.shape == (480, 640, 3)
    assert "Demo summary" in proc.stdout


@pytest.mark.timeout(300)
def test_a_second_run_reuses_the_bundle_and_the_embedded_broker_delivers_live_lines(first_run):
    workdir, _, _ = first_run
    summary = workdir / "again.json"
    proc = _demo(workdir, "--frames", "20", "--fps", "40", "--embedded-broker", "--json", str(summary))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "cached bundle" in proc.stdout and "Conversion report" not in proc.stdout
    data = json.loads(summary.read_text())
    assert data["broker"] == "embedded (amqtt)" and data["received"] == 20
    assert proc.stdout.count("mqtt frame") == 20  # the subscriber printed every message as it arrived


@pytest.mark.timeout(300)
def test_an_unreachable_broker_is_one_line_and_exit_2(first_run):
    workdir, _, _ = first_run
    port = free_port()  # closed again before the demo connects
    proc = _demo(workdir, "--frames", "10", "--broker", f"mqtt://127.0.0.1:{port}", "--quiet")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("edge-sdk: error: demo subscriber cannot reach the broker")
    assert "Traceback" not in proc.stderr


@pytest.mark.timeout(300)
def test_nothing_arriving_over_mqtt_fails_the_demo(first_run, tmp_path):
    """A broker whose ACL lets anyone read but nobody publish: the runtime runs, nothing arrives."""
    from support.broker import Mosquitto

    workdir, _, _ = first_run
    broker = Mosquitto(tmp_path / "broker", acl="topic read edge/#\n").start()
    try:
        proc = _demo(workdir, "--frames", "10", "--fast", "--quiet", "--broker", broker.url)
    finally:
        broker.stop()
    assert proc.returncode == 2, proc.stdout[-2000:]
    assert "edge-sdk: error: nothing arrived over MQTT" in proc.stderr.strip().splitlines()[-1]
    assert "Traceback" not in proc.stderr
