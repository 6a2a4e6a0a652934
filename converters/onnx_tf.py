"""ONNX -> TensorFlow SavedModel through onnx2tf, so ONNX models can take the TFLite and Edge TPU paths.

onnx2tf rewrites an NCHW ONNX graph op by op into NHWC TensorFlow (no TRANSPOSE left in front of
the convolutions, which the Edge TPU needs). We use it only to build the Keras graph: the
SavedModel is written here with one fixed-shape signature, and TFLite files are made later by our
own TFLiteConverter code. Three of its habits are worked around at this boundary:

- it fetches sample images from the internet on every conversion of an RGB model (even when given
  data): ``download_test_image_data`` is replaced, for the call, by one returning our images;
- it runs onnx-simplifier in a subprocess that rewrites the input file in place: we hand it a copy
  in a temporary folder and switch the simplifier off;
- it prints pages of progress on stdout: captured, and the error lines kept for our message.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_sdk.converters import _tf
from edge_sdk.errors import ConversionError, ModelError

_SIGNATURE = "serving_default"
_INPUT_NAME = "images"
_PLAIN_INPUT = "image"


@dataclass(frozen=True)
class OutputInfo:
    """One model output in ONNX order: its ONNX name, the SavedModel signature key, its shape."""

    onnx_name: str
    key: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class OnnxToTF:
    """A converted model: where the SavedModel is, what goes in (NHWC) and what comes out."""

    saved_model: Path
    input_name: str  # the signature's input key
    input_shape: tuple[int, int, int]  # (H, W, C)
    outputs: tuple[OutputInfo, ...]  # in the ONNX model's output order, ONNX layout
    parameter_count: int = 0  # float weights in the ONNX model (the SavedModel holds them as constants)
    max_rel_error: float | None = None  # SavedModel vs ONNX Runtime: max |diff| / max(1, max |output|)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(o.onnx_name for o in self.outputs)


def to_saved_model(
    onnx_path: Path,
    out_dir: Path,
    *,
    input_size: tuple[int, int] | None = None,
    calibration: np.ndarray | None = None,
) -> OnnxToTF:
    """Convert an NCHW image model in ONNX (opset 13+) to a SavedModel with an NHWC float32 input.

    ``input_size`` (H, W) fixes a model exported with dynamic height/width; a dynamic batch is
    fixed to 1. ``calibration`` is a few images, float32 NHWC ``[N, H, W, C]`` already normalised
    as the model expects: onnx2tf checks its layout decisions op by op on the first, and the result
    is compared with ONNX Runtime on up to four (uniform noise when not given). The outputs keep
    the ONNX names, order and layout.
    """
    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "saved_model.pb").is_file():
        raise ConversionError(f"out_dir {out_dir} is a non-empty folder and not a SavedModel; it would be replaced")
    model = _load(onnx_path)
    input_name, nchw = _fixed_input(model, onnx_path, input_size)
    _, channels, height, width = nchw
    if calibration is not None:
        calibration = _check_calibration(calibration, (height, width, channels))
    # onnx2tf reads the shape of every tensor; onnx-simplifier would annotate them, we infer them.
    model = _infer_shapes(model, onnx_path)
    onnx_names = [o.name for o in model.graph.output]
    renamed, labels = _plain_names(model, input_name)
    expected = _output_shapes(renamed)

    with tempfile.TemporaryDirectory(prefix="edge-sdk-onnx2tf-") as tmp:
        work = Path(tmp)
        fixed = work / "model.onnx"
        _save(renamed, fixed)
        if calibration is None:
            # Noise, not a flat image: a flat one looks the same under every transposition, so
            # neither onnx2tf's layout checks nor ours could tell a wrong one.
            calibration = np.random.default_rng(0).random((2, height, width, channels), dtype=np.float32)
        data = calibration[:4]
        # onnx2tf feeds the first image to ONNX Runtime (transposing it) and to TensorFlow as it is,
        # then compares them op by op to settle its layout choices; it wants NHWC here.
        np.save(work / "calib.npy", data)
        keras_model = _run_onnx2tf(fixed, work, _PLAIN_INPUT, data, onnx_path, labels)
        outputs = _save_signature(keras_model, out_dir, (height, width, channels), expected, onnx_names, onnx_path)
    result = OnnxToTF(out_dir, _INPUT_NAME, (height, width, channels), outputs, _parameter_count(model))
    try:
        return _verify(result, model, input_name, data, onnx_path)
    except ConversionError:
        shutil.rmtree(out_dir, ignore_errors=True)  # a model that computes something else is no output
        raise


def _load(path: Path):
    import onnx

    if not path.is_file():
        raise ModelError(f"model {path} does not exist")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError and friends
        raise ModelError(f"model {path} is not a readable ONNX model: {str(exc).splitlines()[0][:200]}") from exc
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 13:
        raise ModelError(f"model {path} uses ONNX opset {opset}; re-export it with opset 13 or newer")
    return model


def _dims(value_info) -> list[int | None]:
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims]


def _fixed_input(model, path: Path, input_size: tuple[int, int] | None) -> tuple[str, tuple[int, int, int, int]]:
    """Check for one NCHW float image input and fix its shape in ``model`` to [1, C, H, W]."""
    from onnx import TensorProto

    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ModelError(f"model {path} has {len(inputs)} inputs; expected one image input")
    graph_input = inputs[0]
    if graph_input.type.tensor_type.elem_type != TensorProto.FLOAT:
        raise ModelError(f"model {path} input '{graph_input.name}' is not float32")
    dims = _dims(graph_input)
    if len(dims) != 4 or dims[1] is None:
        raise ModelError(f"model {path} input '{graph_input.name}' has shape {dims}; expected NCHW [N, C, H, W]")
    if dims[1] not in (1, 3, 4) and dims[3] in (1, 3, 4):
        raise ModelError(f"model {path} input '{graph_input.name}' has shape {dims}, which looks NHWC; expected NCHW")
    if input_size is not None:
        if len(input_size) != 2 or any(int(s) < 1 for s in input_size):
            raise ModelError(f"input_size {input_size} must be (height, width) with both >= 1")
        height, width = int(input_size[0]), int(input_size[1])
        if (dims[2], dims[3]) not in ((None, None), (height, width)):
            raise ModelError(
                f"model {path} has a fixed input size {dims[2]}x{dims[3]}; "
                f"it cannot take --imgsz {height}x{width} (omit --imgsz)"
            )
    elif dims[2] is None or dims[3] is None:
        raise ModelError(f"model {path} has a dynamic input height/width; give the input size (--imgsz)")
    else:
        height, width = dims[2], dims[3]
    shape = (1, dims[1], height, width)
    for dim, value in zip(graph_input.type.tensor_type.shape.dim, shape):
        dim.Clear()
        dim.dim_value = value
    return graph_input.name, shape


def _infer_shapes(model, path: Path):
    import onnx

    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as exc:
        raise ModelError(f"model {path} fails ONNX shape inference: {str(exc).splitlines()[0][:200]}") from exc


def _output_shapes(model) -> dict[str, tuple[int, ...] | None]:
    """Output shapes after the input was fixed, as ONNX shape inference sees them (None: unknown)."""
    shapes = {}
    for out in model.graph.output:
        dims = _dims(out)
        shapes[out.name] = tuple(dims) if dims and all(d is not None for d in dims) else None
    return shapes


def _plain_names(model, input_name: str):
    """A copy of ``model`` whose input, outputs and nodes are ``image``, ``output_<i>``, ``n<i>``,
    and what each new node name stands for in messages.

    onnx2tf rewrites names with ':' or a leading '/' (common in PyTorch exports) and then looks the
    outputs up under either all-old or all-new names, silently dropping the rest: mixed names lost
    or reordered outputs. Plain names sidestep that; the result maps them back.
    """
    renamed = copy.deepcopy(model)
    mapping = {input_name: _PLAIN_INPUT}
    mapping.update({out.name: f"output_{i}" for i, out in enumerate(renamed.graph.output)})
    if len(mapping) != 1 + len(renamed.graph.output):
        raise ModelError("the model lists the same tensor twice among its input and outputs")
    labels = {}
    for i, node in enumerate(renamed.graph.node):
        labels[f"n{i}"] = f"node '{node.name}'" if node.name else f"unnamed node #{i}"
        node.name = f"n{i}"
        node.input[:] = [mapping.get(n, n) for n in node.input]
        node.output[:] = [mapping.get(n, n) for n in node.output]
    for info in (*renamed.graph.input, *renamed.graph.output, *renamed.graph.value_info, *renamed.graph.initializer):
        info.name = mapping.get(info.name, info.name)
    return renamed, labels


def _parameter_count(model) -> int:
    from onnx import TensorProto

    floats = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16)
    return int(sum(np.prod(t.dims) for t in model.graph.initializer if t.data_type in floats))


def _save(model, path: Path) -> None:
    import onnx

    # Keeps models over 2 GB working; small ones stay one file.
    onnx.save(model, str(path), save_as_external_data=model.ByteSize() > 1_900_000_000)


def _check_calibration(data: np.ndarray, hwc: tuple[int, int, int]) -> np.ndarray:
    data = np.asarray(data)
    if data.ndim != 4 or tuple(data.shape[1:]) != hwc or data.shape[0] < 1:
        raise ModelError(f"calibration images have shape {data.shape}; expected [N, {hwc[0]}, {hwc[1]}, {hwc[2]}]")
    return data.astype(np.float32)


@contextlib.contextmanager
def _offline_samples(images: np.ndarray) -> Iterator[None]:
    """Make onnx2tf use ``images`` where it would download its 20 sample pictures."""
    import onnx2tf.onnx2tf as core

    saved = core.download_test_image_data
    core.download_test_image_data = lambda: images
    try:
        yield
    finally:
        core.download_test_image_data = saved


def _run_onnx2tf(fixed: Path, work: Path, input_name: str, data: np.ndarray, source: Path, labels: dict):
    _tf.tensorflow()  # sets TF_USE_LEGACY_KERAS before onnx2tf imports tf_keras
    state = np.random.get_state()  # onnx2tf seeds NumPy's global generator on import and in use
    # onnx2tf raises the interpreter's recursion limit to INT_MAX when imported: deep recursion
    # anywhere else in the process would then crash the C stack instead of raising RecursionError.
    # Its conversion keeps its limit; the process gets its own back afterwards.
    limit = sys.getrecursionlimit()
    try:
        with _tf.quiet_native():
            import onnx2tf
    except ImportError as exc:
        raise ConversionError(
            "ONNX to TensorFlow needs onnx2tf: pip install \"edge-sdk[convert]\" && pip install --no-deps onnx2tf==1.29.24"
        ) from exc
    finally:
        np.random.set_state(state)
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log), _tf.quiet_native(), _offline_samples(data):
            keras_model = onnx2tf.convert(
                input_onnx_file_path=str(fixed),
                output_folder_path=str(work / "onnx2tf"),
                custom_input_op_name_np_data_path=[[input_name, str(work / "calib.npy")]],
                not_use_onnxsim=True,  # its subprocess rewrites the file; our copy is fixed already
                disable_model_save=True,  # we write the SavedModel; no TFLite files from it
                onnxruntime_output_memmap=False,
                verbosity="error",
            )
    except (Exception, SystemExit) as exc:  # onnx2tf raises what its ops raise, and calls sys.exit
        raise ConversionError(_failure(exc, fixed, source, log.getvalue(), labels)) from exc
    finally:
        np.random.set_state(state)
        sys.setrecursionlimit(limit)
    if keras_model is None:
        raise ConversionError(_failure(None, fixed, source, log.getvalue(), labels))
    return keras_model


def _failure(exc: BaseException | None, fixed: Path, source: Path, log: str, labels: dict) -> str:
    import onnx

    node_name = getattr(exc, "onnx_op_name", None)
    types = {n.name: n.op_type for n in onnx.load(str(fixed), load_external_data=False).graph.node}
    label = labels.get(node_name, f"node '{node_name}'")
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").startswith("onnx2tf.ops."):
        op_type = exc.name.rsplit(".", 1)[1]
        return f"model {source}: onnx2tf cannot convert op {op_type} ({label})"
    where = f" at {types.get(node_name, 'op')} {label}" if node_name else ""
    reason = str(exc).strip().splitlines()[0][:200] if exc is not None and str(exc).strip() else ""
    if not reason:
        errors = [ln for ln in _plain(log).splitlines() if ln.startswith("ERROR:")]
        reason = errors[0][6:].strip()[:200] if errors else type(exc).__name__ if exc else "no model returned"
    return f"model {source}: ONNX to TensorFlow conversion failed{where}: {reason}"


def _plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _to_onnx_layout(tf, tensor, nhwc: bool):
    """onnx2tf leaves 3-D+ outputs it computed channels-last; put them back as ONNX has them."""
    rank = len(tensor.shape)
    if not nhwc or rank < 3:
        return tensor
    return tf.transpose(tensor, [0, rank - 1, *range(1, rank - 1)])


def _save_signature(
    keras_model, out_dir: Path, hwc: tuple[int, int, int], expected: dict, onnx_names: list[str], source: Path
):
    tf = _tf.tensorflow()
    names = list(expected)  # output_<i>, in ONNX order
    layouts = getattr(keras_model, "onnx_output_layouts", {}) or {}
    keys = _signature_keys(onnx_names)
    if len(keras_model.outputs) != len(names):
        raise ConversionError(f"model {source}: onnx2tf returned {len(keras_model.outputs)} of {len(names)} outputs")

    @tf.function(input_signature=[tf.TensorSpec([1, *hwc], tf.float32, name=_INPUT_NAME)])
    def serve(images):
        results = keras_model(images)
        if not isinstance(results, (list, tuple)):
            results = [results]
        return {
            key: _to_onnx_layout(tf, out, bool(layouts.get(name, False)))
            for key, name, out in zip(keys, names, results)
        }

    # Only the weights are tracked, not the Keras model: saving a tf-keras model traces every
    # layer's call for Keras reloading, which took 10-30 s for a 20-conv net and is never used.
    # (A Checkpoint, unlike a tf.Module, keeps a `variables` attribute on the loaded object;
    # onnx2tf mostly bakes weights in as constants, so it is often empty.)
    module = tf.train.Checkpoint()
    module.variables = list(keras_model.variables)
    module.serve = serve
    try:
        concrete = serve.get_concrete_function()
    except (ValueError, TypeError) as exc:  # onnx2tf built a graph whose shapes do not fit together
        first = next((line.strip() for line in str(exc).splitlines() if "Dimensions" in line or "shape" in line),
                     str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        raise ConversionError(f"model {source}: onnx2tf produced an inconsistent TensorFlow graph ({first[:200]}); "
                              "export the ONNX with a static input size") from exc
    outputs = []
    for key, name, onnx_name in zip(keys, names, onnx_names):
        shape = tuple(int(d) for d in concrete.structured_outputs[key].shape)
        if expected[name] is not None and shape != expected[name]:
            raise ConversionError(
                f"model {source}: output '{onnx_name}' came out of onnx2tf as {list(shape)}, "
                f"ONNX says {list(expected[name])}"
            )
        outputs.append(OutputInfo(onnx_name, key, shape))
    if out_dir.exists():
        shutil.rmtree(out_dir)  # an earlier SavedModel (to_saved_model refused anything else)
    try:
        with _tf.quiet_native():
            tf.saved_model.save(module, str(out_dir), signatures={_SIGNATURE: concrete})
    except Exception as exc:
        raise ConversionError(f"model {source}: writing the SavedModel failed: {str(exc).splitlines()[0][:200]}") from exc
    return tuple(outputs)


def _signature_keys(names: list[str]) -> list[str]:
    """Valid signature keys, numbered so that sorting them (signatures are dicts) gives ONNX order.

    TFLiteConverter does not list outputs in key order: see :func:`tflite_output_order`.
    """
    width = len(str(len(names) - 1))
    return [f"output_{i:0{width}d}_{re.sub(r'[^A-Za-z0-9_]', '_', n).strip('_') or 'out'}" for i, n in enumerate(names)]


def _verify(result: OnnxToTF, model, input_name: str, data: np.ndarray, source: Path) -> OnnxToTF:
    """Run the SavedModel and ONNX Runtime on the same images; refuse a model that disagrees."""
    try:
        import onnxruntime as ort
    except ImportError:
        return result  # nothing to compare with; the caller's own accuracy check still runs
    tf = _tf.tensorflow()
    nchw = [np.transpose(image[None], (0, 3, 1, 2)).astype(np.float32) for image in data]
    try:
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        references = [session.run(list(result.output_names), {input_name: x}) for x in nchw]
    except Exception:  # an op or size ONNX Runtime does not take: max_rel_error stays None
        return result
    signature = tf.saved_model.load(str(result.saved_model)).signatures[_SIGNATURE]
    worst = 0.0
    for image, want in zip(data, references):
        got = signature(**{result.input_name: tf.constant(image[None].astype(np.float32))})
        for out, ref in zip(result.outputs, want):
            value = got[out.key].numpy()
            if value.shape != ref.shape:
                raise ConversionError(f"model {source}: output '{out.onnx_name}' is {value.shape}, ONNX gives {ref.shape}")
            if ref.size and np.issubdtype(ref.dtype, np.floating):
                scale = max(1.0, float(np.max(np.abs(ref))))
                err = float(np.max(np.abs(value.astype(np.float64) - ref))) / scale
                worst = max(worst, err)
    # float32 reorderings stay near 1e-5 relative; a wrong transpose is off by the signal itself
    if worst > 1e-3:
        raise ConversionError(
            f"model {source}: the TensorFlow model disagrees with ONNX Runtime (max relative error {worst:.2g}); "
            "onnx2tf mis-converted a layout"
        )
    return dataclasses.replace(result, max_rel_error=worst)


def tflite_output_order(content: bytes, result: OnnxToTF) -> list[int]:
    """For each ONNX output in order, its position in a TFLite model's ``get_output_details()``.

    TFLiteConverter lists the outputs of a SavedModel in its own order (not by signature key), so
    a caller that reads outputs by position maps them through the signature first.
    """
    from edge_sdk.backends.litert import load_interpreter_class

    interpreter = load_interpreter_class()(model_content=content)
    by_key = interpreter.get_signature_runner(_SIGNATURE).get_output_details()
    positions = {d["index"]: i for i, d in enumerate(interpreter.get_output_details())}
    try:
        return [positions[by_key[out.key]["index"]] for out in result.outputs]
    except KeyError as exc:
        raise ConversionError(f"the TFLite model has no output {exc} of the converted SavedModel") from exc
