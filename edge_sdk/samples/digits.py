"""Sample digits for examples and tests, from data installed with scikit-learn (no downloads).

They are scikit-learn's 1,797 8x8 handwritten digits, upscaled to small colour images on
tinted backgrounds and written in the folder layouts ``edge-sdk convert`` reads.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge_sdk.errors import DatasetError

DIGIT_NAMES = tuple(f"digit{i}" for i in range(10))


def digits(size: int = 32, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """All digits as ``size`` x ``size`` BGR uint8 images (light strokes on a tint) and their labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise DatasetError('the digits sample needs scikit-learn: pip install "edge-sdk[examples]"') from exc
    data = load_digits()
    rng = np.random.default_rng(seed)
    images = []
    for img in data.images:
        gray = cv2.resize((img / 16.0 * 255.0).astype(np.uint8), (size, size), interpolation=cv2.INTER_LINEAR)
        tint = rng.integers(0, 80, size=3)
        images.append(np.clip(gray[:, :, None].astype(np.int16) + tint, 0, 255).astype(np.uint8))
    return np.stack(images), data.target.astype(np.int64)


def split(n: int, *, seed: int = 0, val_fraction: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train and validation indices."""
    order = np.random.default_rng(seed).permutation(n)
    cut = int(n * (1 - val_fraction))
    return order[:cut], order[cut:]


def write_class_folders(root: Path, images: np.ndarray, labels: np.ndarray, names: tuple[str, ...] = DIGIT_NAMES) -> Path:
    """``root/<class name>/<n>.png``: the layout of --train and --val."""
    root.mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / names[label]
        folder.mkdir(exist_ok=True)
        cv2.imwrite(str(folder / f"{i:05d}.png"), image)
    return root


def write_flat(root: Path, images: np.ndarray) -> Path:
    """``root/<n>.png``: the layout of --calib."""
    root.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        cv2.imwrite(str(root / f"{i:05d}.png"), image)
    return root


def write_digits(root: str | Path, *, size: int = 32, calib: int = 256) -> dict[str, Path]:
    """Write train/, val/ and calib/ folders of the digits under ``root``; return their paths."""
    root = Path(root)
    images, labels = digits(size)
    train_idx, val_idx = split(len(images))
    return {
        "train": write_class_folders(root / "train", images[train_idx], labels[train_idx]),
        "val": write_class_folders(root / "val", images[val_idx], labels[val_idx]),
        "calib": write_flat(root / "calib", images[train_idx][:calib]),
    }
