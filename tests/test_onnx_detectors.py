"""The ONNX detectors of tests/support/models/onnx_detectors.py are valid, run in onnxruntime and OpenVINO, and are
the shipped detector: same numbers as the Keras model, same detections, same mAP."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from edge_sdk.converters import detection_eval
from edge_sdk.decoders import DecodeContext
from edge_sdk.decoders import yolo
from edge_sdk.preprocess import Placement, Preprocessing
from edge_sdk.samples import detector, shapes
from support.models import onnx_detectors as od

# onnxruntime is the reference ONNX runtime; where it is not installed OpenVINO (f32) stands in.
ENGINE = "onnxruntime" if importlib.util.find_spec("onnxruntime") else "openvino"
SPEC = Preprocessing(width=od.SIZE, height=od.SIZE, channels=3)
EXPECTED = {  # layout -> (output name, shape) in graph order
    "v8": [("output0", [1, 8, 400])],
    "v8-normalized": [("output0", [1, 8, 400])],
    "v5": [("output0", [1, 400, 9])],
    "end-to-end": [("output0", [1, 300, 6])],
    "split": [("boxes", [1, 400, 4]), ("scores", [1, 400, 4])],
    "classifier": [("output0", [1, 4])],
    "custom": [("features", [1, 64, 20, 20]), ("objectness", [1, 1, 20, 20])],
}


@pytest.fixture(params=od.ENGINES)
def engine(request) -> str:
    if request.param == "onnxruntime":
        pytest.importorskip("onnxruntime", reason="onnxruntime is the reference ONNX runtime: pip install onnxruntime")
    return request.param


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("onnx_detectors")
    return {name: make(folder / f"{name}.onnx") for name, make in od.LAYOUTS.items()} | {
        "v8-dynamic": od.yolov8_onnx_of_shipped_detector(folder / "v8-dynamic.onnx", dynamic=True),
        "v5-normalized": od.yolov5_onnx(folder / "v5-normalized.onnx", normalized=True),
    }


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> detection_eval.DetectionSet:
    """50 rendered scenes on photographs the detector never trained on, with their true boxes."""
    root = shapes.write_yolo(tmp_path_factory.mktemp("scenes"), 50, seed=31337, photos=shapes.HELD_OUT_PHOTOS)
    return detection_eval.load_yolo(root, SPEC, what="scenes")


@pytest.fixture(scope="module")
def keras_heads(scenes) -> np.ndarray:
    """The Keras model's own ``[50, 400, 9]`` heads on the scenes."""
    model = od.shipped_keras_model()
    return np.concatenate([np.asarray(model(batch, training=False)) for batch in scenes.batches(SPEC, size=10)])


def _batch(scenes) -> np.ndarray:
    return next(scenes.batches(SPEC, size=len(scenes)))  # NHWC, 0-1 RGB


@pytest.mark.parametrize("layout", sorted(EXPECTED))
def test_each_graph_is_valid_onnx_with_an_nchw_images_input_and_its_documented_outputs(files, layout, engine, scenes):
    import onnx

    model = onnx.load(str(files[layout]))
    onnx.checker.check_model(model, full_check=True)
    assert max(op.version for op in model.opset_import if op.domain in ("", "ai.onnx")) >= 13
    (image,) = model.graph.input
    dims = [d.dim_value for d in image.type.tensor_type.shape.dim]
    assert image.name == "images" and dims == [1, 3, 160, 160]
    assert image.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    declared = [(o.name, [d.dim_value for d in o.type.tensor_type.shape.dim]) for o in model.graph.output]
    assert declared == EXPECTED[layout]
    outputs = od.run_onnx(files[layout], od.to_nchw(_batch(scenes)[:1]), engine=engine)
    assert [list(o.shape) for o in outputs] == [shape for _, shape in EXPECTED[layout]]
    assert all(np.all(np.isfinite(o)) for o in outputs)


def test_openvino_reads_every_fixed_size_file_with_static_output_shapes(files):
    import openvino as ov

    core = ov.Core()
    for layout, expected in EXPECTED.items():
        network = core.read_model(str(files[layout]))
        assert [list(o.get_partial_shape().to_shape()) for o in network.outputs] == [shape for _, shape in expected], layout
        assert [o.get_any_name() for o in network.outputs] == [name for name, _ in expected], layout


