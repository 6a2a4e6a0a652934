"""The shipped shapes detector: its committed weights hold their recorded held-out mAP, and its
training script runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_sdk.converters import detection_eval
from edge_sdk.converters.assets import DETECTOR, DETECTOR_INFO
from edge_sdk.preprocess import Preprocessing
from edge_sdk.samples import detector, shapes
from support import ROOT

pytestmark = pytest.mark.slow


def _map(model_path: Path, dataset) -> float:
    from edge_sdk.converters._tf import keras3

    model = keras3().models.load_model(model_path, compile=False)
    found = detection_eval.predict_all(lambda batch: [np.asarray(model(batch, training=False))], dataset,
                                       decoder="yolo", options=detector.DECODER_OPTIONS)
    return detection_eval.detection_metrics(found, dataset.truth, len(shapes.CLASSES))


@pytest.mark.timeout(300)
def test_shipped_weights_reach_their_recorded_map_on_fresh_held_out_scenes(tmp_path):
    info = json.loads(DETECTOR_INFO.read_text())
    assert DETECTOR.stat().st_size < 5 * 2**20  # "a few MB at most"
    assert info["classes"] == list(shapes.CLASSES) and info["held_out"]["map50"] >= 0.8
    # Scenes the recorded figure never saw: another seed, on photographs training never saw.
    root = shapes.write_yolo(tmp_path / "fresh", 150, seed=424242, photos=shapes.HELD_OUT_PHOTOS)
    spec = Preprocessing(width=detector.INPUT_SIZE, height=detector.INPUT_SIZE, channels=3)
    scores = _map(DETECTOR, detection_eval.load_yolo(root, spec, what="held-out"))
    assert scores.map50 >= 0.8
    assert abs(scores.map50 - info["held_out"]["map50"]) <= 0.05
    assert scores.map50_95 < scores.map50


@pytest.mark.timeout(600)
def test_training_script_trains_saves_and_scores_a_detector(tmp_path):
    out = tmp_path / "det.keras"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "train_detector.py"), "--epochs", "2", "--images", "64",
         "--val-images", "20", "--out", str(out), "--write-val", str(tmp_path / "val")],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["training"]["epochs"] == 2 and info["held_out"]["images"] == 20
    assert 0 <= info["held_out"]["map50"] <= 1
    assert detection_eval.is_yolo_dataset(tmp_path / "val")
    assert "held-out (20 scenes" in proc.stdout


def test_training_script_refuses_bad_options_in_one_line():
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "train_detector.py"), "--epochs", "0"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].endswith("--epochs must be at least 1")
