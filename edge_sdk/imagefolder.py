"""Image folders: plain folders of images, and class-per-sub-folder datasets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_sdk.errors import DatasetError
from edge_sdk.imagesize import FORMATS, declared_size, is_supported

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm"})
# 8192 x 8192: larger than any camera frame, and 200 MB as BGR; a decompression bomb stops here.
MAX_IMAGE_PIXELS = 8192 * 8192


def list_images(folder: str | Path, *, what: str = "image folder") -> list[Path]:
    """Every image file below ``folder`` (recursive), sorted; an error if there are none."""
    folder = Path(folder)
    if not folder.exists():
        raise DatasetError(f"{what} {folder} does not exist")
    if not folder.is_dir():
        raise DatasetError(f"{what} {folder} is not a folder")
    found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not found:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise DatasetError(f"{what} {folder} holds no images ({suffixes})")
    return found


def read_image(path: str | Path) -> np.ndarray:
    """An image file as a BGR (or grayscale) uint8 array, the way a camera frame arrives.

    The size in the header is checked before decoding: OpenCV allocates whatever a header declares
    (up to 2^30 pixels), so a few hundred bytes could otherwise cost gigabytes.
    """
    if Path(path).exists() and not Path(path).is_file():
        raise DatasetError(f"{path} is not a regular file")  # a FIFO or a device would block or never end
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path} cannot be read: {exc.strerror or exc}") from exc
    if not is_supported(data):
        raise DatasetError(f"{path} is not a readable image ({FORMATS})")
    size = declared_size(data)
    if size is None:
        raise DatasetError(f"{path} is not a readable image: its header is damaged")
    width, height = size
    if width * height > MAX_IMAGE_PIXELS:
        raise DatasetError(f"{path} declares {width}x{height} pixels, more than the limit of {MAX_IMAGE_PIXELS:,}")
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise DatasetError(f"{path} is not a readable image: {str(exc).strip().splitlines()[-1][:200]}") from exc
    if image is None or image.size == 0:
        raise DatasetError(f"{path} is not a readable image")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.dtype != np.uint8:
        raise DatasetError(f"{path} has {image.dtype} pixels; 8- and 16-bit images are supported")
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] not in (1, 3):
        raise DatasetError(f"{path} has {image.shape[2]} channels; 1, 3 or 4 are supported")
    return image


@dataclass(frozen=True)
class LabelledFolder:
    """A class-per-sub-folder dataset: ``root/<class name>/*.png``."""

    root: Path
    class_names: tuple[str, ...]
    paths: tuple[Path, ...]
    labels: tuple[int, ...]


def list_labelled(folder: str | Path, *, what: str = "dataset", class_names: list[str] | None = None) -> LabelledFolder:
    """Read the Keras ``image_dataset_from_directory`` layout: one sub-folder per class, sorted by name.

    With ``class_names`` (from a labels file), sub-folders must carry those names; the index in
    that list is the class id.
    """
    folder = Path(folder)
    if not folder.exists():
        raise DatasetError(f"{what} {folder} does not exist")
    if not folder.is_dir():
        raise DatasetError(f"{what} {folder} is not a folder")
    subfolders = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subfolders:
        raise DatasetError(f"{what} {folder} has no class sub-folders (expected {folder}/<class>/<image>)")
    names = list(class_names) if class_names is not None else subfolders
    index = {name: i for i, name in enumerate(names)}
    unknown = [name for name in subfolders if name not in index]
    if unknown:
        raise DatasetError(f"{what} {folder}: sub-folder '{unknown[0]}' is not one of the labels")
    paths: list[Path] = []
    labels: list[int] = []
    for name in subfolders:
        images = sorted(
            p for p in (folder / name).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )
        paths.extend(images)
        labels.extend([index[name]] * len(images))
    if not paths:
        raise DatasetError(f"{what} {folder} holds no images in its class sub-folders")
    return LabelledFolder(folder, tuple(names), tuple(paths), tuple(labels))
