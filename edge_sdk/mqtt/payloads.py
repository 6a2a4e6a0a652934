"""The JSON payloads the runtime publishes, built by one function each, and their JSON Schemas.

Every payload names its ``schema`` (``edge-sdk/<kind>@<version>``); ``seq`` increases per device
and survives restarts, so ``(device_id, seq)`` identifies a message for de-duplication. The
schemas live in ``edge_sdk/schemas/mqtt-<kind>.schema.json`` and the tests validate real payloads.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from edge_sdk import __version__
from edge_sdk.bundle import Bundle
from edge_sdk.results import FrameResult

STATUS, INFO, DETECTIONS, METRICS, COMMAND_RESULT, ALERT, EVENT, COUNTS = (
    "edge-sdk/status@1", "edge-sdk/info@1", "edge-sdk/detections@1", "edge-sdk/metrics@1", "edge-sdk/command-result@1",
    "edge-sdk/alert@1", "edge-sdk/event@1", "edge-sdk/counts@1",
)
KINDS = {STATUS: "status", INFO: "info", DETECTIONS: "detections", METRICS: "metrics", COMMAND_RESULT: "command-result",
         ALERT: "alert", EVENT: "event", COUNTS: "counts"}


def alert_body(kind: str, detail: str, **extra: str) -> dict:
    """An event the fleet should hear of once: a quarantined outbox, an engine restarted or given up on."""
    return {"kind": kind, "detail": detail, **extra}


def event_body(camera: str, event, *, frame: int | None = None, frame_ts: float | None = None) -> dict:
    """One track, zone or line event of a camera (``edge_sdk.tracking.values``); ``frame`` and
    ``frame_ts`` name the frame it happened in (absent for the ends sent when a run stops or restarts)."""
    where = {"frame": frame, "frame_ts": round(frame_ts, 6)} if frame is not None and frame_ts is not None else {}
    return {"camera": camera, **where, **event.to_json()}


def counts_body(camera: str, counts) -> dict:
    """A camera's zone occupancy and line totals by label (retained)."""
    return {"camera": camera, **counts.to_json()}


def detections_body(result: FrameResult) -> dict:
    """One frame's detections; a classifier's results are detections without a box."""
    body = result.to_json()
    for key in ("timings_ms", "events", "counts"):  # events and counts have topics of their own
        body.pop(key, None)
    body["frame_ts"] = body.pop("ts")
    return body


def info_body(bundle: Bundle, *, source: str | None = None, cameras: list[dict] | None = None,
              version: int | None = None, update: dict | None = None) -> dict:
    """The retained birth message: what this device runs and how well it converted; ``version`` is
    the signed version of the installed update it runs (None: the bundle it was started with), and
    ``update`` its last model update and where that stands (``UpdateState.to_json()``)."""
    manifest = bundle.manifest
    model_file = next((f for f in manifest.files if f.path == manifest.model_file), None)
    report = manifest.report
    accuracy = None
    if report is not None and report.accuracy is not None:
        acc = report.accuracy
        accuracy = {
            "images": acc.images, "reference_top1": acc.reference.top1, "converted_top1": acc.converted.top1,
            "reference_map50": acc.reference.map50, "converted_map50": acc.converted.map50,
            "drop_points": acc.drop_points, "agreement": acc.agreement,
        }
    return {
        "sdk_version": __version__,
        "model": {
            "name": manifest.name, "sha256": model_file.sha256 if model_file else None,
            "target": manifest.target.value, "precision": manifest.precision.value, "task": manifest.task.value,
            "profile": manifest.profile.name, "labels": bundle.labels(), "version": version,
        },
        "update": update,
        "accuracy": accuracy,
        "source": source,
        "cameras": cameras or [],
    }


def camera_status(camera: str, state: str, detail: str | None, stats) -> dict:
    """One camera's part of the metrics: its state and counters (``stats`` is a StatsSnapshot)."""
    return {
        "camera": camera, "state": state, "detail": detail,
        "fps": round(stats.fps, 3), "frames": stats.frames_done, "frames_skipped": stats.frames_skipped,
        "frames_dropped": stats.frames_dropped, "frame_errors": stats.frame_errors, "detections": stats.detections,
        "latency_ms_p50": round(stats.latency_ms_p50 or 0.0, 3), "latency_ms_p99": round(stats.latency_ms_p99 or 0.0, 3),
    }


def run_status(cameras: list[dict], health) -> dict:
    """The run's side of the metrics: every camera (:func:`camera_status`) and the engine's health."""
    return {
        "cameras": cameras,
        "engine": {"state": health.state, "detail": health.detail, "restarts": health.restarts, "hangs": health.hangs,
                   "failures": health.failures, "lost_frames": health.lost_frames},
    }


def metrics_body(status: dict, publisher, *, rate_limited: int, rss_mb: float | None, cpu_temp_c: float | None) -> dict:
    """Rates, latencies and counters for the fleet's dashboards: totals over the cameras, then each
    camera. ``publisher`` is the publisher's PublisherStats (None: nothing published yet)."""
    cameras, engine = status["cameras"], status["engine"]

    def total(key: str) -> int:
        return sum(c[key] for c in cameras)

    def sent(name: str) -> int:
        return 0 if publisher is None else getattr(publisher, name)

    return {
        "fps": round(sum(c["fps"] for c in cameras), 3),
        "latency_ms_p50": max((c["latency_ms_p50"] for c in cameras), default=0.0),
        "latency_ms_p99": max((c["latency_ms_p99"] for c in cameras), default=0.0),
        "frames": total("frames"),
        "frames_skipped": total("frames_skipped"),
        "frames_dropped": total("frames_dropped"),
        "frame_errors": total("frame_errors"),
        "detections": total("detections"),
        "outbox_depth": sent("outbox_depth"),
        "outbox_bytes": sent("outbox_bytes"),
        "published": sent("sent") + sent("qos0_sent"),
        "acked": sent("acked"),
        "dropped": sent("outbox_dropped_overflow") + sent("outbox_dropped_expired") + sent("qos0_dropped") + rate_limited,
        "refused": sent("refused"),
        "reconnects": max(0, sent("connected") - 1),
        "rss_mb": None if rss_mb is None else round(rss_mb, 1),
        "cpu_temp_c": cpu_temp_c,
        # One camera: its state; several: the first that is not running, so a dashboard sees trouble.
        "source_state": next((c["state"] for c in cameras if c["state"] != "running"), cameras[0]["state"] if cameras else None),
        "engine_state": engine["state"],
        "engine_restarts": engine["restarts"],
        "engine_hangs": engine["hangs"],
        "engine_lost_frames": engine["lost_frames"],
        "cameras": cameras,
    }


@cache
def schema(kind: str) -> dict:
    """The JSON Schema of one payload kind ('status', 'info', 'detections', 'metrics', 'command-result')."""
    text = resources.files("edge_sdk.schemas").joinpath(f"mqtt-{kind}.schema.json").read_text(encoding="utf-8")
    return json.loads(text)
