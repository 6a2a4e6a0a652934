"""CSI cameras on a Raspberry Pi through Picamera2 (libcamera), which only Raspberry Pi OS ships."""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_sdk.errors import SourceError
from edge_sdk.sources.live import LiveSource
from edge_sdk.sources.options import SourceOptions
from edge_sdk.sources.spec import SourceSpec

INSTALL_HINT = (
    "Picamera2 is not installed: install python3-picamera2 (sudo apt install python3-picamera2) "
    "and create the venv with --system-site-packages"
)


def _camera_class() -> Any:
    try:
        from picamera2 import Picamera2
    except ImportError as exc:
        raise SourceError(INSTALL_HINT) from exc
    return Picamera2


class _PicameraCapture:
    """Picamera2 behind the read/release pair a live source expects."""

    def __init__(self, camera_class: Any, camera_num: int, name: str, fps: float | None) -> None:
        self._name = name
        self._camera = None
        try:
            self._camera = camera_class(camera_num)
            # libcamera names formats by little-endian word order: "RGB888" is B, G, R in memory,
            # which is OpenCV's BGR.
            controls = {"FrameRate": fps} if fps else {}
            self._camera.configure(
                self._camera.create_video_configuration(main={"format": "RGB888"}, controls=controls)
            )
            self._camera.start()
        except Exception as exc:
            self.release()
            raise SourceError(f"cannot open {name}: {exc}") from exc

    def read(self) -> tuple[bool, np.ndarray]:
        try:
            return True, self._camera.capture_array("main")
        except Exception as exc:
            raise SourceError(f"{self._name}: capture failed: {exc}") from exc

    def release(self) -> None:
        if self._camera is None:
            return
        camera, self._camera = self._camera, None
        for step in (camera.stop, camera.close):
            try:
                step()
            except Exception:  # noqa: S110 - a dead camera may refuse to stop; reopening is what matters
                pass


def open_picamera2(spec: SourceSpec, options: SourceOptions) -> LiveSource:
    camera_class = _camera_class()

    def opener() -> _PicameraCapture:
        return _PicameraCapture(camera_class, int(spec.target), spec.name, options.fps)

    return LiveSource(spec.name, opener, options)
