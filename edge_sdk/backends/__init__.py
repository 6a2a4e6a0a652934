"""Inference engines: a tiny protocol and an explicit, lazy registry.

Each engine lives in its own module, imported only when a bundle asks for its target, so a device
without OpenVINO never imports it (and nothing here ever imports TensorFlow).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from edge_sdk.bundle import InferencePrecision
from edge_sdk.errors import EngineError
from edge_sdk.registry import resolve


@runtime_checkable
class Engine(Protocol):
    """Runs a compiled model on one prepared input batch."""

    def input_specs(self) -> list[dict]:
        """Per input: name, shape, dtype (numpy), quantization (scale, zero_point) or None."""

    def output_specs(self) -> list[dict]:
        """Per output: name, shape, dtype (numpy), quantization (scale, zero_point) or None."""

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Raw outputs (as stored: integer tensors stay integer) for raw inputs of the model's dtype."""


# target name -> "module:Class"; the module is imported only when the target is used.
REGISTRY: dict[str, str] = {
    "tflite": "edge_sdk.backends.litert:LiteRTEngine",
    "edgetpu": "edge_sdk.backends.edgetpu:EdgeTPUEngine",
    "openvino": "edge_sdk.backends.openvino:OpenVINOEngine",
    "onnx": "edge_sdk.backends.onnxrt:ONNXRuntimeEngine",
    # A plugin target opens the class its profile's ``engine`` names (edge_sdk.backends.plugins).
    "plugin": "edge_sdk.backends.plugins:open_plugin",
}


def engine_class(target: str) -> type:
    """The engine class for a target name, importing its module now."""
    return resolve(REGISTRY, target, error=EngineError, what="engine for target")


class _InManifestOrder:
    """An engine whose outputs come in the manifest's order: the source model's, which decoders expect.

    Compilers list outputs in their own order (TFLite sorts a SavedModel's signature keys); the
    manifest names each output, so the order is restored by name.
    """

    def __init__(self, engine: Engine, order: list[int]) -> None:
        self._engine, self._order = engine, order

    def input_specs(self) -> list[dict]:
        return self._engine.input_specs()

    def output_specs(self) -> list[dict]:
        specs = self._engine.output_specs()
        return [specs[i] for i in self._order]

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        outputs = self._engine.run(inputs)
        return [outputs[i] for i in self._order]

    def __getattr__(self, name: str):
        return getattr(self._engine, name)


def describe(engine) -> tuple[str, str]:
    """The engine's class and what it computes on (delegate, device or execution provider), for
    ``bench``, ``doctor`` and the retained info message the fleet reads."""
    name = type(getattr(engine, "_engine", engine)).__name__
    if getattr(engine, "fallback", False):
        return name, "none (CPU fallback)"
    if name == "EdgeTPUEngine":
        return name, "libedgetpu"
    if name == "LiteRTEngine":
        return name, "XNNPACK (default CPU delegate)"
    if hasattr(engine, "provider"):  # ONNX Runtime: the provider it got, its version, what this build has
        info = engine.info()
        return name, f"{info['provider']} (onnxruntime {info['onnxruntime']}; available: {', '.join(info['available_providers'])})"
    return name, str(getattr(engine, "device", "-"))


def in_manifest_order(engine: Engine, manifest) -> Engine:
    """``engine`` with its outputs reordered as the manifest lists them (itself when they already are)."""
    names = [spec["name"] for spec in engine.output_specs()]
    wanted = [spec.name for spec in manifest.outputs]
    if names == wanted or sorted(names) != sorted(wanted) or len(set(names)) != len(names):
        return engine
    return _InManifestOrder(engine, [names.index(name) for name in wanted])


def open_engine(bundle, *, device: str | None = None, threads: int | None = None, cpu_fallback: bool = False) -> Engine:
    """The engine a verified bundle asks for, set up as its profile says.

    ``device`` overrides the profile's OpenVINO device; ``cpu_fallback`` lets an Edge TPU bundle
    run its Edge-TPU-ready model on the CPU when no Edge TPU is present, and an ONNX bundle run on
    ONNX Runtime's CPU provider when its profile's GPU providers are missing.
    """
    manifest = bundle.manifest
    target = manifest.target.value
    engine = engine_class(target)
    threads = threads or manifest.profile.threads
    if target == "openvino":
        opened = engine(bundle.model_path, device=device or manifest.profile.device or "CPU", threads=threads,
                        precision_hint=(manifest.inference_precision or InferencePrecision.F32).value)
    elif target == "onnx":
        profile = manifest.profile
        opened = engine(bundle.model_path, providers=list(profile.providers), provider_options=dict(profile.provider_options),
                        threads=threads, allow_cpu_fallback=profile.allow_cpu_fallback or cpu_fallback)
    elif target == "plugin":
        opened = engine(manifest.profile.engine, bundle.model_path, threads=threads,
                        options=dict(manifest.profile.engine_options))
    elif target == "edgetpu":
        opened = engine(bundle.model_path, threads=threads, cpu_fallback=cpu_fallback, cpu_model=bundle.path / "model.tflite")
    else:
        opened = engine(bundle.model_path, threads=threads)
    return in_manifest_order(opened, manifest)
