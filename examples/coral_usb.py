"""Coral USB Accelerator: run an Edge TPU bundle on a camera and say whether the Edge TPU really ran it.

Board: any Linux x86-64 or 64-bit Arm host (Raspberry Pi 4/5, a PC) with a Coral USB Accelerator
plugged into a USB 3 port. Build the bundle on an x86-64 Linux workstation, where Coral's
edgetpu_compiler exists:

    edge-sdk convert model.keras --profile coral-usb --out bundle --calib calib/

Install on the device (the Edge TPU runtime comes from Coral's apt repository; re-plug the stick
afterwards so its udev rule applies):

    curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg \
        | sudo gpg --dearmor -o /usr/share/keyrings/coral-edgetpu.gpg
    echo "deb [signed-by=/usr/share/keyrings/coral-edgetpu.gpg] https://packages.cloud.google.com/apt coral-edgetpu-stable main" \
        | sudo tee /etc/apt/sources.list.d/coral-edgetpu.list
    sudo apt-get update && sudo apt-get install -y libedgetpu1-std
    pip install edge-sdk

Run:

    python coral_usb.py bundle/                              # camera 0 (/dev/video0)
    python coral_usb.py bundle/ --source clip.mp4 --max-frames 50
    python coral_usb.py bundle/ --source clip.mp4 --cpu-fallback   # no stick: the same model on the CPU

Without a stick and without --cpu-fallback it stops with one line saying what is missing. With
--cpu-fallback it runs the Edge-TPU-ready (full-integer, uncompiled) model.tflite on the CPU and
says so, also on its summary line: the results are the model's, the speed is the CPU's.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import NoReturn

from edge_sdk import EdgeSDKError, EngineError
from edge_sdk.bundle import open_bundle
from edge_sdk import FrameResult, Runtime
from edge_sdk.config import load_config
from edge_sdk.sources import parse_spec


class Parser(argparse.ArgumentParser):
    """argparse whose mistakes are one line on stderr and exit code 2, like the edge-sdk CLI."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def describe(result: FrameResult) -> str:
    parts = []
    for d in result.detections:
        text = f"{d.label} {d.score:.2f}"
        if d.box is not None:
            x1, y1, x2, y2 = d.box.to_pixels(*result.frame_size)
            text += f" at ({x1},{y1})-({x2},{y2})"
        parts.append(text)
    return f"frame {result.index}: {', '.join(parts) or '-'}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = Parser(prog="coral_usb", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path, help="bundle folder built with --profile coral-usb")
    parser.add_argument("--source", default="0", help="camera index, /dev/videoN, video file, rtsp:// URL, folder (0)")
    parser.add_argument("--cpu-fallback", action="store_true", help="no Edge TPU found: run the same model on the CPU")
    parser.add_argument("--fps", type=positive_float, help="process at most this many frames per second")
    parser.add_argument("--threshold", type=float, help="minimum score to report (0.25)")
    parser.add_argument("--max-frames", type=positive_int, help="stop after this many frames")
    parser.add_argument("--json", action="store_true", help="print one JSON object per frame instead of a text line")
    return parser.parse_args(argv)


def check_bundle(path: Path) -> bool:
    """Refuse a bundle for another target; True when it holds a model compiled for the Edge TPU."""
    manifest = open_bundle(path).manifest
    if manifest.target.value != "edgetpu":
        raise EngineError(f"{path} is a {manifest.target.value} bundle; convert the model with --profile coral-usb")
    report = manifest.report.edgetpu if manifest.report is not None else None
    return bool(report and report.compiled)


def run(args: argparse.Namespace) -> None:
    compiled = check_bundle(args.bundle)
    config = load_config(
        None, source=args.source, fps=args.fps, threshold=args.threshold, max_frames=args.max_frames,
        cpu_fallback=args.cpu_fallback,
    )
    parse_spec(config.source)  # a mistyped file or URL fails here, before the model loads
    runtime = Runtime(args.bundle, config, notify=lambda line: print(line, file=sys.stderr))
    try:
        runtime.open()  # opens the Edge TPU once; every camera of a run shares it
    except EngineError as exc:
        if args.cpu_fallback:
            raise
        raise EngineError(f"{exc} (or add --cpu-fallback to run the same model on the CPU)") from exc
    with runtime:
        engine = runtime.pipeline.engine
        # EdgeTPUEngine records whether the libedgetpu delegate loaded or the CPU fallback took over.
        on_cpu = bool(getattr(engine, "fallback", False))
        if on_cpu:
            where = "CPU FALLBACK"
            print("Edge TPU: not available -> running the Edge-TPU-ready model.tflite on the CPU (--cpu-fallback).\n"
                  "  Same int8 model, so the same results to within rounding; speeds are CPU speeds, not Edge TPU speeds.\n"
                  f"  why: {engine.fallback_reason}", file=sys.stderr)
        else:
            where = "EDGE TPU" if compiled else "CPU, UNCOMPILED MODEL"
            print("Edge TPU: delegate loaded (libedgetpu), a Coral answered", file=sys.stderr)
            if not compiled:
                # The delegate only takes the custom op edgetpu_compiler makes; an uncompiled model runs whole on the CPU.
                print("warning: this bundle was converted with --no-compile, so every op runs on the CPU anyway; "
                      "convert again where edgetpu_compiler is installed (x86-64 Linux)", file=sys.stderr)
        try:
            for result in runtime.results():
                print(json.dumps(result.to_json()) if args.json else describe(result), flush=True)
        finally:
            stats = runtime.stats().cameras[0].stats
            print(f"[{where}] {stats.frames_done} frames, {stats.fps:.1f} fps, "
                  f"inference p50 {stats.infer_ms_p50 or 0:.1f} ms, {stats.detections} detections", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a service stop ends the run cleanly
    try:
        run(args)
    except EdgeSDKError as exc:
        print(f"coral_usb: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass  # Ctrl-C or a service stop is how a camera run normally ends
    return 0


if __name__ == "__main__":
    sys.exit(main())
