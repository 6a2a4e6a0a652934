"""``edge-sdk bench``: how fast this machine runs a bundle's engine on a ready input."""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from edge_sdk.backends import describe
from edge_sdk.model import InputAdapter


@dataclass(frozen=True)
class BenchResult:
    engine: str
    delegate: str
    frames: int
    threads: int | None
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    fps: float
    peak_rss_mb: float

    def to_json(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


def run_bench(pipeline, *, frames: int = 200, warmup: int = 10) -> tuple[BenchResult, np.ndarray]:
    """Time ``frames`` engine invocations on one prepared input; returns the summary and every latency (ms)."""
    spec = pipeline.bundle.manifest.preprocessing
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, size=(spec.height * 2, spec.width * 2, 3), dtype=np.uint8)
    tensor, _ = InputAdapter(spec, pipeline.engine.input_specs()[0])(frame)
    for _ in range(warmup):
        pipeline.engine.run([tensor])
    latencies = np.empty(frames, dtype=np.float64)
    for i in range(frames):
        t0 = time.perf_counter()
        pipeline.engine.run([tensor])
        latencies[i] = (time.perf_counter() - t0) * 1e3
    engine, delegate = describe(pipeline.engine)
    result = BenchResult(
        engine=engine, delegate=delegate, frames=frames, threads=pipeline.config.threads or pipeline.bundle.manifest.profile.threads,
        p50_ms=float(np.percentile(latencies, 50)), p90_ms=float(np.percentile(latencies, 90)),
        p99_ms=float(np.percentile(latencies, 99)), mean_ms=float(latencies.mean()),
        fps=float(1000.0 / latencies.mean()), peak_rss_mb=peak_rss_mb(),
    )
    return result, latencies


def histogram_png(latencies: np.ndarray, *, title: str) -> bytes:
    """A latency histogram drawn with OpenCV (no plotting library on devices)."""
    width, height, margin = 640, 360, 48
    counts, edges = np.histogram(latencies, bins=40)
    image = np.full((height, width, 3), 255, np.uint8)
    plot_w, plot_h = width - 2 * margin, height - 2 * margin
    bar_w = plot_w / len(counts)
    top = max(1, counts.max())
    for i, count in enumerate(counts):
        x1 = int(margin + i * bar_w)
        y1 = int(height - margin - plot_h * count / top)
        cv2.rectangle(image, (x1, y1), (int(x1 + bar_w) - 1, height - margin), (200, 120, 40), -1)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.line(image, (margin, height - margin), (width - margin, height - margin), (0, 0, 0), 1)
    cv2.putText(image, title[:70], (margin, 28), font, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    for value, x in ((edges[0], margin), (edges[-1], width - margin - 60)):
        cv2.putText(image, f"{value:.2f} ms", (x, height - margin + 20), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    for q in (50, 99):
        v = np.percentile(latencies, q)
        x = int(margin + plot_w * (v - edges[0]) / max(1e-9, edges[-1] - edges[0]))
        cv2.line(image, (x, margin), (x, height - margin), (0, 0, 200), 1)
        cv2.putText(image, f"p{q} {v:.2f}", (min(x + 3, width - 90), margin + 14 * (q // 50)), font, 0.4, (0, 0, 200), 1, cv2.LINE_AA)
    ok, encoded = cv2.imencode(".png", image)
    return encoded.tobytes()
