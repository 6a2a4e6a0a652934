"""What the new tasks cost on the host beyond inference: decoding and the payload, next to the engine's time.

For each task a bundle converted for x86-cpu (int8, LiteRT):

  semantic    the tiny segmenter (``edge_sdk.samples.segmenter``, 64 x 64 input, [1, 64, 64, 5] softmax)
  landmarks   the landmark network (``edge_sdk.samples.posenet``, 64 x 64 input, [1, 6])
  instances   the tests' Ultralytics-layout instance segmentation ONNX (160 x 160, [1, 40, 400] + [1, 32, 40, 40])

run by ``Pipeline.infer`` on 640 x 480 rendered frames. Per frame: the engine's inference time, the
decode (dequantize, decoder: class map or masks and keypoints in source-frame pixels, filters), and
the payload: ``json.dumps(FrameResult.to_json(masks=...))`` with polygons (the default on the wire)
and with COCO RLE. The ratio is (decode + payload) / inference; the target is 20 % at most, so the
host's share stays small next to the accelerator's. The networks here are tiny (their inference
takes well under a millisecond on a desktop CPU), which makes the ratio a hard case: a production
model's inference is 10-100x longer while decode and payload stay the same for the same frame.

The two networks are trained (about a minute) and the three bundles converted once, in a child process
(the ``[convert]`` extra), and cached in ``benchmarks/results/cache/tasks/``. Prints a Markdown table
and writes it to ``benchmarks/results/tasks_bench.md``.

    .venv/bin/python benchmarks/tasks_bench.py            # 200 frames per task
    .venv/bin/python benchmarks/tasks_bench.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import common
import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS_FILE = HERE / "results" / "tasks_bench.md"
CACHE = HERE / "results" / "cache" / "tasks"
PROFILE = "x86-cpu"
TASKS = ("semantic", "landmarks", "instances")
TARGET_RATIO = 0.20


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- making the bundles (child process: TensorFlow stays out of the measuring one) -------------------

def make_bundles(folder: Path) -> None:
    """Train both networks, build the instance ONNX, and convert the three bundles into ``folder``."""
    sys.path.insert(0, str(ROOT / "tests"))
    from support.models import onnx_instance_seg

    from edge_sdk.converters import convert
    from edge_sdk.samples import posenet, segmenter, shapes

    work = folder / "work"
    work.mkdir(parents=True, exist_ok=True)
    seg = segmenter.train(*segmenter.training_data(1500, seed=1), epochs=9)
    seg.save(work / "segmenter.keras")
    images, points, _ = posenet.training_data(1200, seed=1)
    posenet.train(images, points, epochs=8).save(work / "landmarks.keras")
    onnx = onnx_instance_seg.yolov8_seg_onnx(work / "instances.onnx", seg)
    side = segmenter.INPUT_SIZE
    sets = {
        "semantic": shapes.write_semantic(work / "semantic", 60, seed=2, photos=shapes.TRAIN_PHOTOS, width=side, height=side),
        "landmarks": shapes.write_yolo_pose(work / "landmarks", 60, seed=2, photos=shapes.TRAIN_PHOTOS, width=side, height=side),
        "instances": shapes.write_yolo_seg(work / "instances", 60, seed=2, photos=shapes.TRAIN_PHOTOS),
    }
    sources = {"semantic": (work / "segmenter.keras", {}),
               "landmarks": (work / "landmarks.keras", {"task": "pose", "keypoints": len(shapes.KEYPOINT_NAMES)}),
               "instances": (onnx, {})}
    for task, (source, options) in sources.items():
        labels = sets[task] / "classes.txt"
        convert(source, profile=PROFILE, out=folder / task, calib=sets[task], labels=labels, min_calib=50, **options)


def bundles(*, log) -> dict[str, Path]:
    from edge_sdk.bundle import open_bundle

    try:
        for task in TASKS:
            open_bundle(CACHE / task)
        log(f"reusing bundles in {CACHE}")
    except Exception:  # noqa: BLE001 - any missing or unreadable cache is rebuilt
        import shutil

        shutil.rmtree(CACHE, ignore_errors=True)
        common.cached_bundle(CACHE / TASKS[0], [str(Path(__file__).resolve()), "--make", str(CACHE)], log=log,
                             what="task bundles")
    return {task: CACHE / task for task in TASKS}


# -- measuring ---------------------------------------------------------------------------------------

def frames(task: str, count: int, *, seed: int) -> list[np.ndarray]:
    """640 x 480 scenes on held-out photographs: shapes for the segmenters, one triangle for landmarks."""
    from edge_sdk.samples import shapes

    rng = np.random.default_rng(seed)
    photos = shapes.photographs(shapes.HELD_OUT_PHOTOS)
    if task == "landmarks":
        return [shapes.pose_scene(rng, photos, width=640, height=480)[0] for _ in range(count)]
    return [shapes.instance_scene(rng, photos, width=640, height=480, min_size=0.15, max_size=0.4)[0]
            for _ in range(count)]


def measure(bundle: Path, images: list[np.ndarray], *, warmup: int = 10) -> dict[str, list[float]]:
    """Per frame, in ms: inference, decode, and the payload in polygon and RLE form; plus payload bytes."""
    from edge_sdk.config import RunConfig
    from edge_sdk.pipeline import open_pipeline

    pipeline = open_pipeline(bundle, config=RunConfig(threshold=0.25))
    out: dict[str, list[float]] = {"infer": [], "decode": [], "polygon": [], "rle": [], "bytes_polygon": [], "bytes_rle": [],
                                   "objects": []}
    for i, frame in enumerate([*images[:warmup], *images]):
        result = pipeline.infer(frame)
        costs = {}
        for fmt in ("polygon", "rle"):
            t0 = time.perf_counter()
            text = json.dumps(result.to_json(masks=fmt))
            costs[fmt] = ((time.perf_counter() - t0) * 1e3, len(text))
        if i < warmup:
            continue
        out["infer"].append(result.timings_ms["infer"])
        out["decode"].append(result.timings_ms["decode"])
        for fmt, (ms, size) in costs.items():
            out[fmt].append(ms)
            out[f"bytes_{fmt}"].append(size)
        out["objects"].append(len(result.detections) if result.segmentation is None
                              else len(result.segmentation.areas()))
    return out


def machine_line() -> str:
    from importlib.metadata import version

    libs = ", ".join(f"{d} {version(d)}" for d in ("numpy", "opencv-python-headless", "ai-edge-litert")
                     if _installed(d))
    return (f"machine: {common.cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}; "
            f"{common.cpu_flags()}; python {platform.python_version()}, {libs}")


def _installed(dist: str) -> bool:
    from importlib.metadata import PackageNotFoundError, version

    try:
        version(dist)
        return True
    except PackageNotFoundError:
        return False


def render(results: dict[str, dict[str, list[float]]], *, count: int) -> str:
    med = statistics.median
    lines = ["# tasks_bench", "",
             f"{PROFILE} int8 bundles (LiteRT), `Pipeline.infer` on {count} rendered 640 x 480 frames per task; "
             "medians in ms per frame. Payload = `json.dumps(FrameResult.to_json(masks=...))`. "
             f"Ratio = (decode + polygon payload) / inference, target <= {TARGET_RATIO:.0%}.", "",
             machine_line(), "",
             "| task | objects/frame | inference | decode | payload polygon | payload RLE | bytes polygon | bytes RLE "
             "| ratio | within | inference that makes it 20 % |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for task, r in results.items():
        host = med(r["decode"]) + med(r["polygon"])
        ratio = host / med(r["infer"])
        lines.append(f"| {task} | {statistics.mean(r['objects']):.1f} | {med(r['infer']):.3f} | {med(r['decode']):.3f} | "
                     f"{med(r['polygon']):.3f} | {med(r['rle']):.3f} | {med(r['bytes_polygon']):.0f} | "
                     f"{med(r['bytes_rle']):.0f} | {ratio:.0%} | {'yes' if ratio <= TARGET_RATIO else 'no'} | "
                     f"{host / TARGET_RATIO:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 frames per task")
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--make", type=Path, help=argparse.SUPPRESS)  # child process: build the bundles there
    args = parser.parse_args()
    if args.make is not None:
        make_bundles(args.make)
        return
    count = 20 if args.quick else args.frames
    paths = bundles(log=log)
    results = {}
    for task in TASKS:
        log(f"{task}: {count} frames")
        results[task] = measure(paths[task], frames(task, count, seed=5))
    text = render(results, count=count)
    print(text)
    if not args.quick:
        common.write_results(RESULTS_FILE, text, log=log)


if __name__ == "__main__":
    main()
