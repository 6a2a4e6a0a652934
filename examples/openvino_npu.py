"""Intel Core Ultra NPU through OpenVINO: run an OpenVINO bundle on the NPU, or say which device runs it instead.

Board: a PC with an Intel Core Ultra processor (Meteor Lake, Lunar Lake, Arrow Lake), whose NPU
("Intel AI Boost") Linux drives with the intel_vpu kernel module (kernel 6.6 or newer, e.g.
Ubuntu 24.04). Build the bundle on a workstation:

    edge-sdk convert model.keras --profile intel-npu --out bundle --calib calib/

Install on the device. The NPU's user-space driver comes as .deb files from Intel's
linux-npu-driver releases (https://github.com/intel/linux-npu-driver/releases: intel-driver-compiler-npu,
intel-fw-npu, intel-level-zero-npu, built for your Ubuntu release), plus Level Zero:

    sudo apt install -y libtbb12 libze1
    sudo dpkg -i intel-driver-compiler-npu_*.deb intel-fw-npu_*.deb intel-level-zero-npu_*.deb
    sudo usermod -aG render $USER                            # /dev/accel/accel0 belongs to group render; log in again
    pip install "edge-sdk[openvino]"

Run:

    python openvino_npu.py bundle/                           # camera 0, on the NPU when there is one
    python openvino_npu.py bundle/ --source clip.mp4 --max-frames 50 --fallback-device GPU

It lists the devices OpenVINO sees, runs on the NPU if it is one of them, and otherwise on
--fallback-device (CPU by default), saying so. The first start on the NPU compiles the model for
it, which takes a few seconds.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import NoReturn

from edge_sdk import ConfigError, EdgeSDKError, EngineError
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
    parser = Parser(prog="openvino_npu", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path, help="bundle folder built with --profile intel-npu (or intel-cpu/gpu)")
    parser.add_argument("--source", default="0", help="camera index, /dev/videoN, video file, rtsp:// URL, folder (0)")
    parser.add_argument("--fallback-device", type=str.upper, choices=("CPU", "GPU", "AUTO"), default="CPU",
                        help="device to use when there is no NPU (CPU)")
    parser.add_argument("--fps", type=positive_float, help="process at most this many frames per second")
    parser.add_argument("--threshold", type=float, help="minimum score to report (0.25)")
    parser.add_argument("--max-frames", type=positive_int, help="stop after this many frames")
    parser.add_argument("--json", action="store_true", help="print one JSON object per frame instead of a text line")
    return parser.parse_args(argv)


def list_devices() -> dict[str, str]:
    """OpenVINO's devices: short name (CPU, GPU.0, NPU, ...) -> full name."""
    try:
        import openvino as ov
    except ImportError as exc:
        raise EngineError('OpenVINO is not installed: pip install "edge-sdk[openvino]"') from exc
    core = ov.Core()
    return {device: core.get_property(device, "FULL_DEVICE_NAME") for device in core.available_devices}


def choose_device(devices: list[str], fallback: str) -> str:
    """NPU when OpenVINO sees one, else the fallback, which must exist (AUTO always does)."""
    families = {d.split(".")[0] for d in devices}  # several GPUs show up as GPU.0, GPU.1
    if "NPU" in families:
        return "NPU"
    if fallback != "AUTO" and fallback not in families:
        found = ", ".join(devices) or "none"
        raise ConfigError(f"no NPU, and the fallback device {fallback} is not available either (found: {found})")
    return fallback


def run(args: argparse.Namespace) -> None:
    parse_spec(args.source)  # a mistyped file or URL fails here, before the model loads
    manifest = open_bundle(args.bundle).manifest
    if manifest.target.value != "openvino":
        raise EngineError(f"{args.bundle} is a {manifest.target.value} bundle; convert it with --profile intel-npu")
    devices = list_devices()
    device = choose_device(list(devices), args.fallback_device)
    print("OpenVINO devices:", file=sys.stderr)
    for name, full_name in devices.items():
        print(f"  {name:<6} {full_name}", file=sys.stderr)
    if device == "NPU":
        print("device: NPU", file=sys.stderr)
    else:
        print(f"device: no NPU found (no driver, or not a Core Ultra) -> falling back to {device} (--fallback-device)",
              file=sys.stderr)
    if manifest.profile.device != device:
        print(f"note: the bundle was built for {manifest.profile.name} (device {manifest.profile.device})", file=sys.stderr)
    config = load_config(
        None, source=args.source, fps=args.fps, threshold=args.threshold, max_frames=args.max_frames, device=device,
    )
    # Opening compiles the IR for the device: slow on the first NPU start (the driver caches it).
    with Runtime(args.bundle, config, notify=lambda line: print(line, file=sys.stderr)) as runtime:
        try:
            for result in runtime.results():
                print(json.dumps(result.to_json()) if args.json else describe(result), flush=True)
        finally:
            stats = runtime.stats().cameras[0].stats
            print(f"[{device}] {stats.frames_done} frames, {stats.fps:.1f} fps, "
                  f"inference p50 {stats.infer_ms_p50 or 0:.1f} ms, {stats.detections} detections", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a service stop ends the run cleanly
    try:
        run(args)
    except EdgeSDKError as exc:
        print(f"openvino_npu: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass  # Ctrl-C or a service stop is how a camera run normally ends
    return 0


if __name__ == "__main__":
    sys.exit(main())
