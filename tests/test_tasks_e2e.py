"""Beyond boxes, end to end: a segmenter and a landmark network trained here on generated scenes (whose
masks and corners are exact), and an Ultralytics-layout instance segmentation ONNX built from real
weights, each converted for every target family, run by the device runtime from its bundle and checked
against the scenes' truth; int8 keeps mean IoU within 1.5 points of float and PCK within 2.

Training and conversions are shared through session fixtures: the segmenter trains once (about 30 s
on two cores), the landmark network once (about 35 s), and each bundle is converted once.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_sdk.samples import posenet, segmenter, shapes

MIOU_BUDGET = 0.015  # int8 mean IoU within 1.5 points of float
PCK_BUDGET = 0.02  # int8 PCK within 2 points of float
# (profile, precision): TFLite fp32 and int8, OpenVINO int8, Edge TPU int8 (no compiler here: compile=False
# packages the full-integer model the compiler would take, and the runtime runs it on the CPU).
TARGETS = [("x86-cpu", "fp32"), ("rpi5", None), ("intel-cpu", None), ("coral-usb", None)]
TARGET_IDS = ["tflite-fp32", "tflite-int8", "openvino-int8", "edgetpu-int8"]


# -- data: fast checks of the writers ---------------------------------------------------------------

def test_instance_masks_are_the_visible_pixels_and_the_class_map_is_their_union():
    rng = np.random.default_rng(3)
    photos = shapes.photographs(shapes.HELD_OUT_PHOTOS[:1])
    seen = 0
    for _ in range(20):
        image, instances = shapes.instance_scene(rng, photos, width=96, height=80)
        truth = shapes.class_map(instances, 80, 96)
        assert image.shape == (80, 96, 3) and truth.shape == (80, 96)
        masks = [o.mask for o in instances]
        assert all(m.dtype == bool and m.any() for m in masks)
        assert np.sum([m.astype(int) for m in masks], axis=0).max(initial=0) <= 1 if masks else True  # never overlap
        for o in instances:
            ys, xs = np.nonzero(o.mask)
            assert (o.box.x1, o.box.y1, o.box.x2, o.box.y2) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            assert np.all(truth[o.mask] == o.class_id + 1)
            seen += 1
        assert np.count_nonzero(truth) == sum(int(m.sum()) for m in masks)
    assert seen >= 20


def test_semantic_dataset_round_trips(tmp_path):
    root = shapes.write_semantic(tmp_path / "sem", 6, seed=1, photos=shapes.HELD_OUT_PHOTOS[:1], width=64, height=48)
    assert (root / "classes.txt").read_text().split() == list(shapes.SEGMENTATION_CLASSES)
    stems = sorted(p.stem for p in (root / "images").glob("*.png"))
    assert stems == sorted(p.stem for p in (root / "masks").glob("*.png")) and len(stems) == 6
    again = np.random.default_rng(1)
    photos = shapes.photographs(shapes.HELD_OUT_PHOTOS[:1])
    for stem in stems:
        mask = cv2.imread(str(root / "masks" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        image, instances = shapes.instance_scene(again, photos, width=64, height=48, min_size=0.15, max_size=0.55)
        assert mask.dtype == np.uint8 and mask.ndim == 2 and mask.max() <= len(shapes.CLASSES)
        np.testing.assert_array_equal(mask, shapes.class_map(instances, 48, 64))
        np.testing.assert_array_equal(cv2.imread(str(root / "images" / f"{stem}.png")), image)


def test_yolo_seg_polygons_fill_back_to_the_masks(tmp_path):
    root = shapes.write_yolo_seg(tmp_path / "inst", 8, seed=2, photos=shapes.HELD_OUT_PHOTOS[:1])
    again = np.random.default_rng(2)
    photos = shapes.photographs(shapes.HELD_OUT_PHOTOS[:1])
    objects = 0
    for i in range(8):
        _, instances = shapes.instance_scene(again, photos)
        lines = (root / "labels" / f"{i:05d}.txt").read_text().splitlines()
        assert len(lines) == len(instances)
        for line, o in zip(lines, instances):
            values = line.split()
            assert int(values[0]) == o.class_id and len(values) % 2 == 1 and len(values) >= 7
            polygon = np.array(values[1:], dtype=np.float64).reshape(-1, 2) * 160 - 0.5
            filled = np.zeros((160, 160), np.uint8)
            cv2.fillPoly(filled, [np.round(polygon).astype(np.int32)], 1)
            filled = filled.astype(bool)
            assert (filled & o.mask).sum() / (filled | o.mask).sum() > 0.9
            objects += 1
    assert objects >= 8


def test_pose_labels_are_the_triangles_corners_in_a_fixed_order(tmp_path):
    root = shapes.write_yolo_pose(tmp_path / "pose", 30, seed=3, photos=shapes.HELD_OUT_PHOTOS[:1], width=96,
                                  height=96, objects=2, distractors=1, min_size=0.2, max_size=0.4)
    data = (root / "data.yaml").read_text()
    assert "kpt_shape: [3, 3]" in data and "names: {0: triangle}" in data and "kpt_names: [apex, right, left]" in data
    for label in sorted((root / "labels").glob("*.txt")):
        assert (root / "images" / f"{label.stem}.png").is_file()
        for line in label.read_text().splitlines():
            values = np.array(line.split(), dtype=np.float64)
            assert values[0] == 0 and len(values) == 5 + 3 * 3
            cx, cy, w, h = values[1:5] * 96
            points = values[5:].reshape(3, 3)
            xy = points[:, :2] * 96
            assert set(points[:, 2]) <= {1.0, 2.0}
            # The apex on top, the right base corner right of the left one: the order a network can learn
            # because turns stay within 35 degrees.
            assert xy[0, 1] < xy[1, 1] and xy[0, 1] < xy[2, 1] and xy[1, 0] > xy[2, 0]
            if np.all(points[:, 2] == 2):  # nothing covers it: the corners are the extremes of its box (a sharp
                # tip's last pixels are less than half covered, so not in the mask: 2.5 px)
                assert abs(xy[0, 1] - (cy - h / 2)) < 2.5 and abs(xy[:, 1].max() - (cy + h / 2)) < 2.5
                assert abs(xy[:, 0].min() - (cx - w / 2)) < 2.5 and abs(xy[:, 0].max() - (cx + w / 2)) < 2.5
    assert math.degrees(shapes.POSE_MAX_TURN) < 60  # under half the 120 degrees that map a triangle onto itself


def test_landmark_network_outputs_points_in_the_unit_square():
    model = posenet.build(size=64)
    out = np.asarray(model(np.random.default_rng(0).random((2, 64, 64, 3), dtype=np.float32)))
    assert out.shape == (2, 2 * len(shapes.KEYPOINT_NAMES)) and out.min() > 0 and out.max() < 1
    seg = segmenter.build(size=64)
    maps = np.asarray(seg(np.zeros((1, 64, 64, 3), np.float32)))
    assert maps.shape == (1, 64, 64, len(segmenter.CLASSES))
    np.testing.assert_allclose(maps.sum(axis=-1), 1.0, atol=1e-5)


# -- trained networks, shared by every test that converts them --------------------------------------

@pytest.fixture(scope="session")
def sets(tmp_path_factory) -> dict[str, Path]:
    """Calibration sets from the training photographs, validation sets from the held-out ones."""
    root = tmp_path_factory.mktemp("task_sets")
    side = segmenter.INPUT_SIZE
    return {
        "semantic-val": shapes.write_semantic(root / "sv", 80, seed=71, photos=shapes.HELD_OUT_PHOTOS, width=side, height=side),
        "semantic-calib": shapes.write_semantic(root / "sc", 60, seed=72, photos=shapes.TRAIN_PHOTOS, width=side, height=side),
        "landmarks-val": shapes.write_yolo_pose(root / "lv", 80, seed=73, photos=shapes.HELD_OUT_PHOTOS,
                                                width=posenet.INPUT_SIZE, height=posenet.INPUT_SIZE),
        "landmarks-calib": shapes.write_yolo_pose(root / "lc", 60, seed=74, photos=shapes.TRAIN_PHOTOS,
                                                  width=posenet.INPUT_SIZE, height=posenet.INPUT_SIZE),
        "instances-val": shapes.write_yolo_seg(root / "iv", 60, seed=75, photos=shapes.HELD_OUT_PHOTOS),
        "instances-calib": shapes.write_yolo_seg(root / "ic", 60, seed=76, photos=shapes.TRAIN_PHOTOS),
    }


@pytest.fixture(scope="session")
def trained_segmenter(tmp_path_factory) -> Path:
    images, maps = segmenter.training_data(1500, seed=1)
    model = segmenter.train(images, maps, epochs=9, seed=0)
    path = tmp_path_factory.mktemp("segmenter") / "shapes_segmenter.keras"
    model.save(path)
    return path


@pytest.fixture(scope="session")
def trained_landmarks(tmp_path_factory) -> Path:
    images, points, _ = posenet.training_data(1200, seed=1)
    model = posenet.train(images, points, epochs=8, seed=0)
    path = tmp_path_factory.mktemp("landmarks") / "shapes_landmarks.keras"
    model.save(path)
    return path


@pytest.fixture(scope="session")
def instance_onnx(tmp_path_factory, trained_segmenter) -> Path:
    from edge_sdk.converters import _tf
    from support.models import onnx_instance_seg

    model = _tf.keras3().saving.load_model(trained_segmenter, compile=False)
    return onnx_instance_seg.yolov8_seg_onnx(tmp_path_factory.mktemp("inst") / "shapes_seg.onnx", model)


@pytest.fixture(scope="session")
def bundles(tmp_path_factory, sets, trained_segmenter, trained_landmarks, instance_onnx):
    """``get(task, profile, precision)``: the conversion's result, converted once per session."""
    from edge_sdk.converters import convert

    made: dict = {}
    sources = {
        "semantic": (trained_segmenter, {}),
        "landmarks": (trained_landmarks, {"task": "pose", "keypoints": len(shapes.KEYPOINT_NAMES)}),
        # the mask mAP of a 40 x 40 prototype is coarse: its int8 drop is judged by the tests, not the budget
        "instances": (instance_onnx, {"max_drop": 100.0, "max_drop_map50_95": 100.0}),
    }

    def get(task: str, profile: str, precision: str | None):
        key = (task, profile, precision)
        if key not in made:
            source, options = sources[task]
            out = tmp_path_factory.mktemp(f"{task}-{profile}") / "bundle"
            made[key] = convert(source, profile=profile, precision=precision, out=out, calib=sets[f"{task}-calib"],
                                val=sets[f"{task}-val"], compile=False, min_calib=50, **options)
        return made[key]

    return get


