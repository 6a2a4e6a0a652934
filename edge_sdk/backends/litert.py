"""LiteRT (TensorFlow Lite) engine: ai-edge-litert first, then tflite-runtime. Never TensorFlow."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import numpy as np

from edge_sdk.errors import EngineError

NAME = "tflite"


def interpreter_module() -> ModuleType:
    """``ai_edge_litert.interpreter``, else ``tflite_runtime.interpreter``; never TensorFlow's."""
    try:
        return importlib.import_module("ai_edge_litert.interpreter")
    except ImportError:
        try:
            return importlib.import_module("tflite_runtime.interpreter")
        except ImportError as exc:
            raise EngineError(
                "no LiteRT interpreter is installed: pip install ai-edge-litert (or tflite-runtime)"
            ) from exc


def load_interpreter_class() -> type:
    """The Interpreter class of whichever LiteRT package is installed."""
    return interpreter_module().Interpreter


def _spec(detail: dict) -> dict:
    scale, zero_point = detail["quantization"]
    quant = (float(scale), int(zero_point)) if scale else None
    return {
        "name": detail["name"],
        "shape": [int(d) for d in detail["shape_signature"]],
        "dtype": np.dtype(detail["dtype"]),
        "quantization": quant,
    }


_PROBE = """
import sys
module = __import__(sys.argv[1], fromlist=["Interpreter"])
with open(sys.argv[2], "rb") as handle:
    content = handle.read()
module.Interpreter(model_content=content).allocate_tensors()
"""


def probe_in_child(content: bytes, *, module: str, timeout: float = 60.0) -> None:
    """Load a model in a child process first, so a malformed file cannot crash this one.

    tflite-runtime 2.14 (older boards) segfaults on some malformed .tflite files where ai-edge-litert
    raises a clean error; a crash in the child becomes an EngineError here.
    """
    import subprocess
    import sys
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".tflite") as handle:
        handle.write(content)
        handle.flush()
        try:
            proc = subprocess.run(
                [sys.executable, "-c", _PROBE, f"{module}.interpreter", handle.name],
                capture_output=True, text=True, timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise EngineError(f"{module} hung for {timeout:.0f} s loading the model") from exc
    if proc.returncode < 0:
        raise EngineError(f"the model crashed {module} while loading (signal {-proc.returncode}); the .tflite file is malformed")
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
        raise EngineError(f"LiteRT cannot load the model: {last[:200]}")


class LiteRTEngine:
    """A LiteRT interpreter over a .tflite model held in memory."""

    def __init__(
        self, model: bytes | str | Path, *, threads: int = 1, delegates: list | None = None, isolate: bool | None = None
    ) -> None:
        interpreter_class = load_interpreter_class()
        content = model if isinstance(model, bytes) else Path(model).read_bytes()
        module = interpreter_class.__module__.split(".")[0]
        if isolate if isolate is not None else module == "tflite_runtime":
            probe_in_child(content, module=module)
        try:
            self._interpreter = interpreter_class(
                model_content=content, num_threads=threads, experimental_delegates=delegates
            )
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise EngineError(f"LiteRT cannot load the model: {str(exc).splitlines()[0]}") from exc
        self._inputs = self._interpreter.get_input_details()
        self._outputs = self._interpreter.get_output_details()
        if not self._inputs or not self._outputs:
            # LiteRT loads a graph without inputs or outputs; the pipeline needs one of each.
            raise EngineError(f"the model has {len(self._inputs)} inputs and {len(self._outputs)} outputs; it needs at least one of each")

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
        try:
            for detail, value in zip(self._inputs, inputs):
                if tuple(value.shape) != tuple(detail["shape"]):
                    self._interpreter.resize_tensor_input(detail["index"], value.shape)
                    self._interpreter.allocate_tensors()
                    self._inputs = self._interpreter.get_input_details()
                    self._outputs = self._interpreter.get_output_details()
                self._interpreter.set_tensor(detail["index"], value)
            self._interpreter.invoke()
        except (ValueError, RuntimeError) as exc:
            # A model can load and still fail here (a constant without data, a shape no kernel takes).
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise EngineError(f"LiteRT cannot run the model: {first}") from exc
        return [self._interpreter.get_tensor(d["index"]) for d in self._outputs]
