"""Device messages as a fleet consumer receives them, made by the runtime's own payload builders.

Each builder returns a :class:`~edge_sdk.fleet.records.Record` parsed from the bytes a device would
publish: the real body (``edge_sdk.mqtt.payloads``) in the publisher's envelope (schema, device_id,
seq, ts, as ``Publisher.envelope`` stamps it), on the device's topic. ``schema_of`` names the JSON
Schema a record's payload must pass, so the tests can prove the samples are real.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

from edge_sdk.fleet.records import Record, parse
from edge_sdk.mqtt import payloads as P
from edge_sdk.results import BBox, Detection, FrameResult
from edge_sdk.tracking.values import (
    Counts, LineDirection, LineEvent, TrackAction, TrackedObject, TrackEvent, ZoneAction, ZoneEvent,
)

RECEIVED = 1_800_000_000.0  # a fixed receive time, so the same record built twice is equal


def record(device: str, kind: str, body: dict, *, camera: str | None = None, received_ts: float = RECEIVED) -> Record:
    topic = f"edge/{device}/{camera}/{kind}" if camera else f"edge/{device}/{kind}"
    parsed = parse(topic, json.dumps(body, separators=(",", ":")).encode(), received_ts=received_ts)
    assert parsed is not None, f"not a device message: {topic} {body}"
    return parsed


def envelope(schema: str, device: str, seq: int, ts: float, body: dict) -> dict:
    return {"schema": schema, "device_id": device, "seq": seq, "ts": round(ts, 6), **body}


def detections(device: str, seq: int, *, camera: str = "cam1", n: int = 3, frame: int | None = None, ts: float | None = None) -> Record:
    """One frame's detections: ``n`` boxes, every other one tracked, and (n > 0) one classifier result without a box."""
    ts = 1_700_000_000.0 + seq if ts is None else ts
    dets = [Detection(class_id=i % 3, label=("circle", "square", "triangle")[i % 3], score=0.5 + i / (4 * n + 4),
                      box=BBox(0.1 * (i % 5), 0.05, 0.1 * (i % 5) + 0.2, 0.4), track_id=(i + 1 if i % 2 == 0 else None))
            for i in range(n)]
    if n:
        dets.append(Detection(class_id=7, label="scene", score=0.25))
    result = FrameResult(index=seq if frame is None else frame, timestamp=ts - 0.05, frame_size=(640, 480),
                         detections=tuple(dets), camera=camera)
    return record(device, "detections", envelope(P.DETECTIONS, device, seq, ts, P.detections_body(result)), camera=camera)


def track_event(device: str, seq: int, *, camera: str = "cam1", action: str = "end", reason: str | None = "lost") -> Record:
    obj = TrackedObject(track_id=5, class_id=1, label="square", score=0.8125, box=BBox(0.1, 0.2, 0.3, 0.4),
                        first_seen=100.0, last_seen=104.5, stationary=True)
    event = TrackEvent(action=TrackAction(action), track=obj, zones=("door",), reason=reason if action == "end" else None)
    body = P.event_body(camera, event, frame=41, frame_ts=1_700_000_000.5)
    return record(device, "events", envelope(P.EVENT, device, seq, 1_700_000_001.0, body), camera=camera)


def zone_event(device: str, seq: int, *, camera: str = "cam1") -> Record:
    event = ZoneEvent(zone="door", action=ZoneAction.LOITER, track_id=9, label="circle", dwell_s=12.3456)
    body = P.event_body(camera, event, frame=42, frame_ts=1_700_000_002.25)
    return record(device, "events", envelope(P.EVENT, device, seq, 1_700_000_002.5, body), camera=camera)


def line_event(device: str, seq: int, *, camera: str = "cam1") -> Record:
    event = LineEvent(line="gate", direction=LineDirection.OUT, track_id=11, label="triangle")
    body = P.event_body(camera, event)  # an end sent when the run stopped: no frame
    return record(device, "events", envelope(P.EVENT, device, seq, 1_700_000_003.0, body), camera=camera)


def counts(device: str, seq: int, *, camera: str = "cam1", inside: int = 2, ts: float | None = None) -> Record:
    value = Counts(zones={"door": {"circle": inside, "square": 1}}, lines={"gate": {"in": {"circle": seq}, "out": {}}})
    ts = 1_700_000_000.0 + seq if ts is None else ts
    return record(device, "counts", envelope(P.COUNTS, device, seq, ts, P.counts_body(camera, value)), camera=camera)


