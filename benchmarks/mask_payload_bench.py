"""Masks on the wire: what encoding a frame's masks costs the device, and what it weighs.

A 640x480 frame with 5, 20 and 60 instance masks of generated shapes (circles, squares, triangles,
stars, 20-250 px, ``edge_sdk.samples.shapes``), and a semantic map of 4 classes. Per frame:

1. COCO RLE of every mask: ours (``edge_sdk.masks.encode_rle``, from the mask's box) against
   pycocotools' ``encode`` (from the full frame, in Fortran order, which it needs; the copy is
   not counted); the strings are checked identical.
2. Polygons (``encode_polygons``, 100 vertices per mask) and their IoU with the masks.
3. The detections message (``payloads.detections_body``) in each format: build time and bytes.

Median of 7 rounds. Prints Markdown and writes ``benchmarks/results/mask_payload_bench.md``.

    .venv/bin/python benchmarks/mask_payload_bench.py     # ~20 s
"""

from __future__ import annotations

import platform
import statistics
import time
from pathlib import Path

import numpy as np

from edge_sdk.masks import decode_rle, encode_polygons, encode_rle, polygons_to_bitmap
from edge_sdk.mqtt import payloads
from edge_sdk.results import BBox, Detection, FrameResult, Mask, Segmentation
from edge_sdk.samples import shapes

HERE = Path(__file__).resolve().parent
RESULTS_FILE = HERE / "results" / "mask_payload_bench.md"
W, H = 640, 480
ROUNDS = 7


def shape_fulls(rng, count: int) -> list[np.ndarray]:
    out = []
    while len(out) < count:
        shape = shapes.Shape(int(rng.integers(4)), rng.uniform(0, W), rng.uniform(0, H), rng.uniform(20, 250),
                             rng.uniform(0, 360), (0, 0, 0), rng.uniform(0.6, 1.6))
        full = shapes._mask(shape, H, W) > 127
        if full.sum() >= 50:
            out.append(full)
    return out


def timed(fn) -> float:
    times = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    from pycocotools import mask as coco

    rng = np.random.default_rng(0)
    lines = [f"# Mask payloads ({platform.processor() or platform.machine()}, median of {ROUNDS})", "",
             "| frame | RLE ours ms | RLE pycocotools ms | polygons ms | min IoU | polygon msg | KB | rle msg | KB | summary msg | KB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for count in (5, 20, 60):
        fulls = shape_fulls(rng, count)
        masks = [Mask.from_full(f) for f in fulls]
        fortran = [np.asfortranarray(f.astype(np.uint8)) for f in fulls]
        for mask, f in zip(masks, fortran):
            assert encode_rle(mask)["counts"] == coco.encode(f)["counts"].decode()
            assert np.array_equal(decode_rle(encode_rle(mask)), f.astype(bool))
        ours = timed(lambda: [encode_rle(m) for m in masks])
        theirs = timed(lambda: [coco.encode(f) for f in fortran])
        polys = timed(lambda: [encode_polygons(m, vertices=100) for m in masks])
        worst = min(np.count_nonzero(polygons_to_bitmap(encode_polygons(m, vertices=100), (W, H)) & f)
                    / np.count_nonzero(polygons_to_bitmap(encode_polygons(m, vertices=100), (W, H)) | f)
                    for m, f in zip(masks, fulls))
        result = FrameResult(0, 0.0, (W, H), tuple(Detection(0, "shape", 0.9, BBox(0, 0, 1, 1), mask=m) for m in masks),
                             camera="main")
        row = [f"{count} instances", f"{ours:.2f}", f"{theirs:.2f}", f"{polys:.2f}", f"{worst:.3f}"]
        for fmt in ("polygon", "rle", "summary"):
            ms = timed(lambda: payloads.detections_body(result, masks=fmt))
            row += [f"{ms:.2f} ms", f"{payloads.size(payloads.detections_body(result, masks=fmt)) / 1024:.1f}"]
        lines.append("| " + " | ".join(row) + " |")
    class_map = np.zeros((H, W), np.uint8)
    class_map[300:] = 1
    for i, f in enumerate(shape_fulls(rng, 8)):
        class_map[f] = 2 + i % 2
    seg = FrameResult(0, 0.0, (W, H), (), camera="main", segmentation=Segmentation(class_map, ("background", "road", "person", "car")))
    row = ["semantic, 4 classes", "", "", "", ""]
    for fmt in ("polygon", "rle", "summary"):
        ms = timed(lambda: payloads.detections_body(seg, masks=fmt))
        row += [f"{ms:.2f} ms", f"{payloads.size(payloads.detections_body(seg, masks=fmt)) / 1024:.1f}"]
    lines.append("| " + " | ".join(row) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS_FILE.write_text(text)


if __name__ == "__main__":
    main()
