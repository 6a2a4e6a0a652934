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
from edge_sdk.masks import DEFAULT_VERTICES, MaskFormat
from edge_sdk.results import FrameResult

# AWS IoT Core refuses a message over 128 KB, and other brokers (and the dashboards behind them)
# take large messages badly: no payload is handed to the publisher above this.
MAX_PAYLOAD_BYTES = 128 * 1024
# What the envelope adds to a body: schema, device_id (at most 128 bytes, escaped), seq, ts.
ENVELOPE_BYTES = 1024
MAX_BODY_BYTES = MAX_PAYLOAD_BYTES - ENVELOPE_BYTES
MIN_VERTICES_SENT = 8  # below this a polygon no longer shows the object's shape: the masks go instead

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


def encode(payload: dict) -> bytes:
    """``payload`` as the publisher sends it: compact JSON, UTF-8."""
    return json.dumps(payload, separators=(",", ":")).encode()


def size(payload: dict) -> int:
    """Bytes of ``payload`` as the publisher encodes it."""
    return len(encode(payload))


def _frame_body(result: FrameResult, masks: MaskFormat, vertices: int, *, keypoints: bool = True) -> dict:
    body = result.to_json(masks=masks.value, vertices=vertices, keypoints=keypoints)
    for key in ("timings_ms", "events", "counts"):  # events and counts have topics of their own
        body.pop(key, None)
    body["frame_ts"] = body.pop("ts")
    return body


def detections_body(result: FrameResult, *, masks: MaskFormat | str = MaskFormat.POLYGON, vertices: int = DEFAULT_VERTICES,
                    limit: int = MAX_BODY_BYTES) -> dict:
    """One frame's detections (a classifier's are detections without a box), with masks in the
    ``masks`` format, no larger than ``limit`` bytes of JSON.

    A frame that would be larger is degraded one step at a time until it fits, each step named in
    ``truncated``: ``rle`` (polygons instead of RLE), ``vertices`` (polygons simplified below the
    budget), ``masks`` (none: a semantic frame keeps its class areas), ``keypoints``, ``detections``
    (the lowest-scoring ones left out, ``detections_dropped`` says how many), ``areas`` (only the
    largest classes' areas). The publisher is never handed more than the limit.
    """
    masks = MaskFormat(masks)
    body = _frame_body(result, masks, vertices)
    if size(body) <= limit:
        return body
    steps: list[str] = []
    sends_masks = masks is not MaskFormat.SUMMARY and (
        result.segmentation is not None or any(d.mask is not None for d in result.detections))
    if sends_masks:
        if masks is MaskFormat.RLE:
            steps.append("rle")
            body = _frame_body(result, MaskFormat.POLYGON, vertices)
            if size(body) <= limit:
                return {**body, "truncated": steps}
        bare = size(_frame_body(result, MaskFormat.SUMMARY, vertices))
        budget, current = vertices, size(body)
        while budget > MIN_VERTICES_SENT and bare < limit:
            # Polygon bytes grow with the budget: aim at the share of the limit the masks may take.
            ratio = (limit - bare) / max(1, current - bare)
            budget = max(MIN_VERTICES_SENT, min(budget // 2, int(budget * ratio * 0.9)))
            body = _frame_body(result, MaskFormat.POLYGON, budget)
            current = size(body)
            if current <= limit:
                return {**body, "truncated": [*steps, "vertices"]}
        steps = ["masks"]  # what the payload lacks now; the polygon steps no longer apply
        body = _frame_body(result, MaskFormat.SUMMARY, vertices)
        if size(body) <= limit:
            return {**body, "truncated": steps}
    if any(d.keypoints is not None for d in result.detections):
        steps.append("keypoints")
        body = _frame_body(result, MaskFormat.SUMMARY, vertices, keypoints=False)
        if size(body) <= limit:
            return {**body, "truncated": steps}
    return _fewer(result, body, steps, limit)


def _fewer(result: FrameResult, body: dict, steps: list[str], limit: int) -> dict:
    """``body`` with as many of the best-scoring detections as fit, then as many class areas."""
    ranked = sorted(range(len(result.detections)), key=lambda i: -result.detections[i].score)
    everything = body["detections"]

    def keeping(n: int) -> dict:
        chosen = sorted(ranked[:n])  # in the frame's order
        return {**body, "detections": [everything[i] for i in chosen], "truncated": [*steps, "detections"],
                "detections_dropped": len(everything) - n}

    low, high = 0, len(everything)  # the most detections that fit, by bisection
    while low < high:
        middle = (low + high + 1) // 2
        if size(keeping(middle)) <= limit:
            low = middle
        else:
            high = middle - 1
    body = keeping(low)
    areas = body.get("segmentation", {}).get("areas")
    if size(body) > limit and areas:
        labels = list(areas)
        while labels and size(body) > limit:
            labels = labels[: len(labels) // 2]
            body = {**body, "segmentation": {"areas": {k: areas[k] for k in labels}}, "truncated": [*body["truncated"], "areas"]}
            body["truncated"] = list(dict.fromkeys(body["truncated"]))
    return body


def info_body(bundle: Bundle, *, source: str | None = None, cameras: list[dict] | None = None,
              version: int | None = None, update: dict | None = None, engine: tuple[str, str] | None = None) -> dict:
    """The retained birth message: what this device runs and how well it converted; ``version`` is
    the signed version of the installed update it runs (None: the bundle it was started with), and
    ``update`` its last model update and where that stands (``UpdateState.to_json()``); ``engine``
    the engine's class and what it computes on (:func:`edge_sdk.backends.describe`), so a fleet sees
    a Jetson that fell back to its CPU."""
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
        **({"engine": {"name": engine[0], "device": engine[1]}} if engine is not None else {}),
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
