"""`edge-sdk annotate`: a real segmentation bundle's class map drawn on images and on a video, and
bad destinations refused with one line, exit 2 and nothing written."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_sdk.cli import main
from support import snapshot

SIZE = 48


def _frame(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A dark frame with one bright rectangle, and where the rectangle is."""
    image = rng.integers(0, 50, (SIZE, SIZE, 3), dtype=np.uint8)
    truth = np.zeros((SIZE, SIZE), dtype=bool)
    x, y = int(rng.integers(4, 24)), int(rng.integers(4, 24))
    image[y : y + 16, x : x + 16] = 230
    truth[y : y + 16, x : x + 16] = True
    return image, truth


@pytest.fixture(scope="module")
def segmentation_bundle(tmp_path_factory) -> Path:
    """A fixed 1x1 convolution (class 'bright' where a pixel is bright), converted fp32 for x86-cpu."""
    from edge_sdk.converters import _tf, convert

    keras = _tf.keras3()
    inp = keras.Input((SIZE, SIZE, 3))
    conv = keras.layers.Conv2D(2, 1, activation="softmax")
    model = keras.Model(inp, conv(inp))
    conv.set_weights([np.array([[[[-4.0, 4.0]] * 3]]).reshape(1, 1, 3, 2), np.array([6.0, -6.0])])
    root = tmp_path_factory.mktemp("annotate")
    labels = root / "labels.txt"
    labels.write_text("background\nbright\n")
    convert(model, profile="x86-cpu", out=root / "bundle", precision="fp32", labels=labels, task="segmentation")
    return root / "bundle"


def _tinted(original: np.ndarray, drawn: np.ndarray) -> np.ndarray:
    return np.abs(drawn.astype(np.int16) - original.astype(np.int16)).max(axis=-1) > 8


def test_images_get_their_class_map_drawn_where_the_class_is(segmentation_bundle, tmp_path, capsys):
    rng = np.random.default_rng(3)
    folder = tmp_path / "images"
    folder.mkdir()
    truths = {}
    for name in ("a.jpg", "b.png"):
        image, truth = _frame(rng)
        cv2.imwrite(str(folder / name), image, [cv2.IMWRITE_JPEG_QUALITY, 100])
        truths[Path(name).stem] = (cv2.imread(str(folder / name)), truth)
    out = tmp_path / "drawn"
    assert main(["annotate", str(segmentation_bundle), str(folder), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "a.png: background" in printed and "bright" in printed and "2 images annotated" in printed
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]
    for stem, (original, truth) in truths.items():
        drawn = cv2.imread(str(out / f"{stem}.png"))
        tinted = _tinted(original, drawn)
        # Every pixel of the rectangle is tinted, and nothing outside it (background is left as it was).
        assert tinted[truth].mean() > 0.99 and tinted[~truth].mean() < 0.01


def test_a_video_becomes_an_annotated_video_of_the_same_length(segmentation_bundle, tmp_path, capsys):
    rng = np.random.default_rng(4)
    video = tmp_path / "in.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (SIZE, SIZE))
    for _ in range(6):
        writer.write(_frame(rng)[0])
    writer.release()
    out = tmp_path / "out.avi"
    assert main(["annotate", str(segmentation_bundle), str(video), "--out", str(out), "--max-frames", "5"]) == 0
    assert "5 frames annotated" in capsys.readouterr().out
    capture = cv2.VideoCapture(str(out))
    frames = 0
    while capture.read()[0]:
        frames += 1
    capture.release()
    assert frames == 5
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging file left


@pytest.mark.parametrize("setup, args, message", [
    (lambda d: (d / "drawn").mkdir() or (d / "drawn" / "keep.txt").write_text("mine"), ["--out", "{d}/drawn"],
     "is not an empty folder; refusing to overwrite it"),
    (lambda d: (d / "out.mp4").write_bytes(b"mine"), ["--out", "{d}/out.mp4"], "exists; refusing to overwrite it"),
    (lambda d: None, ["--out", "{d}/missing/drawn"], "is not a folder"),
])
def test_a_bad_destination_is_one_line_exit_2_and_nothing_changes(segmentation_bundle, tmp_path, capsys, setup, args, message):
    folder = tmp_path / "images"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), _frame(np.random.default_rng(5))[0])
    setup(tmp_path)
    source = str(folder)
    if "out.mp4" in args[1]:
        source = str(tmp_path / "in.avi")
        writer = cv2.VideoWriter(source, cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (SIZE, SIZE))
        writer.write(_frame(np.random.default_rng(6))[0])
        writer.release()
    before = snapshot(tmp_path)
    rc = main(["annotate", str(segmentation_bundle), source, *[a.format(d=tmp_path) for a in args]])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and message in err[0], err
    assert snapshot(tmp_path) == before


def test_a_live_source_is_refused(segmentation_bundle, tmp_path, capsys):
    rc = main(["annotate", str(segmentation_bundle), "rtsp://127.0.0.1:9/x", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "reads images or a video file, not a stream source" in err[0], err
