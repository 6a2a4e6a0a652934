"""Calibration, validation and training images, read and fitted with the runtime's own preprocessing."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_sdk.errors import DatasetError
from edge_sdk.imagefolder import list_images, list_labelled, read_image
from edge_sdk.preprocess import Preprocessing, fit, normalize


@dataclass(frozen=True)
class ImageSet:
    """Images already fitted to the model size (uint8, model colour order), with optional labels."""

    images: np.ndarray  # N x H x W x C uint8
    labels: np.ndarray | None = None  # N int
    class_names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def batches(self, spec: Preprocessing, *, size: int) -> Iterator[np.ndarray]:
        """Float model inputs, ``size`` images at a time, in order."""
        for start in range(0, len(self), size):
            yield normalize(self.images[start : start + size], spec)


def _fit_all(paths: list[Path], spec: Preprocessing) -> np.ndarray:
    fitted = []
    for path in paths:
        image, _ = fit(read_image(path), spec)
        if image.ndim == 2:
            image = image[:, :, None]
        fitted.append(image)
    return np.stack(fitted)


def load_calibration(folder: str | Path, spec: Preprocessing, *, limit: int, minimum: int, seed: int = 0) -> ImageSet:
    """Up to ``limit`` images from anywhere below ``folder`` (a seeded sample when there are more)."""
    paths = list_images(folder, what="calibration folder")
    if len(paths) < minimum:
        raise DatasetError(
            f"calibration folder {folder} has {len(paths)} images; int8 calibration needs at least {minimum} "
            "(set --min-calib to accept fewer)"
        )
    if len(paths) > limit:
        order = np.random.default_rng(seed).permutation(len(paths))[:limit]
        paths = [paths[i] for i in sorted(order)]
    return ImageSet(_fit_all(paths, spec))


def load_labelled(
    folder: str | Path, spec: Preprocessing, *, what: str, class_names: list[str] | None = None
) -> ImageSet:
    """A class-per-sub-folder dataset, fitted to the model."""
    listing = list_labelled(folder, what=what, class_names=class_names)
    images = _fit_all(list(listing.paths), spec)
    return ImageSet(images, np.asarray(listing.labels, dtype=np.int64), listing.class_names)