def test_the_yolov8_file_is_the_keras_model_in_v8_layout_on_rendered_scenes(files, engine, scenes, keras_heads):
    images = _batch(scenes)[:8]
    reference = od.keras_head_as_v8(keras_heads[:8])
    got = np.concatenate([od.run_onnx(files["v8"], od.to_nchw(images[i : i + 1]), engine=engine)[0] for i in range(8)])
    assert got.shape == (8, 8, 400)
    # boxes are pixels (0-160), scores 0-1: float32 rounding of a 160-pixel value is about 1e-5
    assert np.abs(got[:, :4] - reference[:, :4]).max() < 1e-3
    assert np.abs(got[:, 4:] - reference[:, 4:]).max() < 1e-4
    assert got[:, :4].max() > 50  # pixels, not 0-1


def test_the_dynamic_yolov8_file_has_symbolic_dims_and_runs_other_batches_and_sizes(files, engine, scenes, keras_heads):
    import onnx

    model = onnx.load(str(files["v8-dynamic"]))
    (image,) = model.graph.input
    assert [d.dim_param or d.dim_value for d in image.type.tensor_type.shape.dim] == ["batch", 3, "height", "width"]
    assert [d.dim_param or d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim] == ["batch", 8, "anchors"]
    batch = od.to_nchw(_batch(scenes)[:4])
    (head,) = od.run_onnx(files["v8-dynamic"], batch, engine=engine)
    reference = od.keras_head_as_v8(keras_heads[:4])
    assert head.shape == (4, 8, 400)
    assert np.abs(head[:, :4] - reference[:, :4]).max() < 1e-3 and np.abs(head[:, 4:] - reference[:, 4:]).max() < 1e-4
    # twice the size: four times the candidates, centres reaching across the larger image
    bigger = np.repeat(np.repeat(batch[:1], 2, axis=2), 2, axis=3)
    (head,) = od.run_onnx(files["v8-dynamic"], bigger, engine=engine)
    assert head.shape == (1, 8, 1600) and head[0, 0].max() > 300 and head[0, 1].max() > 300


def _corners(box) -> tuple[float, float, float, float]:
    return box.x1, box.y1, box.x2, box.y2


def _decode(head: np.ndarray, options: dict) -> list:
    placement = Placement(source_width=od.SIZE, source_height=od.SIZE, scale_x=1.0, scale_y=1.0)
    context = DecodeContext(labels=shapes.CLASSES, placement=placement, preprocessing=SPEC, options=options)
    return yolo.decode([head], context)


def test_the_yolo_decoder_reads_the_same_detections_from_the_v8_file_as_from_the_keras_model(files, scenes, keras_heads):
    images = _batch(scenes)[:8]
    total = 0
    for i in range(8):
        ours = _decode(od.run_onnx(files["v8"], od.to_nchw(images[i : i + 1]), engine=ENGINE)[0], {})  # layout and pixels guessed
        theirs = _decode(keras_heads[i : i + 1], detector.DECODER_OPTIONS)
        assert [d.class_id for d in ours] == [d.class_id for d in theirs]
        for a, b in zip(ours, theirs):
            assert abs(a.score - b.score) < 1e-4
            assert max(abs(p - q) for p, q in zip(_corners(a.box), _corners(b.box))) < 1e-4
        total += len(ours)
    assert total >= 8  # the scenes do hold shapes and both find them


def _map50(found: list[np.ndarray], scenes) -> float:
    return detection_eval.detection_metrics(found, scenes.truth, len(shapes.CLASSES)).map50


def _yolo_found(heads: list[np.ndarray], scenes, options: dict) -> list[np.ndarray]:
    return [detection_eval.decode_head([h], scenes, i, decoder="yolo", options=options) for i, h in enumerate(heads)]


@pytest.fixture(scope="module")
def keras_map(scenes, keras_heads) -> float:
    return _map50(_yolo_found(list(keras_heads[:, None]), scenes, detector.DECODER_OPTIONS), scenes)


