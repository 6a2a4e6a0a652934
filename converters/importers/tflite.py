"""``.tflite`` files from elsewhere (MediaPipe, model zoos): evaluated in LiteRT and packaged as they are.

A flatbuffer cannot be re-quantized: a float one goes to the TFLite target as float (or to
OpenVINO, which quantizes it itself), an integer one to TFLite or, compiled, to the Edge TPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_sdk.converters.models import Format, SourceModel, image_size, static
from edge_sdk.errors import ModelError


def load(path: Path, *, name: str, imgsz: tuple[int, int] | None, for_tflite: bool) -> SourceModel:
    from edge_sdk.backends.litert import LiteRTEngine
    from edge_sdk.errors import EngineError

    try:
        engine = LiteRTEngine(path)
        # Constants are the tensors no op produces and the caller does not feed.
        produced = {int(i) for op in engine.ops() for i in op["outputs"]}
        fed = {int(d["index"]) for d in engine._inputs}
        parameters = sum(
            int(np.prod(d["shape"])) for d in engine.tensor_details()
            if d["index"] not in produced and d["index"] not in fed and np.dtype(d["dtype"]).kind in "fi"
            and len(d["shape"]) > 0
        )
    except EngineError as exc:
        raise ModelError(f"model {path} is not a valid .tflite file: {exc}") from exc
    inputs, outputs = engine.input_specs(), engine.output_specs()
    if len(inputs) != 1:
        raise ModelError(f"model {path} has {len(inputs)} inputs; image models take one")
    input_shape, layout = image_size(name, static(inputs[0]["shape"]), imgsz)
    quantized = np.dtype(inputs[0]["dtype"]) != np.float32 or any(np.dtype(o["dtype"]) != np.float32 for o in outputs)
    if not quantized:
        from edge_sdk.converters.tflite import float_ops

        quantized = not float_ops(path.read_bytes(), integer_io=False)
    return SourceModel(
        name=name, kind=Format.TFLITE.value, model=_DequantizingEngine(engine), input_shape=input_shape,
        output_shapes=tuple(static(o["shape"]) for o in outputs), output_names=tuple(o["name"] for o in outputs),
        path=path, layout=layout, parameter_count=parameters, quantized=quantized,
    )


class _DequantizingEngine:
    """A LiteRT engine that takes and gives float, quantizing as the device does, for reference runs."""

    def __init__(self, engine) -> None:
        from edge_sdk.converters.evaluate import engine_runner

        self.engine = engine
        self._run = engine_runner(engine)

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        return self._run(inputs[0])