def _pipeline(result):
    from edge_sdk.config import RunConfig
    from edge_sdk.pipeline import open_pipeline

    return open_pipeline(result.bundle.path, config=RunConfig(cpu_fallback=True))  # no Edge TPU here


# -- semantic segmentation --------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.timeout(600)
def test_segmenter_learns_the_scenes(trained_segmenter):
    from edge_sdk.converters import _tf

    model = _tf.keras3().saving.load_model(trained_segmenter, compile=False)
    images, maps = segmenter.training_data(150, seed=9, photos=shapes.HELD_OUT_PHOTOS)
    found = np.argmax(np.asarray(model.predict(images, verbose=0)), axis=-1)
    assert segmenter.mean_iou(found, maps) > 0.55  # chance (all background) is about 0.19
    assert segmenter.mean_iou(found > 0, maps > 0, num_classes=2) > 0.7


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("profile, precision", TARGETS, ids=TARGET_IDS)
def test_segmenter_converted_for_each_target_finds_the_shapes(bundles, profile, precision):
    result = bundles("semantic", profile, precision)
    accuracy, manifest = result.report.accuracy, result.bundle.manifest
    assert manifest.task.value == "segmentation" and manifest.decoder.kind == "segmentation"
    assert accuracy.reference.miou > 0.55 and accuracy.converted.miou is not None
    assert accuracy.reference.miou - accuracy.converted.miou <= MIOU_BUDGET, accuracy
    assert manifest.precision.value == (precision or "int8")
    if profile == "intel-cpu":
        assert manifest.inference_precision is not None and manifest.inference_precision.value == "f32"
    # The runtime, from the bundle alone, on frames three times the network's input: class maps over
    # the source frame that agree with the drawn shapes.
    pipeline = _pipeline(result)
    rng = np.random.default_rng(91)
    photos = shapes.photographs(shapes.HELD_OUT_PHOTOS)
    side = 3 * segmenter.INPUT_SIZE
    found, truth = [], []
    for _ in range(12):
        frame, instances = shapes.instance_scene(rng, photos, width=side, height=side, min_size=0.15, max_size=0.55)
        segmentation = pipeline.infer(frame).segmentation
        assert segmentation is not None and segmentation.class_map.shape == (side, side)
        found.append(segmentation.class_map)
        truth.append(shapes.class_map(instances, side, side))
    assert tuple(segmentation.labels) == shapes.SEGMENTATION_CLASSES
    assert segmenter.mean_iou(np.stack(found), np.stack(truth)) > 0.5


