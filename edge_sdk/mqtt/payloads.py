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

STATUS, INFO, DETECTIONS, METRICS, COMMAND_RESULT, ALERT = (
    "edge-sdk/status@1", "edge-sdk/info@1", "edge-sdk/detections@1", "edge-sdk/metrics@1", "edge-sdk/command-result@1",
    "edge-sdk/alert@1",
)
KINDS = {STATUS: "status", INFO: "info", DETECTIONS: "detections", METRICS: "metrics", COMMAND_RESULT: "command-result", ALERT: "alert"}


def alert_body(kind: str, detail: str, **extra: str) -> dict:
    """An event the fleet should hear of once: a quarantined outbox, an engine restarted or given up on."""
    return {"kind": kind, "detail": detail, **extra}


def detections_body(result: FrameResult) -> dict:
    """One frame's detections; a classifier's results are detections without a box."""
    body = result.to_json()
    body.pop("timings_ms", None)
    body["frame_ts"] = body.pop("ts")
    return body


def info_body(bundle: Bundle, *, source: str | None = None) -> dict:
    """The retained birth message: what this device runs and how well it converted."""
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
            "profile": manifest.profile.name, "labels": bundle.labels(),
        },
        "accuracy": accuracy,
        "source": source,
    }


def metrics_body(pipeline_stats: dict, publisher_stats: dict, *, rss_mb: float | None, cpu_temp_c: float | None, source_state: str | None) -> dict:
    """Rates, latencies and counters for the fleet's dashboards."""
    return {
        "fps": round(pipeline_stats.get("fps", 0.0), 3),
        "latency_ms_p50": round(pipeline_stats.get("latency_ms_p50", 0.0), 3),
        "latency_ms_p99": round(pipeline_stats.get("latency_ms_p99", 0.0), 3),
        "frames": pipeline_stats.get("frames_done", 0),
        "frames_skipped": pipeline_stats.get("frames_skipped", 0),
        "frames_dropped": pipeline_stats.get("frames_dropped", 0),
        "frame_errors": pipeline_stats.get("frame_errors", 0),
        "detections": pipeline_stats.get("detections", 0),
        "outbox_depth": publisher_stats.get("outbox_depth", 0),
        "outbox_bytes": publisher_stats.get("outbox_bytes", 0),
        "published": publisher_stats.get("sent", 0) + publisher_stats.get("qos0_sent", 0),
        "acked": publisher_stats.get("acked", 0),
        "dropped": publisher_stats.get("outbox_dropped_overflow", 0) + publisher_stats.get("outbox_dropped_expired", 0)
        + publisher_stats.get("qos0_dropped", 0) + publisher_stats.get("rate_limited", 0),
        "refused": publisher_stats.get("refused", 0),
        "reconnects": max(0, publisher_stats.get("connected", 0) - 1),
        "rss_mb": None if rss_mb is None else round(rss_mb, 1),
        "cpu_temp_c": cpu_temp_c,
        "source_state": source_state,
        "engine_state": pipeline_stats.get("engine_state", "ok"),
        "engine_restarts": pipeline_stats.get("engine_restarts", 0),
        "engine_hangs": pipeline_stats.get("engine_hangs", 0),
        "engine_lost_frames": pipeline_stats.get("engine_lost_frames", 0),
    }


@cache
def schema(kind: str) -> dict:
    """The JSON Schema of one payload kind ('status', 'info', 'detections', 'metrics', 'command-result')."""
    text = resources.files("edge_sdk.schemas").joinpath(f"mqtt-{kind}.schema.json").read_text(encoding="utf-8")
    return json.loads(text)
