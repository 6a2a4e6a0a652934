"""LiteRT (TensorFlow Lite) engine: ai-edge-litert first, then tflite-runtime. Never TensorFlow."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_sdk.errors import EngineError

NAME = "tflite"


def load_interpreter_class() -> type:
    """The Interpreter class of whichever LiteRT package is installed."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError as exc:
            raise EngineError(
                "no LiteRT interpreter is installed: pip install ai-edge-litert (or tflite-runtime)"
            ) from exc
    return Interpreter


def _spec(detail: dict) -> dict:
    scale, zero_point = detail["quantization"]
    quant = (float(scale), int(zero_point)) if scale else None
    return {
        "name": detail["name"],
        "shape": [int(d) for d in detail["shape_signature"]],
        "dtype": np.dtype(detail["dtype"]),
        "quantization": quant,
    }


class LiteRTEngine:
    """A LiteRT interpreter over a .tflite model held in memory."""

    def __init__(self, model: bytes | str | Path, *, threads: int = 1, delegates: list | None = None) -> None:
        interpreter_class = load_interpreter_class()
        content = model if isinstance(model, bytes) else Path(model).read_bytes()
        try:
            self._interpreter = interpreter_class(
                model_content=content, num_threads=threads, experimental_delegates=delegates
            )
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise EngineError(f"LiteRT cannot load the model: {str(exc).splitlines()[0]}") from exc
        self._inputs = self._interpreter.get_input_details()
        self._outputs = self._interpreter.get_output_details()

    def input_specs(self) -> list[dict]:
        return [_spec(d) for d in self._inputs]

    def output_specs(self) -> list[dict]:
        return [_spec(d) for d in self._outputs]

    def ops(self) -> list[dict]:
        """Op name, input and output dtypes of every op in execution order (for placement checks)."""
        return self._interpreter._get_ops_details()

    def tensor_details(self) -> list[dict]:
        return self._interpreter.get_tensor_details()

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        if len(inputs) != len(self._inputs):
            raise EngineError(f"model takes {len(self._inputs)} inputs, got {len(inputs)}")
        for detail, value in zip(self._inputs, inputs):
            if tuple(value.shape) != tuple(detail["shape"]):
                self._interpreter.resize_tensor_input(detail["index"], value.shape)
                self._interpreter.allocate_tensors()
                self._inputs = self._interpreter.get_input_details()
                self._outputs = self._interpreter.get_output_details()
            self._interpreter.set_tensor(detail["index"], value)
        self._interpreter.invoke()
        return [self._interpreter.get_tensor(d["index"]) for d in self._outputs]
