"""``edge-sdk doctor``: what this machine can run, checked rather than guessed.

Every check names the README troubleshooting entry that explains how to fix it when it fails.
"""

from __future__ import annotations

import glob
import importlib
import platform
import sys
from dataclasses import dataclass, field
from enum import Enum

from edge_sdk.errors import EdgeSDKError

README = "README"  # pointers read "see README#<anchor>": a heading of README.md, anchored as GitHub renders it


class Trouble(str, Enum):
    """A README troubleshooting entry; the value is the GitHub anchor its heading produces."""

    PYTHON = "python-older-than-310"
    NUMPY = "numpy-1x-and-2x-modules-mixed"
    ENGINE = "no-inference-engine-importable"
    OPENVINO_DEVICE = "openvino-device-not-listed"
    EDGE_TPU = "edge-tpu-not-found"
    GSTREAMER = "gstreamer-missing-from-opencv"
    CAMERA = "camera-not-found"
    TENSORFLOW = "tensorflow-loaded-on-the-device"
    BUNDLE = "bundle-refused"
    OTHER_TARGET = "bundle-built-for-another-target"
    ONNX_PROVIDER = "onnx-runtime-provider-missing"
    PLUGIN = "engine-plugin-broken"

    @property
    def pointer(self) -> str:
        return f"see {README}#{self.value}"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    see: Trouble = field(kw_only=True)
    """The README entry for this check when it fails; required, so no failed check goes without one."""

    @property
    def pointer(self) -> str:
        """``see README#anchor`` for a failed check, ``""`` for a passed one."""
        return "" if self.ok else self.see.pointer


def _module_version(name: str, *, see: Trouble) -> Check:
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # an engine package broken on this board must not stop the report
        return Check(name, False, f"not importable ({type(exc).__name__})", see=see)
    return Check(name, True, str(getattr(module, "__version__", "installed")), see=see)


def _openvino_devices() -> Check:
    try:
        import openvino as ov
    except Exception as exc:
        return Check("openvino devices", False, f"unavailable ({type(exc).__name__})", see=Trouble.ENGINE)
    try:
        devices = ov.Core().available_devices
    except Exception as exc:
        return Check("openvino devices", False, f"unavailable ({type(exc).__name__})", see=Trouble.OPENVINO_DEVICE)
    return Check("openvino devices", bool(devices), ", ".join(devices) or "none", see=Trouble.OPENVINO_DEVICE)


def _onnxruntime() -> list[Check]:
    from edge_sdk.backends import onnxrt

    version = onnxrt.version()
    if version is None:
        return [Check("onnxruntime", False, "not installed (pip install \"edge-sdk[onnx]\")", see=Trouble.ENGINE)]
    providers = onnxrt.available_providers()
    return [Check("onnxruntime", True, version, see=Trouble.ENGINE),
            Check("onnxruntime providers", bool(providers), ", ".join(providers) or "none", see=Trouble.ONNX_PROVIDER)]


def plugins() -> list[Check]:
    """One check per installed engine plugin (entry-point group edge_sdk.engines): imports, has every method."""
    from edge_sdk.backends import plugins as registry

    found = registry.discover()
    if not found:
        return [Check("engine plugins", True, f"none installed (entry-point group {registry.GROUP})", see=Trouble.PLUGIN)]
    checks = []
    for plugin in found:
        problem = registry.check(plugin.name)
        where = f"{plugin.value}" + (f" from {plugin.distribution}" if plugin.distribution else "")
        checks.append(Check(f"engine plugin {plugin.name}", problem is None, problem or f"{where}, reads {registry.consumes(plugin.name)}",
                            see=Trouble.PLUGIN))
    return checks


def _edgetpu() -> Check:
    from edge_sdk.backends.edgetpu import load_edgetpu_delegate

    try:
        load_edgetpu_delegate()
    except EdgeSDKError as exc:
        return Check("edge tpu", False, str(exc), see=Trouble.EDGE_TPU)
    return Check("edge tpu", True, "delegate loaded and a device answered", see=Trouble.EDGE_TPU)


def _opencv() -> list[Check]:
    try:
        import cv2
    except Exception as exc:  # a system OpenCV built for NumPy 1 fails to import under NumPy 2
        first = (str(exc).strip().splitlines() or [""])[0][:120]
        return [
            Check("opencv", False, f"not importable ({type(exc).__name__}: {first})", see=Trouble.NUMPY),
            Check("gstreamer in opencv", False, "unknown: OpenCV does not import", see=Trouble.GSTREAMER),
        ]

    backends = [cv2.videoio_registry.getBackendName(b) for b in cv2.videoio_registry.getBackends()]
    # The back-end registry lists GStreamer even when the build lacks it; the build summary does not.
    lines = [line for line in cv2.getBuildInformation().splitlines() if line.strip().startswith("GStreamer:")]
    gstreamer = bool(lines) and "YES" in lines[0].upper()
    return [
        Check("opencv", True, f"{cv2.__version__}; video back-ends: {', '.join(backends)}", see=Trouble.NUMPY),
        Check(
            "gstreamer in opencv",
            bool(gstreamer),
            "yes" if gstreamer else "no (CSI pipelines need an OpenCV built with GStreamer)",
            see=Trouble.GSTREAMER,
        ),
    ]


def _cameras() -> Check:
    found = sorted(glob.glob("/dev/video*"))
    try:
        importlib.import_module("picamera2")
        found.append("picamera2")
    except Exception:
        pass
    return Check("cameras", bool(found), ", ".join(found) or "none found", see=Trouble.CAMERA)


def _bundle(path) -> list[Check]:
    from edge_sdk.backends import open_engine
    from edge_sdk.bundle import open_bundle

    try:
        bundle = open_bundle(path)
    except EdgeSDKError as exc:
        return [Check("bundle", False, str(exc), see=Trouble.BUNDLE)]
    manifest = bundle.manifest
    checks = [
        Check("bundle", True, f"{manifest.name}: {manifest.target.value}/{manifest.precision.value}, verified", see=Trouble.BUNDLE)
    ]
    try:
        engine = open_engine(bundle)
    except EdgeSDKError as exc:
        checks.append(Check("can run bundle", False, str(exc), see=Trouble.OTHER_TARGET))
    else:
        provider = getattr(engine, "provider", None)
        using = f" ({provider})" if provider else ""
        checks.append(
            Check("can run bundle", True, f"its {manifest.target.value} engine loads the model here{using}", see=Trouble.OTHER_TARGET)
        )
    return checks


def _tensorflow() -> Check:
    loaded = "tensorflow" in sys.modules
    detail = "loaded in this process, by code other than the runtime" if loaded else "not loaded by the runtime"
    return Check("tensorflow on this device", not loaded, detail, see=Trouble.TENSORFLOW)


def diagnose(bundle=None) -> list[Check]:
    checks = [
        Check(
            "python",
            sys.version_info >= (3, 10),
            f"{platform.python_version()} on {platform.machine()} ({platform.system()})",
            see=Trouble.PYTHON,
        ),
        _module_version("numpy", see=Trouble.NUMPY),
        _module_version("ai_edge_litert", see=Trouble.ENGINE),
        _module_version("tflite_runtime", see=Trouble.ENGINE),
        _module_version("openvino", see=Trouble.ENGINE),
        _openvino_devices(),
        *_onnxruntime(),
        _edgetpu(),
        *_opencv(),
        _cameras(),
        _tensorflow(),
        *plugins(),
    ]
    if bundle is not None:
        checks.extend(_bundle(bundle))
    return checks
