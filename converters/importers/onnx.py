"""ONNX models as PyTorch (``torch.onnx.export``) and Ultralytics (``export(format="onnx")``) write them.

The input is NCHW, opset 13 or newer, with static or dynamic sizes; a dynamic size is fixed from
``--imgsz`` on a copy of the file before anything reads it. The float reference runs in OpenVINO
at f32. OpenVINO targets read the ONNX file as it is; TFLite and Edge TPU targets reach it through
onnx2tf's TensorFlow SavedModel, whose input is NHWC, made only when a TFLite conversion asks.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np

from edge_sdk.converters.heads import describe
from edge_sdk.converters.models import Format, SourceModel, image_size, static
from edge_sdk.errors import ConversionError, ModelError

MIN_OPSET = 13


def _onnx():
    try:
        import onnx
    except ImportError as exc:
        raise ConversionError('the onnx package is not installed: pip install "edge-sdk[convert]"') from exc
    return onnx


def _dims(value_info) -> tuple[int | None, ...]:
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                 for d in value_info.type.tensor_type.shape.dim)


def unconvertible_nodes(model, message: str) -> str | None:
    """The ops a converter's ``message`` complains about, with the nodes that use them, or None.

    Converters name the op type ("No conversion rule found for operations: com.example.FancyOp",
    "Conversion is failed for: Col2Im-17") but not where it is; a user needs the node to fix the export.
    """
    found: dict[str, list[str]] = {}
    for index, node in enumerate(model.graph.node):
        op = f"{node.domain}.{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type
        if re.search(rf"(?<![\w.]){re.escape(op)}(?![\w])", message):
            found.setdefault(op, []).append(node.name or f"#{index}")
    if not found:
        return None
    return "; ".join(f"op {op} at node{'s' if len(nodes) > 1 else ''} {', '.join(repr(n) for n in nodes[:5])}"
                     for op, nodes in found.items())


def _fixed(path: Path, name: str, imgsz: tuple[int, int] | None, folder: Path):
    """A copy of the model with batch 1 and a fixed image size; its (H, W, C), float parameter count, proto and metadata."""
    onnx = _onnx()
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError, OSError...
        raise ModelError(f"model {path} is not a readable ONNX model: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}") from exc
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < MIN_OPSET:
        raise ModelError(f"model {path} uses ONNX opset {opset}; export it with opset {MIN_OPSET} or newer (e.g. opset=17)")
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ModelError(f"model {path} has {len(inputs)} inputs; image models take one")
    shape = _dims(inputs[0])
    (height, width, channels), layout = image_size(name, shape, imgsz)
    if layout != "NCHW":
        raise ModelError(f"model {path} takes input {describe(shape)}; ONNX image models take NCHW (N, 3, H, W)")
    for dim, value in zip(inputs[0].type.tensor_type.shape.dim, (1, channels, height, width)):
        dim.Clear()
        dim.dim_value = value
    # Output shapes were written for the dynamic sizes; OpenVINO and onnx2tf infer them again.
    for output in model.graph.output:
        for dim in output.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.Clear()
    parameters = sum(int(np.prod(i.dims)) for i in model.graph.initializer if i.data_type in (1, 10, 11, 16))
    fixed = folder / f"{name}.onnx"
    onnx.save(model, str(fixed))
    metadata = {p.key: p.value for p in model.metadata_props}  # Ultralytics writes task, names, imgsz, kpt_shape here
    return fixed, (height, width, channels), parameters, _fold_constants(fixed, model), metadata


def _fold_constants(path: Path, model):
    """Fold what the fixed size made constant (Shape -> Gather -> Range grids of dynamic exports), in place.

    Ultralytics' dynamic exports build their anchor grid from the feature map's shape at run time;
    with the size fixed, ONNX Runtime's basic optimisations (constant folding and standard-op
    fusions only) turn that into constants. Without it onnx2tf mistakes which axis is which when two
    sizes coincide, and the converted model is wrong.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        return model
    onnx = _onnx()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(path.with_suffix(".folded.onnx"))
    options.log_severity_level = 3
    try:
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        folded = onnx.load(options.optimized_model_filepath)
    except Exception:  # ONNX Runtime lacks an op the converters may still know: convert it unfolded
        return model
    used = {node.domain for node in folded.graph.node} | {"", "ai.onnx"}
    kept = [o for o in folded.opset_import if o.domain in used]
    del folded.opset_import[:]
    folded.opset_import.extend(kept)
    onnx.save(folded, str(path))
    return folded


def load(path: Path, *, name: str, imgsz: tuple[int, int] | None, for_tflite: bool) -> SourceModel:
    from edge_sdk.backends.openvino import OpenVINOEngine
    from edge_sdk.errors import EngineError

    folder = tempfile.TemporaryDirectory(prefix="edge-sdk-onnx-")
    fixed, input_shape, parameters, proto, metadata = _fixed(path, name, imgsz, Path(folder.name))
    try:
        engine = OpenVINOEngine(fixed, device="CPU", precision_hint="f32")
    except EngineError as exc:
        where = unconvertible_nodes(proto, str(exc))
        if where is not None:
            raise ModelError(f"model {path} cannot be converted: OpenVINO has no conversion for {where}") from exc
        raise ModelError(f"model {path} cannot be read: {exc}") from exc
    outputs = engine.output_specs()
    source = SourceModel(
        name=name, kind=Format.ONNX.value, model=engine, input_shape=input_shape,
        output_shapes=tuple(static(o["shape"]) for o in outputs), output_names=tuple(o["name"] for o in outputs),
        path=fixed, layout="NHWC" if for_tflite else "NCHW", parameter_count=parameters, feed_nchw=for_tflite,
        metadata=metadata, _keep=folder,
    )
    if for_tflite:
        source.tensorflow_source = _saved_model_maker(fixed, input_shape, Path(folder.name))
    return source


def _saved_model_maker(fixed: Path, input_shape: tuple[int, int, int], folder: Path):
    made: list[Path] = []

    def saved_model() -> Path:
        if not made:
            from edge_sdk.converters.onnx_tf import to_saved_model

            result = to_saved_model(fixed, folder / "saved_model", input_size=input_shape[:2])
            made.append(Path(result.saved_model))
        return made[0]

    return saved_model
