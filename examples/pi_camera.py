"""Raspberry Pi 4 / 5 camera: run an edge-sdk bundle on the Pi camera, print what it sees, optionally publish to MQTT.

Board: Raspberry Pi 4 Model B or Raspberry Pi 5 with a CSI camera (Camera Module 2/3, HQ),
Raspberry Pi OS Bookworm (64-bit). Build the bundle on a workstation for the board:

    edge-sdk convert model.keras --profile rpi5 --out bundle --calib calib/      # or --profile rpi4

Install on the Pi:

    sudo apt install -y python3-picamera2                   # libcamera and Picamera2 (preinstalled on most images)
    python3 -m venv --system-site-packages ~/edge && . ~/edge/bin/activate
    pip install edge-sdk "numpy<2"                          # Bookworm's Picamera2 is built against numpy 1.x

Without Picamera2 the script reads the camera through GStreamer's libcamerasrc instead, which
needs an OpenCV built with GStreamer (Debian's, not the PyPI wheel):

    sudo apt install -y gstreamer1.0-libcamera python3-opencv
    pip uninstall -y opencv-python-headless                 # so the venv sees Debian's OpenCV

Run:

    python pi_camera.py bundle/                             # the CSI camera, results on stdout
    python pi_camera.py bundle/ --broker mqtt://broker.lan --device-id porch   # and to MQTT
    python pi_camera.py bundle/ --source clip.mp4 --max-frames 50               # a video file instead

Works with any bundle (classifier or detector). Check the board first with `edge-sdk doctor bundle/`.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import NoReturn

from edge_sdk import EdgeSDKError, FrameResult, Runtime
from edge_sdk.config import load_config
from edge_sdk.sources import parse_spec

PI_PROFILES = ("rpi4", "rpi5")


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


def camera_source(width: int, height: int, fps: int) -> tuple[str, str]:
    """The source spec for the CSI camera, and why it was chosen."""
    try:
        import picamera2  # noqa: F401
    except ImportError:
        reason = "Picamera2 is not installed"
    except ValueError as exc:
        # A venv with numpy 2 next to Bookworm's Picamera2 (its simplejpeg is built for numpy 1)
        # fails here with "numpy.dtype size changed", not with an ImportError.
        reason = f"Picamera2 does not load with this numpy ({exc}); pip install 'numpy<2'"
    else:
        return "picamera2", "Picamera2 (libcamera)"
    # libcamerasrc gives NV12/YUV; videoconvert makes the BGR OpenCV expects, and an appsink that
    # keeps one buffer and drops the rest means we always infer on the newest frame.
    pipeline = (
        f"libcamerasrc ! video/x-raw,width={width},height={height},framerate={fps}/1 ! "
        "videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=1 sync=false"
    )
    return pipeline, f"GStreamer libcamerasrc, because {reason}"


def describe(result: FrameResult) -> str:
    """One human line per frame: label, score and, for detectors, the box in pixels."""
    parts = []
    for d in result.detections:
        text = f"{d.label} {d.score:.2f}"
        if d.box is not None:
            x1, y1, x2, y2 = d.box.to_pixels(*result.frame_size)
            text += f" at ({x1},{y1})-({x2},{y2})"
        parts.append(text)
    return f"frame {result.index}: {', '.join(parts) or '-'}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = Parser(prog="pi_camera", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path, help="bundle folder built for rpi4 or rpi5")
    parser.add_argument("--source", help="instead of the CSI camera: a video file, camera index, rtsp:// URL, folder, ...")
    parser.add_argument("--width", type=positive_int, default=640, help="camera width for the GStreamer path (640)")
    parser.add_argument("--height", type=positive_int, default=480, help="camera height for the GStreamer path (480)")
    parser.add_argument("--camera-fps", type=positive_int, default=30, help="camera frame rate for the GStreamer path (30)")
    parser.add_argument("--fps", type=positive_float, help="process at most this many frames per second")
    parser.add_argument("--threshold", type=float, help="minimum score to report (0.25)")
    parser.add_argument("--max-frames", type=positive_int, help="stop after this many frames")
    parser.add_argument("--config", type=Path, help="run.yaml with more settings (zones, mqtt: ...); flags win")
    parser.add_argument("--broker", help="also publish to this MQTT broker, e.g. mqtt://broker.lan:1883")
    parser.add_argument("--device-id", help="device id in MQTT topics (default: the host name)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per frame instead of a text line")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> None:
    config = load_config(
        args.config, source=args.source, fps=args.fps, threshold=args.threshold, max_frames=args.max_frames,
        broker=args.broker, device_id=args.device_id,
    )
    camera = None
    if config.source is None:
        spec, camera = camera_source(args.width, args.height, args.camera_fps)
        config = config.model_copy(update={"source": spec})
    parse_spec(config.source)  # a mistyped file or URL fails here, before the model loads
    if camera is not None:
        print(f"camera: {camera}", file=sys.stderr)
    # The Runtime opens the bundle (or the model update the fleet installed over it), the engine,
    # the camera and, with mqtt:, the fleet link; it says where it publishes on stderr.
    runtime = Runtime(args.bundle, config, notify=lambda line: print(line, file=sys.stderr))
    try:
        with runtime:
            manifest = runtime.pipeline.bundle.manifest
            print(f"model {manifest.name} ({manifest.target.value}/{manifest.precision.value}, {manifest.task.value}, "
                  f"built for {manifest.profile.name})", file=sys.stderr)
            if manifest.profile.name not in PI_PROFILES:
                # Not fatal: a tflite bundle runs anywhere, it is only tuned (threads, input size) for another board.
                print("note: this bundle was not built for rpi4/rpi5; convert with --profile rpi4 or rpi5", file=sys.stderr)
            for result in runtime.results():
                print(json.dumps(result.to_json()) if args.json else describe(result), flush=True)
    finally:
        # Leaving the with block closed the link: it waited up to 5 s for the broker to acknowledge
        # what was queued; the rest stays on disk for the next start.
        if runtime.cameras:
            stats = runtime.stats().cameras[0].stats
            summary = (f"{stats.frames_done} frames, {stats.fps:.1f} fps, "
                       f"inference p50 {stats.infer_ms_p50 or 0:.1f} ms, {stats.detections} detections")
            if runtime.link is not None:
                sent = runtime.link.publisher.stats()
                summary += f"; mqtt: {sent.acked} acknowledged, {sent.outbox_depth} kept for later"
            print(summary, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # systemd stops a service with SIGTERM; as an interrupt it runs the clean-up above, so the
    # broker hears 'offline' and queued results are flushed instead of waiting for the Last Will.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        run(args)
    except EdgeSDKError as exc:
        print(f"pi_camera: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass  # Ctrl-C or a service stop is how a camera run normally ends
    return 0


if __name__ == "__main__":
    sys.exit(main())