# -- landmarks --------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.timeout(600)
def test_landmark_network_learns_the_corners(trained_landmarks):
    from edge_sdk.converters import _tf

    model = _tf.keras3().saving.load_model(trained_landmarks, compile=False)
    images, points, diagonal = posenet.training_data(150, seed=9, photos=shapes.HELD_OUT_PHOTOS)
    found = np.asarray(model.predict(images, verbose=0))
    assert posenet.pck(found, points, diagonal) > 0.9
    assert posenet.pck(found, points, diagonal, threshold=0.05) > 0.6
    # Guessing each corner's average place scores far lower: the network reads the image.
    assert posenet.pck(np.broadcast_to(points.mean(axis=0), points.shape), points, diagonal) < 0.3


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("profile, precision", TARGETS, ids=TARGET_IDS)
def test_landmarks_converted_for_each_target_find_the_corners(bundles, profile, precision):
    result = bundles("landmarks", profile, precision)
    accuracy, manifest = result.report.accuracy, result.bundle.manifest
    assert manifest.task.value == "pose" and manifest.decoder.kind == "landmarks"
    assert accuracy.reference.pck > 0.85 and accuracy.converted.pck is not None
    assert accuracy.reference.pck - accuracy.converted.pck <= PCK_BUDGET, accuracy
    assert manifest.precision.value == (precision or "int8")
    pipeline = _pipeline(result)
    rng = np.random.default_rng(92)
    photos = shapes.photographs(shapes.HELD_OUT_PHOTOS)
    side = 3 * posenet.INPUT_SIZE
    found, truth, diagonal = [], [], []
    for _ in range(20):
        frame, (triangle,) = shapes.pose_scene(rng, photos, width=side, height=side)
        (detection,) = pipeline.infer(frame).detections
        points = detection.keypoints.array()
        assert points.shape == (len(shapes.KEYPOINT_NAMES), 3)
        found.append(points[:, :2].ravel())
        truth.append((triangle.keypoints[:, :2] / side).ravel())
        diagonal.append(math.hypot(triangle.box.x2 - triangle.box.x1, triangle.box.y2 - triangle.box.y1) / side)
    assert posenet.pck(np.array(found), np.array(truth), np.array(diagonal)) > 0.85


