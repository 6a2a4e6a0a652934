"""A minimal edge-sdk engine plugin: the shape a Hailo, RKNN or IMX500 engine takes.

This one runs the bundle's ONNX model with ONNX Runtime so it works anywhere; a vendor plugin
would compile or load the same file with its own SDK in ``__init__`` and call it in ``run``.
Install it (``pip install ./examples/engine_plugin``), convert for a profile with
``target: plugin`` and ``engine: example``, and ``edge-sdk run`` opens it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class ExampleEngine:
    consumes = "onnx"  # the bundle format this engine reads: "onnx" or "tflite"

    def __init__(self, model_path: Path, *, threads: int | None = None, options: dict) -> None:
        import onnxruntime as ort

        session_options = ort.SessionOptions()
        if threads:
            session_options.intra_op_num_threads = threads
        self._session = ort.InferenceSession(str(model_path), session_options, providers=["CPUExecutionProvider"])
        trace = options.get("trace")  # the tests' proof that this class, not a built-in engine, ran
        if trace:
            with open(trace, "a", encoding="utf-8") as handle:
                handle.write(f"opened {Path(model_path).name}\n")

    def _specs(self, args) -> list[dict]:
        return [{"name": a.name, "shape": list(a.shape), "dtype": np.dtype(np.float32), "quantization": None} for a in args]

    def input_specs(self) -> list[dict]:
        return self._specs(self._session.get_inputs())

    def output_specs(self) -> list[dict]:
        return self._specs(self._session.get_outputs())

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        return self._session.run(None, {self._session.get_inputs()[0].name: inputs[0]})

    def close(self) -> None:
        self._session = None