def test_the_v8_file_scores_the_keras_models_map_on_50_scenes(files, scenes, keras_map):
    heads = [od.run_onnx(files["v8"], od.to_nchw(image[None]), engine=ENGINE)[0] for image in _batch(scenes)]
    score = _map50(_yolo_found(heads, scenes, {}), scenes)
    assert keras_map > 0.8  # the shipped detector, on scenes it never saw
    assert abs(score - keras_map) <= 0.01


def _end_to_end_found(rows: np.ndarray) -> np.ndarray:
    """``[K, 6]`` x1 y1 x2 y2 score class -> the ``class x1 y1 x2 y2 score`` rows the metrics take (input = source here)."""
    rows = rows[rows[:, 4] > 0]
    return np.concatenate([rows[:, 5:6], rows[:, :4], rows[:, 4:5]], axis=1).astype(np.float64)


def _as_v8(boxes_xyxy: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """A split head ``[1, N, 4]`` + ``[1, N, C]`` as a v8 head ``[1, 4+C, N]`` (pixels)."""
    xy = (boxes_xyxy[..., :2] + boxes_xyxy[..., 2:]) / 2
    wh = boxes_xyxy[..., 2:] - boxes_xyxy[..., :2]
    return np.concatenate([xy, wh, scores], axis=-1).transpose(0, 2, 1)


def test_every_detector_layout_detects_the_shapes_as_well_as_the_keras_model(files, scenes, keras_map):
    images = _batch(scenes)
    runs = {name: [od.run_onnx(files[name], od.to_nchw(image[None]), engine=ENGINE) for image in images]
            for name in ("v8-normalized", "v5", "v5-normalized", "split", "end-to-end")}
    scores = {
        "v8-normalized": _map50(_yolo_found([o[0] for o in runs["v8-normalized"]], scenes, {"normalized": True}), scenes),
        "v5": _map50(_yolo_found([o[0] for o in runs["v5"]], scenes, {"layout": "v5", "normalized": False}), scenes),
        "v5-normalized": _map50(_yolo_found([o[0] for o in runs["v5-normalized"]], scenes, detector.DECODER_OPTIONS), scenes),
        "split": _map50(_yolo_found([_as_v8(*o) for o in runs["split"]], scenes, {"layout": "v8"}), scenes),
        "end-to-end": _map50([_end_to_end_found(o[0][0]) for o in runs["end-to-end"]], scenes),
    }
    for name, score in scores.items():
        # the end-to-end file suppresses with the ONNX runtime's NMS and keeps 300 rows, not the decoder's: close, not equal
        assert abs(score - keras_map) <= (0.02 if name == "end-to-end" else 0.01), (name, score, keras_map)


def test_the_end_to_end_file_pads_with_zero_rows_sorted_by_score(files, scenes):
    (blank,) = od.run_onnx(files["end-to-end"], np.zeros((1, 3, 160, 160), np.float32), engine=ENGINE)
    busy = od.run_onnx(files["end-to-end"], od.to_nchw(_batch(scenes)[:1]), engine=ENGINE)[0][0]
    kept = busy[busy[:, 4] > 0]
    assert np.all(np.diff(kept[:, 4]) <= 0) and np.all(busy[len(kept):] == 0)
    assert set(np.unique(kept[:, 5])) <= set(range(len(shapes.CLASSES)))
    assert np.all(kept[:, 2] > kept[:, 0]) and np.all(kept[:, 3] > kept[:, 1])
    assert blank.shape == (1, 300, 6) and len(kept) > 0


def test_classifier_and_custom_outputs_are_the_detector_maps_they_claim_to_be(files, scenes):
    images = od.to_nchw(_batch(scenes)[:4])
    for image in images:
        (v8,) = od.run_onnx(files["v8"], image[None], engine=ENGINE)
        (presence,) = od.run_onnx(files["classifier"], image[None], engine=ENGINE)
        assert np.abs(presence[0] - v8[0, 4:].max(axis=1)).max() < 1e-6
        (v5,) = od.run_onnx(files["v5"], image[None], engine=ENGINE)
        features, objectness = od.run_onnx(files["custom"], image[None], engine=ENGINE)
        assert np.abs(objectness.reshape(-1) - v5[0, :, 4]).max() < 1e-6
        assert features.min() >= 0 and features.max() <= 6  # ReLU6 activations
