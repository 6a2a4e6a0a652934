"""Reading --val sets of the new tasks: semantic label images, YOLO polygons and YOLO pose labels,
written in tmp_path; every bad input gives one DatasetError naming the file (and line)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_sdk.converters.pose_eval import load_pose
from edge_sdk.converters.segmentation_eval import is_semantic_dataset, load_semantic, load_yolo_seg
from edge_sdk.errors import DatasetError
from edge_sdk.preprocess import Preprocessing, ResizeMode

SPEC = Preprocessing(width=32, height=32, channels=3, resize=ResizeMode.LETTERBOX)


def _image(path: Path, width: int, height: int, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8))


def _semantic(root: Path, count: int = 2, width: int = 48, height: int = 40) -> Path:
    (root / "masks").mkdir(parents=True)
    (root / "classes.txt").write_text("background\ncat\ndog\n")
    for i in range(count):
        _image(root / "images" / f"{i:03d}.jpg", width, height, seed=i)
        labels = np.zeros((height, width), dtype=np.uint8)
        labels[5:20, 10:30] = 1 + i % 2
        labels[0, :] = 255
        cv2.imwrite(str(root / "masks" / f"{i:03d}.png"), labels)
    return root


def test_semantic_set_reads_label_images_at_source_size(tmp_path):
    root = _semantic(tmp_path / "set")
    assert is_semantic_dataset(root)
    data = load_semantic(root, SPEC, what="--val")
    assert data.class_names == ("background", "cat", "dog") and len(data) == 2
    assert data.images.shape == (2, 32, 32, 3)
    assert data.truth[0].shape == (40, 48) and data.truth[0][10, 15] == 1 and data.truth[1][10, 15] == 2
    assert data.truth[0][0, 0] == 255 and data.placements[0].source_width == 48


def test_semantic_set_errors_name_the_file(tmp_path):
    root = _semantic(tmp_path / "set")
    cv2.imwrite(str(root / "masks" / "001.png"), np.zeros((40, 47), dtype=np.uint8))
    with pytest.raises(DatasetError, match=r"001\.png is 47x40 but its image is 48x40"):
        load_semantic(root, SPEC, what="--val")
    cv2.imwrite(str(root / "masks" / "001.png"), np.full((40, 48), 3, dtype=np.uint8))
    with pytest.raises(DatasetError, match=r"001\.png holds class id 3, but there are 3 classes"):
        load_semantic(root, SPEC, what="--val")
    colours = np.zeros((40, 48, 3), dtype=np.uint8)
    colours[:, :, 2] = 128
    cv2.imwrite(str(root / "masks" / "001.png"), colours)
    with pytest.raises(DatasetError, match=r"001\.png has colours"):
        load_semantic(root, SPEC, what="--val")
    (root / "masks" / "001.png").unlink()
    with pytest.raises(DatasetError, match=r"image 001\.jpg has no label image .*001\.png"):
        load_semantic(root, SPEC, what="--val")
    (root / "classes.txt").unlink()
    with pytest.raises(DatasetError, match="names no classes"):
        load_semantic(root, SPEC, what="--val")
    with pytest.raises(DatasetError, match="not a segmentation dataset"):
        load_semantic(tmp_path, SPEC, what="--val")


def _yolo(root: Path, lines: list[str], *, width: int = 50, height: int = 40, yaml: str = "names: [a, b]\n") -> Path:
    _image(root / "images" / "000.jpg", width, height)
    (root / "labels").mkdir(parents=True)
    (root / "labels" / "000.txt").write_text("".join(line + "\n" for line in lines))
    (root / "data.yaml").write_text(yaml)
    return root


def test_polygons_become_masks_and_boxes_in_source_pixels(tmp_path):
    root = _yolo(tmp_path / "set", ["1 0.2 0.25 0.6 0.25 0.6 0.75 0.2 0.75", "0 0.5 0.1 0.9 0.1 0.7 0.5"])
    data = load_yolo_seg(root, SPEC, what="--val")
    boxes, masks = data.truth[0], data.masks[0]
    assert boxes[0].tolist() == pytest.approx([1, 10, 10, 30, 30])
    assert masks[0].area == 20 * 20 and masks[0].frame_size == (50, 40)
    assert boxes[1, 0] == 0 and 0 < masks[1].area < 20 * 16 / 2 + 20  # a triangle: about half its box


@pytest.mark.parametrize("line, message", [
    ("0 0.1 0.1 0.5 0.5", "at least 3 points"),
    ("0 0.1 0.1 0.5 0.5 0.9", "at least 3 points"),
    ("2 0.1 0.1 0.5 0.5 0.9 0.9", "class below 2"),
    ("0 0.1 0.1 0.5 1.5 0.9 0.9", "0-1"),
    ("x 0.1 0.1 0.5 0.5 0.9 0.9", "expected 'class x1 y1"),
])
def test_bad_polygon_lines_name_the_file_and_line(tmp_path, line, message):
    root = _yolo(tmp_path / "set", ["0 0.1 0.1 0.5 0.1 0.5 0.5", line])
    with pytest.raises(DatasetError, match=rf"000\.txt:2: .*{message}"):
        load_yolo_seg(root, SPEC, what="--val")


POSE_YAML = "names: [person]\nkpt_shape: [3, 3]\n"


def test_pose_labels_read_boxes_and_keypoints(tmp_path):
    root = _yolo(tmp_path / "set", ["0 0.5 0.5 0.4 0.5 0.5 0.5 2 0.4 0.3 1 0 0 0"], yaml=POSE_YAML)
    data = load_pose(root, SPEC, what="--val")
    assert data.kpt_shape == (3, 3) and data.class_names == ("person",)
    assert np.allclose(data.truth[0], [[0, 15, 10, 35, 30]])
    assert np.allclose(data.keypoints[0], [[[25, 20, 2], [20, 12, 1], [0, 0, 0]]])
    two = _yolo(tmp_path / "two", ["0 0.5 0.5 0.4 0.5 0.5 0.5 0 0"], yaml="names: [hand]\nkpt_shape: [2, 2]\n")
    assert load_pose(two, SPEC, what="--val").keypoints[0][0, :, 2].tolist() == [2, 0]  # (0, 0): not labelled


def test_pose_label_errors_name_the_file_and_line(tmp_path):
    root = _yolo(tmp_path / "set", ["0 0.5 0.5 0.4 0.5 0.5 0.5 2 0.4 0.3 1 0 0 0", "0 0.5 0.5 0.4 0.5 0.5 0.5 2"],
                 yaml=POSE_YAML)
    with pytest.raises(DatasetError, match=r"000\.txt:2: expected 14 values for kpt_shape \[3, 3\].*got 8"):
        load_pose(root, SPEC, what="--val")
    (root / "labels" / "000.txt").write_text("0 0.5 0.5 0.4 0.5 0.5 0.5 2 0.4 1.3 1 0 0 0\n")
    with pytest.raises(DatasetError, match=r"000\.txt:1: .*0-1 keypoints"):
        load_pose(root, SPEC, what="--val")
    (root / "labels" / "000.txt").write_text("0 0.5 0.5 0.4 0.5 0.5 0.5 2 0.4 0.3 1 0 0 0\n" * 2)
    with pytest.raises(DatasetError, match=r"000\.txt: a landmark model is scored on one object per image"):
        load_pose(root, SPEC, what="--val", landmarks=True)
    (root / "data.yaml").write_text("names: [person]\n")
    with pytest.raises(DatasetError, match=r"data\.yaml lacks kpt_shape"):
        load_pose(root, SPEC, what="--val")
    (root / "data.yaml").write_text("names: [person]\nkpt_shape: [3, 4]\n")
    with pytest.raises(DatasetError, match=r"kpt_shape must be \[K, 2\] or \[K, 3\]"):
        load_pose(root, SPEC, what="--val")
    (root / "data.yaml").unlink()
    with pytest.raises(DatasetError, match="has no data.yaml"):
        load_pose(root, SPEC, what="--val")
