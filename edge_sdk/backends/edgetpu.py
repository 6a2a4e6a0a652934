"""Coral Edge TPU engine: LiteRT with the libedgetpu delegate, optionally falling back to the CPU. Never TensorFlow."""

from __future__ import annotations

import ctypes
import platform
import re
from pathlib import Path
from types import MappingProxyType

import numpy as np

from edge_sdk.backends.litert import LiteRTEngine, interpreter_module
from edge_sdk.errors import ConfigError, EngineError

NAME = "edgetpu"
LIBRARIES = MappingProxyType({"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"})
COMPILED_OP = b"edgetpu-custom-op"  # the custom op edgetpu_compiler puts in model_edgetpu.tflite
# The delegate's "device" option: any, ":N" (N-th of any type), "usb", "usb:N", "pci", "pci:N".
_DEVICE = re.compile(r"^(usb|pci)?(:\d+)?$")
_INSTALL = (
    "add Coral's apt repository (deb https://packages.cloud.google.com/apt coral-edgetpu-stable main) and "
    "sudo apt-get install libedgetpu1-std"
)
_INSTALL_OTHER = "install the Edge TPU runtime from https://coral.ai/software/#edgetpu-runtime"


def delegate_library() -> str:
    """The libedgetpu file name for this operating system."""
    system = platform.system()
    try:
        return LIBRARIES[system]
    except KeyError as exc:
        raise EngineError(f"the Edge TPU runtime has no build for {system}") from exc


def _load_delegate_function():
    return interpreter_module().load_delegate


def _open_library(library: str) -> ctypes.CDLL:
    return ctypes.CDLL(library)


def load_edgetpu_delegate(*, device: str | None = None, library: str | None = None):
    """The libedgetpu delegate for ``device``; EngineError naming what is missing and how to install it."""
    library = library or delegate_library()
    install = _INSTALL if platform.system() == "Linux" else _INSTALL_OTHER
    try:
        # Checked here first: LiteRT's loader lets OSError and AttributeError escape and leaves a
        # half-built delegate whose finalizer then fails.
        handle = _open_library(library)
    except OSError as exc:
        raise EngineError(f"the Edge TPU runtime ({library}) is not installed: {install}") from exc
    if not hasattr(handle, "tflite_plugin_create_delegate"):
        raise EngineError(f"{library} is not a TFLite delegate library (no tflite_plugin_create_delegate)")
    load_delegate = _load_delegate_function()
    try:
        return load_delegate(library, {"device": device} if device else {})
    except ValueError as exc:
        # libedgetpu returns no delegate, without a message, when it cannot open a device.
        raise EngineError(
            f"no Edge TPU found{f' at {device}' if device else ''}: plug in the Coral USB Accelerator "
            f"(or check the PCIe driver), and make sure the udev rules from libedgetpu1-std are installed "
            f"(re-plug after installing)"
        ) from exc


def is_compiled(content: bytes) -> bool:
    """True for a model_edgetpu.tflite (holds the Edge TPU custom op, which plain LiteRT cannot run)."""
    return COMPILED_OP in content


class EdgeTPUEngine:
    """A LiteRT interpreter with the Edge TPU delegate; with ``cpu_fallback``, LiteRT on the CPU when there is no TPU.

    ``model`` is what runs on the TPU (normally model_edgetpu.tflite). The fallback runs
    ``cpu_model`` (the Edge-TPU-ready, uncompiled model.tflite) or ``model`` when it is uncompiled.
    ``self.fallback`` tells which happened; ``self.fallback_reason`` why.
    """

    def __init__(
        self,
        model: bytes | str | Path,
        *,
        threads: int = 1,
        device: str | None = None,
        cpu_fallback: bool = False,
        cpu_model: bytes | str | Path | None = None,
        library: str | None = None,
    ) -> None:
        if device is not None and not _DEVICE.match(device):
            raise ConfigError(f"device must be usb, pci, usb:N, pci:N or :N, not '{device}'")
        content = model if isinstance(model, bytes) else Path(model).read_bytes()
        self.fallback = False
        self.fallback_reason = ""
        try:
            delegate = load_edgetpu_delegate(device=device, library=library)
        except EngineError as exc:
            if not cpu_fallback:
                raise
            self.fallback, self.fallback_reason = True, str(exc)
            self._engine = LiteRTEngine(self._cpu_content(content, cpu_model, str(exc)), threads=threads)
        else:
            self._engine = LiteRTEngine(content, threads=threads, delegates=[delegate])

    @staticmethod
    def _cpu_content(content: bytes, cpu_model: bytes | str | Path | None, reason: str) -> bytes:
        if cpu_model is not None:
            content = cpu_model if isinstance(cpu_model, bytes) else Path(cpu_model).read_bytes()
        if is_compiled(content):
            raise EngineError(
                f"{reason}; nor can the CPU fallback run this model, which is compiled for the Edge TPU: "
                "pass the Edge-TPU-ready model.tflite as cpu_model"
            )
        return content

    def input_specs(self) -> list[dict]:
        return self._engine.input_specs()

    def output_specs(self) -> list[dict]:
        return self._engine.output_specs()

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        # Edge TPU graphs are compiled for one shape (batch 1); resizing is refused in fallback too,
        # so a pipeline that works on the CPU fallback also works on the stick.
        for spec, value in zip(self.input_specs(), inputs):
            expected = tuple(1 if d == -1 else d for d in spec["shape"])
            if tuple(value.shape) != expected:
                raise EngineError(f"input '{spec['name']}' must have shape {expected}, got {tuple(value.shape)}")
        return self._engine.run(inputs)
