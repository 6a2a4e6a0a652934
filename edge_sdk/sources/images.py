"""Image folders, globs and single images, read with :mod:`edge_sdk.imagefolder`."""

from __future__ import annotations

import glob
from functools import partial
from pathlib import Path

import numpy as np

from edge_sdk.errors import DatasetError, SourceError
from edge_sdk.imagefolder import IMAGE_SUFFIXES, list_images, read_image
from edge_sdk.sources.options import SourceOptions
from edge_sdk.sources.playback import PlaybackSource, Reader
from edge_sdk.sources.spec import SourceSpec


def find_images(target: str) -> list[Path]:
    """A folder (recursive), a single image, or a glob (``**`` allowed); sorted, never empty."""
    path = Path(target)
    if path.is_dir():
        try:
            return list_images(path, what="image folder")
        except DatasetError as exc:
            raise SourceError(str(exc)) from exc
    if path.is_file():
        return [path]
    found = sorted(
        Path(p) for p in glob.glob(target, recursive=True)
        if Path(p).suffix.lower() in IMAGE_SUFFIXES and Path(p).is_file()
    )
    if not found:
        raise SourceError(f"glob {target} matches no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return found


def _read(path: Path) -> np.ndarray:
    try:
        return read_image(path)
    except DatasetError as exc:
        raise SourceError(str(exc)) from exc


class _ImagesPass:
    def __init__(self, paths: list[Path]) -> None:
        self._paths = iter(paths)

    def __next__(self) -> Reader:
        return partial(_read, next(self._paths))

    def close(self) -> None:
        pass


def open_images(spec: SourceSpec, options: SourceOptions) -> PlaybackSource:
    paths = find_images(str(spec.target))
    detail = f"{spec.name} opened ({len(paths)} images)"
    return PlaybackSource(spec.name, lambda: _ImagesPass(paths), options, detail=detail)
