"""The tests' digits classifier: its inputs and its architecture (trained by the session fixtures in tests/conftest.py)."""

from __future__ import annotations

import numpy as np


def model_inputs(images: np.ndarray) -> np.ndarray:
    """Digits images as the tests' classifiers take them: fitted to 32x32 RGB and normalized, one batch."""
    from edge_sdk.preprocess import Preprocessing, fit, normalize

    spec = Preprocessing(width=32, height=32, channels=3)
    return np.concatenate([normalize(fit(image, spec)[0], spec) for image in images])


def build_cnn(layers_module, *, seed: int = 0):
    """A small CNN of ~325k parameters (over the 100k the size checks need)."""
    L = layers_module
    inp = L.Input((32, 32, 3))
    h = L.Conv2D(32, 3, activation="relu")(inp)
    h = L.Conv2D(32, 3, activation="relu")(h)
    h = L.MaxPooling2D()(h)
    h = L.Conv2D(64, 3, activation="relu")(h)
    h = L.MaxPooling2D()(h)
    h = L.Flatten()(h)
    h = L.Dense(128, activation="relu")(h)
    out = L.Dense(10, activation="softmax")(h)
    return inp, out
