"""Video files, decoded by whatever back-end this OpenCV has for them (FFmpeg in the PyPI wheels)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge_sdk.errors import SourceError
from edge_sdk.sources.options import SourceOptions
from edge_sdk.sources.playback import PlaybackSource, Reader
from edge_sdk.sources.spec import SourceSpec


class _VideoPass:
    def __init__(self, path: str, name: str) -> None:
        self._name = name
        try:
            self._capture = cv2.VideoCapture(path)
        except cv2.error as exc:
            raise SourceError(f"cannot open video {name}: {' '.join(str(exc).split())}") from exc
        if not self._capture.isOpened():
            self._capture.release()
            raise SourceError(f"cannot decode video {name} (not a video, or no codec for it in this OpenCV)")
        rate = self._capture.get(cv2.CAP_PROP_FPS)
        self.fps = rate if 0 < rate < 1000 else None  # the file's own frame rate: its frames' media time

    def describe(self) -> str:
        count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = self._capture.get(cv2.CAP_PROP_FPS)
        return f"{self._name} opened ({count} frames at {fps:g} fps)"

    def __next__(self) -> Reader:
        # grab() only demuxes; retrieve() decodes, so a dropped frame costs little.
        if not self._capture.grab():
            raise StopIteration
        return self._retrieve

    def _retrieve(self) -> np.ndarray:
        ok, image = self._capture.retrieve()
        if not ok or image is None:
            raise SourceError(f"{self._name}: a frame could not be decoded")
        return image

    def close(self) -> None:
        self._capture.release()


def open_video(spec: SourceSpec, options: SourceOptions) -> PlaybackSource:
    path = str(Path(spec.target))
    first = _VideoPass(path, spec.name)
    passes = iter([first])

    def open_pass() -> _VideoPass:
        return next(passes, None) or _VideoPass(path, spec.name)

    return PlaybackSource(spec.name, open_pass, options, detail=first.describe())
