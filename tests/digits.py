"""Real image data for tests: scikit-learn's digits, upscaled to small RGB images on disk."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def digits_arrays(size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as ``size`` x ``size`` BGR uint8 images (white on a tinted background) and labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = []
    rng = np.random.default_rng(0)
    for img in digits.images:
        gray = (img / 16.0 * 255.0).astype(np.uint8)
        big = cv2.resize(gray, (size, size), interpolation=cv2.INTER_LINEAR)
        tint = rng.integers(0, 80, size=3)
        bgr = np.clip(big[:, :, None].astype(np.int16) + tint[None, None, :], 0, 255).astype(np.uint8)
        images.append(bgr)
    return np.stack(images), digits.target.astype(np.int64)


def split(n: int, *, seed: int = 0, val_fraction: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    cut = int(n * (1 - val_fraction))
    return order[:cut], order[cut:]


def write_class_folders(root: Path, images: np.ndarray, labels: np.ndarray, names: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / names[label]
        folder.mkdir(exist_ok=True)
        cv2.imwrite(str(folder / f"{i:05d}.png"), image)
    return root


def write_flat(root: Path, images: np.ndarray) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        cv2.imwrite(str(root / f"{i:05d}.png"), image)
    return root
