"""Train a small digit classifier, then prune it 50 % and quantize it to int8 for a Raspberry Pi 4.

Everything runs offline: the images are scikit-learn's digits. Usage:

    python examples/convert_digits.py [--workdir DIR] [--profile rpi4] [--epochs 8]

It prints the conversion report (accuracy reference vs converted, sizes, sparsity) and leaves the
bundle in DIR/bundle, ready for `edge-sdk inspect DIR/bundle`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from rich.console import Console

from edge_sdk import EdgeSDKError
from edge_sdk.converters import _tf, convert
from edge_sdk.imagefolder import list_labelled, read_image
from edge_sdk.preprocess import Preprocessing, preprocess
from edge_sdk.render import report_tables
from edge_sdk.samples.digits import write_digits


def load_training_arrays(folder: Path, spec: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    """Use the runtime's own preprocessing for training too, so nothing differs on the device."""
    listing = list_labelled(folder)
    x = np.concatenate([preprocess(read_image(p), spec)[0] for p in listing.paths])
    return x, np.asarray(listing.labels)


def train(folders: dict[str, Path], *, epochs: int, path: Path) -> Path:
    keras = _tf.keras3()
    keras.utils.set_random_seed(0)
    spec = Preprocessing(width=32, height=32, channels=3)
    x, y = load_training_arrays(folders["train"], spec)
    inp = keras.Input((32, 32, 3))
    h = keras.layers.Conv2D(32, 3, activation="relu")(inp)
    h = keras.layers.Conv2D(32, 3, activation="relu")(h)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Conv2D(64, 3, activation="relu")(h)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Dense(128, activation="relu")(keras.layers.Flatten()(h))
    model = keras.Model(inp, keras.layers.Dense(10, activation="softmax")(h))
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=2)
    model.save(path)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None, help="where data, model and bundle go")
    parser.add_argument("--profile", default="rpi4", help="device profile (edge-sdk profiles list)")
    parser.add_argument("--epochs", type=int, default=8, help="training epochs of the float model")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="edge-sdk-digits-"))
    console = Console()
    try:
        console.print(f"[bold]1/3[/] writing the digits images to {workdir}")
        folders = write_digits(workdir / "data")
        console.print("[bold]2/3[/] training the float classifier")
        model = train(folders, epochs=args.epochs, path=workdir / "digits.keras")
        console.print(f"[bold]3/3[/] pruning 50 % and quantizing to int8 for profile {args.profile}")
        result = convert(
            model, profile=args.profile, out=workdir / "bundle", calib=folders["calib"], val=folders["val"],
            train=folders["train"], prune=0.5, epochs=2,
        )
    except EdgeSDKError as exc:
        print(f"convert_digits: error: {exc}", file=sys.stderr)
        return 2
    console.print(report_tables(result.report))
    console.print(f"bundle: {result.bundle.path}  (inspect it with: edge-sdk inspect {result.bundle.path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
