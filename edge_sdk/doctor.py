"""``edge-sdk doctor``: what this machine can run, checked rather than guessed."""

from __future__ import annotations

import glob
import importlib
import platform
import sys
from dataclasses import dataclass

from edge_sdk.errors import EdgeSDKError


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def _module_version(name: str) -> Check:
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # an engine package broken on this board must not stop the report
        return Check(name, False, f"not importable ({type(exc).__name__})")
    return Check(name, True, str(getattr(module, "__version__", "installed")))


def _openvino_devices() -> Check:
    try:
        import openvino as ov

        devices = ov.Core().available_devices
    except Exception as exc:
        return Check("openvino devices", False, f"unavailable ({type(exc).__name__})")
    return Check("openvino devices", bool(devices), ", ".join(devices) or "none")


def _edgetpu() -> Check:
    from edge_sdk.backends.edgetpu import load_edgetpu_delegate

    try:
        load_edgetpu_delegate()
    except EdgeSDKError as exc:
        return Check("edge tpu", False, str(exc))
    return Check("edge tpu", True, "delegate loaded and a device answered")


def _opencv() -> list[Check]:
    import cv2

    backends = [cv2.videoio_registry.getBackendName(b) for b in cv2.videoio_registry.getBackends()]
    # The back-end registry lists GStreamer even when the build lacks it; the build summary does not.
    lines = [line for line in cv2.getBuildInformation().splitlines() if line.strip().startswith("GStreamer:")]
    gstreamer = bool(lines) and "YES" in lines[0].upper()
    return [
        Check("opencv", True, f"{cv2.__version__}; video back-ends: {', '.join(backends)}"),
        Check("gstreamer in opencv", bool(gstreamer), "yes" if gstreamer else "no (CSI pipelines need an OpenCV built with GStreamer)"),
    ]


def _cameras() -> Check:
    found = sorted(glob.glob("/dev/video*"))
    try:
        importlib.import_module("picamera2")
        found.append("picamera2")
    except Exception:
        pass
    return Check("cameras", bool(found), ", ".join(found) or "none found")


def _bundle(path) -> list[Check]:
    from edge_sdk.backends import open_engine
    from edge_sdk.bundle import open_bundle

    try:
        bundle = open_bundle(path)
    except EdgeSDKError as exc:
        return [Check("bundle", False, str(exc))]
    checks = [Check("bundle", True, f"{bundle.manifest.name}: {bundle.manifest.target.value}/{bundle.manifest.precision.value}, verified")]
    try:
        open_engine(bundle)
    except EdgeSDKError as exc:
        checks.append(Check("can run bundle", False, str(exc)))
    else:
        checks.append(Check("can run bundle", True, f"its {bundle.manifest.target.value} engine loads the model here"))
    return checks


def diagnose(bundle=None) -> list[Check]:
    checks = [
        Check("python", sys.version_info >= (3, 10), f"{platform.python_version()} on {platform.machine()} ({platform.system()})"),
        _module_version("numpy"),
        _module_version("ai_edge_litert"),
        _module_version("tflite_runtime"),
        _module_version("openvino"),
        _openvino_devices(),
        _edgetpu(),
        *_opencv(),
        _cameras(),
        Check("tensorflow on this device", "tensorflow" not in sys.modules, "not loaded by the runtime"),
    ]
    if bundle is not None:
        checks.extend(_bundle(bundle))
    return checks
