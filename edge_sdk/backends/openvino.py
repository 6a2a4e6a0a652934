"""OpenVINO engine: an IR (.xml + .bin) compiled for the device the manifest names."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_sdk.errors import EngineError

NAME = "openvino"
DEVICES = ("CPU", "GPU", "NPU", "AUTO")


def _core():
    try:
        import openvino as ov
    except ImportError as exc:
        raise EngineError('OpenVINO is not installed: pip install "edge-sdk[openvino]"') from exc
    return ov


def error_reason(exc: BaseException) -> str:
    """The line of an OpenVINO error that says what is wrong.

    OpenVINO puts the C++ source location first ("Exception from src/inference/...") and the
    reason last, so the first line alone tells a user nothing.
    """
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    last = lines[-1]
    if len(last) < 16 and len(lines) > 1:  # e.g. "Converting input model" / "stoll"
        last = f"{lines[-2]}: {last}"
    return last[:300]


def _refuse_dtd(xml: bytes, name: str) -> None:
    # An IR never declares a DOCTYPE. pugixml does not expand entities today, but an entity bomb or
    # an external entity (file:///etc/passwd) in a model file is an attack, not a model.
    root = xml.find(b"<net")
    prolog = (xml if root < 0 else xml[:root]).upper()
    if b"<!DOCTYPE" in prolog or b"<!ENTITY" in prolog:
        raise EngineError(f"{name} declares a DOCTYPE or XML entities, which an OpenVINO IR never does; refused")


class OpenVINOEngine:
    """An OpenVINO compiled model with one synchronous infer request."""

    def __init__(self, model: str | Path | tuple[bytes, bytes], *, device: str = "CPU", threads: int | None = None,
                 precision_hint: str | None = None) -> None:
        ov = _core()
        core = ov.Core()
        if device.split(":")[0].split(".")[0] not in DEVICES and not device.startswith(("HETERO", "MULTI")):
            raise EngineError(f"OpenVINO device '{device}' is not one of {', '.join(DEVICES)}")
        config = {}
        if threads and device == "CPU":
            config["INFERENCE_NUM_THREADS"] = int(threads)
        if precision_hint:  # e.g. "f32": CPUs with AVX512_BF16/AMX otherwise run f32 models in bf16
            config["INFERENCE_PRECISION_HINT"] = precision_hint
        try:
            if isinstance(model, tuple):
                xml, weights = model
                _refuse_dtd(xml, "the IR")
                network = core.read_model(model=xml.decode("utf-8"), weights=ov.Tensor(np.frombuffer(weights, np.uint8)))
            else:
                if str(model).endswith(".xml"):
                    _refuse_dtd(Path(model).read_bytes(), str(model))
                network = core.read_model(str(model))
        except (RuntimeError, UnicodeDecodeError, OSError) as exc:
            raise EngineError(f"OpenVINO cannot read the model: {error_reason(exc)}") from exc
        if not network.inputs or not network.outputs:
            raise EngineError(f"the model has {len(network.inputs)} inputs and {len(network.outputs)} outputs; it needs at least one of each")
        try:
            self._compiled = core.compile_model(network, device, config)
        except RuntimeError as exc:
            available = ", ".join(core.available_devices) or "none"
            raise EngineError(f"OpenVINO cannot compile the model for {device} (available: {available}): {error_reason(exc)}") from exc
        self._request = self._compiled.create_infer_request()

    @staticmethod
    def _spec(port) -> dict:
        shape = [int(d.get_length()) if d.is_static else -1 for d in port.get_partial_shape()]
        return {
            "name": port.get_any_name(),
            "shape": shape,
            "dtype": np.dtype(port.get_element_type().to_dtype()),
            "quantization": None,
        }

    def input_specs(self) -> list[dict]:
        return [self._spec(p) for p in self._compiled.inputs]

    def output_specs(self) -> list[dict]:
        return [self._spec(p) for p in self._compiled.outputs]

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        try:
            results = self._request.infer(inputs)
        except (RuntimeError, ValueError, TypeError) as exc:
            raise EngineError(f"OpenVINO cannot run the model: {error_reason(exc)}") from exc
        return [np.asarray(results[port]) for port in self._compiled.outputs]
