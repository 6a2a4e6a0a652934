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


class OpenVINOEngine:
    """An OpenVINO compiled model with one synchronous infer request."""

    def __init__(self, model: str | Path | tuple[bytes, bytes], *, device: str = "CPU", threads: int | None = None) -> None:
        ov = _core()
        core = ov.Core()
        if device.split(":")[0].split(".")[0] not in DEVICES and not device.startswith(("HETERO", "MULTI")):
            raise EngineError(f"OpenVINO device '{device}' is not one of {', '.join(DEVICES)}")
        config = {}
        if threads and device == "CPU":
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            if isinstance(model, tuple):
                xml, weights = model
                network = core.read_model(model=xml.decode("utf-8"), weights=ov.Tensor(np.frombuffer(weights, np.uint8)))
            else:
                network = core.read_model(str(model))
            self._compiled = core.compile_model(network, device, config)
        except RuntimeError as exc:
            available = ", ".join(core.available_devices) or "none"
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise EngineError(f"OpenVINO cannot compile the model for {device} (available: {available}): {first}") from exc
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
        results = self._request.infer(inputs)
        return [np.asarray(results[port]) for port in self._compiled.outputs]