def alert(device: str, seq: int) -> Record:
    body = P.alert_body("camera-failed", "rtsp://cam1: 401 Unauthorized", camera="cam1")
    return record(device, "alert", envelope(P.ALERT, device, seq, 1_700_000_004.0, body))


def metrics(device: str, seq: int) -> Record:
    stats = SimpleNamespace(fps=14.9876, frames_done=1200 + seq, frames_skipped=3, frames_dropped=4, frame_errors=0,
                            detections=3456, latency_ms_p50=21.5, latency_ms_p99=48.25)
    health = SimpleNamespace(state="ok", detail=None, restarts=1, hangs=0, failures=0, lost_frames=2)
    status = P.run_status([P.camera_status("cam1", "running", None, stats)], health)
    publisher = SimpleNamespace(outbox_depth=7, outbox_bytes=2048, sent=900, qos0_sent=10, acked=895,
                                outbox_dropped_overflow=1, outbox_dropped_expired=0, qos0_dropped=2, refused=0, connected=3)
    body = P.metrics_body(status, publisher, rate_limited=5, rss_mb=123.45, cpu_temp_c=55.5)
    return record(device, "metrics", envelope(P.METRICS, device, seq, 1_700_000_005.0, body))


def info(device: str, seq: int, *, model: str = "shapes-detector", sha: str = "ab" * 32, ts: float | None = None,
         version: int | None = None, update: dict | None = None) -> Record:
    """The retained birth message, as ``payloads.info_body`` lays it out (a real bundle is not needed to store it);
    ``version`` and ``update`` (a rollout's, ``UpdateState.to_json()``) only when given."""
    body = {
        "sdk_version": "0.1.0",
        "model": {"name": model, "sha256": sha, "target": "tflite", "precision": "int8", "task": "detection",
                  "profile": "x86-cpu", "labels": ["circle", "square", "triangle"]},
        "accuracy": None, "source": "rtsp://***@cam1/stream",
        "cameras": [{"camera": "cam1", "source": "rtsp://***@cam1/stream", "zones": ["door"], "lines": ["gate"]}],
    }
    if version is not None or update is not None:
        body["model"]["version"], body["update"] = version, update
    ts = 1_700_000_000.0 + seq if ts is None else ts
    return record(device, "info", envelope(P.INFO, device, seq, ts, body))


def status(device: str, state: str, ts: float, detail: str | None = None, epoch: int | None = None) -> Record:
    """The retained status (no seq: the broker publishes the device's Last Will for it)."""
    body = {"schema": P.STATUS, "device_id": device, "state": state, "ts": ts, **({"detail": detail} if detail else {}),
            **({"epoch": epoch} if epoch is not None else {})}
    return record(device, "status", body)


def schema_of(r: Record) -> dict:
    return P.schema({"events": "event"}.get(r.kind, r.kind))


def mixed(device: str, first_seq: int, n: int) -> list[Record]:
    """``n`` records of every logged kind in turn, seqs ``first_seq``…"""
    makers = (detections, detections, track_event, zone_event, line_event, counts, alert, metrics, info)
    return [makers[i % len(makers)](device, first_seq + i) for i in range(n)]


class Ingest:
    """One ``edge-sdk ingest`` process, started and restarted with the same command (so it resumes its
    session); its output goes to ``{folder}/{name}.log``. ``db`` is a URL or a SQLite path; ``env``
    adds to the environment (a database password, say)."""

    def __init__(self, broker_url: str, folder, name: str, *, db: str, group: str | None = "ingest", env: dict | None = None) -> None:
        import os
        import sys
        from pathlib import Path

        self.folder, self.name, self.db = Path(folder), name, db
        share = ["--share", group] if group else []
        self.command = [sys.executable, "-m", "edge_sdk.cli", "ingest", "--broker", broker_url, *share, "--name", name, "--db", db]
        self.log = self.folder / f"{name}.log"
        self.env = {**os.environ, "XDG_STATE_HOME": str(self.folder / "state"), "PYTHONUNBUFFERED": "1", **(env or {})}
        self.process = None

    def start(self) -> Ingest:
        import subprocess

        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        return self

    def kill(self) -> None:
        import signal

        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> int:
        """SIGTERM, the clean stop: what it holds is stored and acknowledged first."""
        import signal

        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def totals(self) -> dict[str, int]:
        """The counts of its last summary line ('received N, stored N, duplicates N, ...')."""
        import re

        lines = [line for line in self.output().splitlines() if line.startswith("ingest ")]
        summary = lines[-1].split(": ", 1)[-1] if lines else ""
        return {key.replace(" ", "_"): int(value) for key, value in re.findall(r"([a-z][a-z ]*) (\d+)", summary)}
