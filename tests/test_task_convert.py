"""`edge-sdk convert` on a semantic segmentation model: scored on an images/ + masks/ set (mean IoU,
pixel accuracy, pixel agreement, a pixel confusion matrix), and a bad set refused with one line."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_sdk.cli import main
from support import snapshot

pytestmark = pytest.mark.slow


def _scene_set(root: Path, count: int, *, seed: int) -> Path:
    """Dark frames with bright rectangles; the label image marks the rectangles as class 1."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("background\nbright\n")
    for i in range(count):
        height, width = 40, 48
        image = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
        labels = np.zeros((height, width), dtype=np.uint8)
        for _ in range(2):
            x, y = int(rng.integers(0, width - 16)), int(rng.integers(0, height - 16))
            w, h = int(rng.integers(8, 16)), int(rng.integers(8, 16))
            image[y:y + h, x:x + w] = rng.integers(200, 256, 3)
            labels[y:y + h, x:x + w] = 1
        cv2.imwrite(str(root / "images" / f"{i:03d}.png"), image)
        cv2.imwrite(str(root / "masks" / f"{i:03d}.png"), labels)
    return root


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory) -> Path:
    """A fixed 1x1 convolution: class 1 where the pixel is bright, softmax over 2 classes, [1, 24, 24, 2]."""
    from edge_sdk.converters import _tf

    keras = _tf.keras3()
    inp = keras.Input((24, 24, 3))
    conv = keras.layers.Conv2D(2, 1, activation="softmax")
    model = keras.Model(inp, conv(inp))
    conv.set_weights([np.array([[[[-4.0, 4.0]] * 3]]).reshape(1, 1, 3, 2), np.array([6.0, -6.0])])
    path = tmp_path_factory.mktemp("seg") / "segmenter.keras"
    model.save(path)
    return path