# -- instance segmentation: the Ultralytics-layout ONNX ---------------------------------------------

@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_instance_onnx_computes_its_parts(instance_onnx, trained_segmenter, engine):
    """Rows 0-7 are the shipped detector's v8 head, prototypes 0-4 the segmenter's class maps at H/4."""
    import onnx

    from edge_sdk.converters import _tf
    from support.models import onnx_detectors, onnx_instance_seg

    props = {p.key: p.value for p in onnx.load(str(instance_onnx)).metadata_props}
    assert props["task"] == "segment" and "'star'" in props["names"]
    model = _tf.keras3().saving.load_model(trained_segmenter, compile=False)
    rng = np.random.default_rng(5)
    photos = shapes.photographs(shapes.HELD_OUT_PHOTOS)
    batch = np.stack([shapes.instance_scene(rng, photos)[0][:, :, ::-1] / 255.0 for _ in range(3)]).astype(np.float32)
    rows, protos = onnx_instance_seg.reference_outputs(batch, model)
    for i in range(len(batch)):
        out0, out1 = onnx_detectors.run_onnx(instance_onnx, onnx_detectors.to_nchw(batch[i : i + 1]), engine=engine)
        assert out0.shape == (1, 40, 400) and out1.shape == (1, 32, 40, 40)
        np.testing.assert_allclose(out0[0, :8], rows[i], atol=1e-3)
        np.testing.assert_allclose(out1[0, :5], protos[i], atol=1e-4)
        assert np.all(out1[0, 5:31] == 0) and np.all(out1[0, 31] == 1)


INSTANCE_TARGETS = [("rpi5", None), ("intel-cpu", None), ("coral-usb", None), ("x86-onnx", None)]


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("profile, precision", INSTANCE_TARGETS, ids=["tflite-int8", "openvino-int8", "edgetpu-int8", "onnx-int8"])
def test_instance_onnx_converted_for_each_target_masks_the_shapes(bundles, profile, precision):
    result = bundles("instances", profile, precision)
    accuracy, manifest = result.report.accuracy, result.bundle.manifest
    assert result.report.source_format == "onnx" and manifest.decoder.kind == "yolo-seg"
    assert manifest.task.value == "instance-segmentation"
    assert accuracy.reference.map50 > 0.9 and accuracy.reference.mask_map50 > 0.7
    assert accuracy.reference.mask_map50_95 - accuracy.converted.mask_map50_95 <= 0.02, accuracy
    pipeline = _pipeline(result)
    rng = np.random.default_rng(93)
    photos = shapes.photographs(shapes.HELD_OUT_PHOTOS)
    best = []
    for _ in range(12):
        frame, instances = shapes.instance_scene(rng, photos, width=320, height=320, min_size=0.15)
        detections = [d for d in pipeline.infer(frame).detections if d.mask is not None]
        for o in instances:
            ious = [(d.mask.full() & o.mask).sum() / (d.mask.full() | o.mask).sum()
                    for d in detections if d.class_id == o.class_id]
            best.append(max(ious, default=0.0))
    assert len(best) >= 15 and np.mean(best) > 0.45
