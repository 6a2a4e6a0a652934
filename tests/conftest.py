"""Shared fixtures: real digits images on disk and real models trained on them (once per session)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the support package
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from edge_sdk.samples.digits import digits as digits_arrays, split, write_class_folders, write_flat  # noqa: E402
from support.digits import build_cnn, model_inputs  # noqa: E402
from support.fixtures import (  # noqa: E402, F401 (fixtures for every module)
    mosquitto, own_postgres, password_mosquitto, peers, pki, postgres, postgres_db, tls_mosquitto,
)

LONG_ENV = "EDGE_SDK_LONG"


def pytest_addoption(parser) -> None:
    parser.addoption("--long", action="store_true", help=f"run the long reliability tier (tests marked long; or {LONG_ENV}=1)")


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked ``long`` (an hour and more) are skipped unless asked for: --long, EDGE_SDK_LONG=1 or -m long."""
    if config.getoption("--long") or os.environ.get(LONG_ENV) == "1" or config.getoption("markexpr", "").strip() == "long":
        return
    skip = pytest.mark.skip(reason=f"long reliability tier: pass --long or set {LONG_ENV}=1")
    for item in items:
        if item.get_closest_marker("long") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def digits(tmp_path_factory) -> dict:
    """Digits as 32x32 RGB images: train/val class folders, a flat calibration folder, and arrays."""
    root = tmp_path_factory.mktemp("digits")
    images, labels = digits_arrays(32)
    train_idx, val_idx = split(len(images))
    return {
        "train": write_class_folders(root / "train", images[train_idx], labels[train_idx]),
        "val": write_class_folders(root / "val", images[val_idx], labels[val_idx]),
        "calib": write_flat(root / "calib", images[train_idx][:256]),
        "images": images,
        "labels": labels,
        "train_idx": train_idx,
        "val_idx": val_idx,
    }


def _train(module, digits: dict, *, epochs: int = 10):
    module.utils.set_random_seed(0)
    inp, out = build_cnn(module.layers)
    model = module.Model(inp, out)
    model.compile(module.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    x = model_inputs(digits["images"][digits["train_idx"]])
    model.fit(x, digits["labels"][digits["train_idx"]], epochs=epochs, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="session")
def keras3_model(digits, tmp_path_factory) -> Path:
    """A Keras 3 classifier trained on the digits, saved as .keras."""
    from edge_sdk.converters import _tf

    model = _train(_tf.keras3(), digits)
    path = tmp_path_factory.mktemp("k3") / "digits.keras"
    model.save(path)
    return path


@pytest.fixture(scope="session")
def tfkeras_model(digits, tmp_path_factory) -> Path:
    """The same classifier built and trained with tf-keras (Keras 2), saved as .h5."""
    from edge_sdk.converters import _tf

    model = _train(_tf.tf_keras(), digits)
    path = tmp_path_factory.mktemp("tfk") / "digits.h5"
    model.save(path)
    return path


@pytest.fixture(scope="session", autouse=True)
def background_soak(request, tmp_path_factory):
    """Gate C's CI soak: 6 minutes of ``edge-sdk run`` in its own process with its own broker,
    started with the session when a test marked ``background_soak`` is selected, so it runs beside
    the other tests instead of adding 5 minutes to the run (and sees a busy machine, as a device
    does). That test calls ``finish()``, which waits for the end if it comes first. None when no
    such test is selected."""
    if not any(item.get_closest_marker("background_soak") for item in request.session.items):
        yield None
        return
    from support.broker import Mosquitto
    from support.reliability.scenarios import CI_SOAK, Soak, small_bundle

    folder = tmp_path_factory.mktemp("background-soak")
    bundle = small_bundle(request.getfixturevalue("digits"), folder)
    with Mosquitto(folder / "mosquitto") as broker:
        run = Soak(bundle, broker, folder, CI_SOAK)
        try:
            yield run
        finally:
            run.kill()


@pytest.fixture(scope="session")
def shapes_bundle(tmp_path_factory) -> Path:
    """The shipped shapes detector as the device runs it: int8 for x86-cpu, letterboxed (as the demo
    converts it, without pruning), calibrated on 60 generated scenes; about half a minute, once."""
    from edge_sdk.converters import convert
    from edge_sdk.converters.assets import DETECTOR
    from edge_sdk.samples import shapes

    root = tmp_path_factory.mktemp("shapes-bundle")
    calib = shapes.write_yolo(root / "calib", 60, seed=1, photos=shapes.TRAIN_PHOTOS)
    convert(DETECTOR, profile="x86-cpu", out=root / "bundle", calib=calib, resize="letterbox", min_calib=50, name="shapes-detector")
    return root / "bundle"