def test_convert_scores_a_segmenter_on_its_masks(segmenter, tmp_path, capsys):
    val = _scene_set(tmp_path / "val", 8, seed=1)
    out = tmp_path / "bundle"
    rc = main(["convert", str(segmenter), "--profile", "x86-cpu", "--precision", "int8", "--calib", str(val / "images"),
               "--min-calib", "4", "--val", str(val), "--out", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "mean IoU" in printed and "pixel agreement" in printed
    from edge_sdk.bundle import open_bundle

    report = open_bundle(out).manifest.report
    a = report.accuracy
    assert a.reference.miou > 0.8 and a.reference.pixel_accuracy > 0.9  # the edges blur at 24 px, the rest is exact
    assert a.converted.miou == pytest.approx(a.reference.miou, abs=0.02)
    assert a.agreement > 0.97 and a.within_budget and a.drop_map50_95_points is None
    assert a.reference.score_name == "mean IoU" and a.confusion_matrix == "confusion_matrix.png"
    assert (out / "confusion_matrix.png").is_file()


@pytest.mark.parametrize("damage, message", [
    (lambda root: cv2.imwrite(str(root / "masks" / "001.png"), np.zeros((40, 40), np.uint8)), "is 40x40 but its image is 48x40"),
    (lambda root: cv2.imwrite(str(root / "masks" / "001.png"), np.full((40, 48), 7, np.uint8)), "holds class id 7"),
    (lambda root: (root / "masks" / "001.png").unlink(), "has no label image"),
    (lambda root: (root / "masks").rename(root / "labels"), "a segmentation model is scored on a segmentation dataset"),
])
def test_a_bad_segmentation_set_is_one_line_exit_2(segmenter, tmp_path, capsys, damage, message):
    val = _scene_set(tmp_path / "val", 3, seed=2)
    damage(val)
    out = tmp_path / "bundle"
    before = snapshot(out)
    rc = main(["convert", str(segmenter), "--profile", "x86-cpu", "--precision", "fp32", "--val", str(val),
               "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("edge-sdk: error: ") and message in err[0]
    assert snapshot(out) == before


def test_pose_predictions_go_through_the_runtime_decoder_back_to_source_pixels(tmp_path):
    """A raw YOLO-pose head that says exactly the labels (in model-input pixels, after a stretch) scores
    1.0; moving every keypoint by 20 % of its box lowers the keypoint mAP but not the box mAP."""
    from edge_sdk.converters import evaluate
    from edge_sdk.converters.pose_eval import load_pose
    from edge_sdk.bundle import Decoder
    from edge_sdk.preprocess import Preprocessing

    root = tmp_path / "pose"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "data.yaml").write_text("names: [person]\nkpt_shape: [3, 3]\n")
    cv2.imwrite(str(root / "images" / "000.png"), np.zeros((40, 50, 3), np.uint8))
    people = [(0.3, 0.4, 0.3, 0.5, [(0.25, 0.3, 2), (0.35, 0.5, 2), (0.3, 0.6, 1)]),
              (0.7, 0.5, 0.2, 0.6, [(0.65, 0.3, 2), (0.75, 0.7, 2), (0.0, 0.0, 0)])]
    (root / "labels" / "000.txt").write_text("".join(
        f"0 {cx} {cy} {w} {h} " + " ".join(f"{x} {y} {v}" for x, y, v in points) + "\n" for cx, cy, w, h, points in people))
    spec = Preprocessing(width=32, height=32, channels=3)
    val = load_pose(root, spec, what="--val")

    def head(shift: float) -> list[np.ndarray]:
        columns = []
        for cx, cy, w, h, points in people:
            kpts = [(32 * (x + shift * w), 32 * y, 0.9) for x, y, _ in points]
            columns.append([32 * cx, 32 * cy, 32 * w, 32 * h, 0.95, *np.ravel(kpts)])
        return [np.asarray(columns, dtype=np.float32).T[None]]

    decoder = Decoder(kind="yolo-pose", options={"kpt_shape": [3, 3]})
    exact = evaluate._predict(lambda batch: head(0.0), val, decoder)
    scores = evaluate.score(val, exact, 1)
    assert scores.kpt_map50_95 == pytest.approx(1.0) and scores.map50_95 == pytest.approx(1.0)
    moved = evaluate._predict(lambda batch: head(0.2), val, decoder)
    worse = evaluate.score(val, moved, 1)
    assert worse.kpt_map50_95 < 0.9 and worse.map50_95 == pytest.approx(1.0)
    assert evaluate.agreement(val, exact, moved) == 1.0


def test_instance_masks_go_through_the_runtime_decoder_back_to_source_pixels(tmp_path):
    """A raw YOLO -seg head and prototypes that draw exactly the labelled rectangle score mask mAP 1;
    prototypes one cell off lower the mask mAP and leave the box mAP at 1."""
    from edge_sdk.bundle import Decoder
    from edge_sdk.converters import evaluate
    from edge_sdk.converters.segmentation_eval import load_yolo_seg
    from edge_sdk.preprocess import Preprocessing

    root = tmp_path / "seg"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "classes.txt").write_text("thing\n")
    cv2.imwrite(str(root / "images" / "000.png"), np.zeros((64, 64, 3), np.uint8))
    (root / "labels" / "000.txt").write_text("0 0.25 0.125 0.75 0.125 0.75 0.625 0.25 0.625\n")
    val = load_yolo_seg(root, Preprocessing(width=32, height=32, channels=3), what="--val")
    assert val.masks[0][0].area == 32 * 32

    def outputs(offset: int) -> list[np.ndarray]:
        head = np.array([[16, 12, 16, 16, 0.9, 1.0]], dtype=np.float32).T[None]  # cx cy w h in model pixels
        protos = np.full((1, 1, 8, 8), -10.0, dtype=np.float32)
        protos[0, 0, 1 + offset:5 + offset, 2:6] = 10.0  # cells of 4 model pixels: the box's cells
        return [head, protos]

    decoder = Decoder(kind="yolo-seg", options={"num_masks": 1})
    exact = evaluate.score(val, evaluate._predict(lambda batch: outputs(0), val, decoder), 1)
    assert exact.mask_map50_95 > 0.95 and exact.map50_95 == pytest.approx(1.0)
    off = evaluate.score(val, evaluate._predict(lambda batch: outputs(1), val, decoder), 1)
    assert off.mask_map50_95 < 0.8 and off.map50_95 == pytest.approx(1.0)


def test_instance_and_pose_heads_keep_their_decode_in_float_like_detectors():
    """The int8 targets keep the decode of every head that decodes boxes; a segmentation map or a
    landmark regressor has none to keep."""
    from edge_sdk.bundle import Task
    from edge_sdk.converters.heads import Head
    from edge_sdk.converters.models import SourceModel

    def source(task: Task, decoder: str) -> SourceModel:
        return SourceModel(name="m", kind="keras3", model=None, input_shape=(8, 8, 3), output_shapes=(), output_names=(),
                           head=Head(task, decoder, 1))

    assert source(Task.DETECTION, "yolo").boxes_head and source(Task.INSTANCE_SEGMENTATION, "yolo-seg").boxes_head
    assert source(Task.POSE, "yolo-pose").boxes_head
    assert not source(Task.POSE, "landmarks").boxes_head and not source(Task.SEGMENTATION, "segmentation").boxes_head
    assert not source(Task.CLASSIFICATION, "classification").boxes_head


def test_landmarks_go_through_the_runtime_decoder_and_score_pck(tmp_path):
    """A landmark regressor's raw points (model pixels, stretch) equal to the labels score PCK 1; one
    point moved past 0.1 x the box diagonal loses exactly that point."""
    from edge_sdk.bundle import Decoder
    from edge_sdk.converters import evaluate
    from edge_sdk.converters.pose_eval import load_pose
    from edge_sdk.preprocess import Preprocessing

    root = tmp_path / "hands"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "data.yaml").write_text("names: [hand]\nkpt_shape: [3, 3]\n")
    points = [(0.3, 0.3), (0.5, 0.6), (0.7, 0.4)]
    for i in range(2):
        cv2.imwrite(str(root / "images" / f"{i}.png"), np.zeros((40, 50, 3), np.uint8))
        (root / "labels" / f"{i}.txt").write_text("0 0.5 0.45 0.5 0.5 " + " ".join(f"{x} {y} 2" for x, y in points) + "\n")
    val = load_pose(root, Preprocessing(width=32, height=32, channels=3), what="--val", landmarks=True)

    def outputs(moved: bool) -> list[np.ndarray]:
        xy = np.array(points) * 32
        if moved:
            xy[0, 0] += 32 * 0.2  # 10 source pixels: past 0.1 x the box's diagonal (25 x 20 px: 3.2 px)
        return [xy.reshape(1, -1).astype(np.float32)]

    decoder = Decoder(kind="landmarks", options={"num_keypoints": 3, "dims": 2})
    exact = evaluate._predict(lambda batch: outputs(False), val, decoder)
    assert evaluate.score(val, exact, 1).pck == pytest.approx(1.0)
    moved = evaluate._predict(lambda batch: outputs(True), val, decoder)
    assert evaluate.score(val, moved, 1).pck == pytest.approx(4 / 6)
    assert evaluate.agreement(val, exact, moved) == pytest.approx(4 / 6)
