"""Live sources read through ``cv2.VideoCapture``: cameras, network streams, GStreamer pipelines."""

from __future__ import annotations

import math
import os
import sys

import cv2

from edge_sdk.errors import SourceError
from edge_sdk.sources.live import LiveSource
from edge_sdk.sources.options import SourceOptions
from edge_sdk.sources.spec import SourceSpec

_APPSINK = "videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=1 sync=false"


def has_backend(api: int) -> bool:
    # getBackends() also lists plugin back-ends that are not installed; hasBackend() does not.
    return bool(cv2.videoio_registry.hasBackend(api))


def complete_pipeline(pipeline: str) -> str:
    """End a pipeline in a BGR appsink that keeps one buffer, unless it already has an appsink."""
    return pipeline if "appsink" in pipeline else f"{pipeline} ! {_APPSINK}"


def _timeouts(options: SourceOptions) -> list[int]:
    return [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, max(1, round(options.open_timeout_s * 1000)),
        cv2.CAP_PROP_READ_TIMEOUT_MSEC, max(1, round(options.read_timeout_s * 1000)),
    ]


def _open(target: str | int, api: int, params: list[int], name: str, why: str) -> cv2.VideoCapture:
    try:
        capture = cv2.VideoCapture(target, api, params)
    except cv2.error as exc:
        raise SourceError(f"cannot open {name}: {' '.join(str(exc).split())}") from exc
    if not capture.isOpened():
        capture.release()
        raise SourceError(f"cannot open {name} ({why})")
    return capture


def open_stream(spec: SourceSpec, options: SourceOptions) -> LiveSource:
    if not has_backend(cv2.CAP_FFMPEG):
        raise SourceError(
            f"{spec.name}: this OpenCV ({cv2.__version__}) has no FFmpeg back-end for network streams; "
            "install opencv-python-headless from PyPI or Debian's python3-opencv"
        )
    params = _timeouts(options)
    why = f"no answer or no video within {options.open_timeout_s:g} s"

    def opener() -> cv2.VideoCapture:
        return _open(spec.target, cv2.CAP_FFMPEG, params, spec.name, why)

    return LiveSource(spec.name, opener, options)


def open_camera(spec: SourceSpec, options: SourceOptions) -> LiveSource:
    linux_v4l2 = sys.platform.startswith("linux") and has_backend(cv2.CAP_V4L2)
    api = cv2.CAP_V4L2 if linux_v4l2 else cv2.CAP_ANY

    if api == cv2.CAP_V4L2:
        # V4L2 ignores CAP_PROP_READ_TIMEOUT_MSEC and waits 10 s for each frame of a stalled camera;
        # OpenCV reads this variable (whole seconds) once, at the first V4L2 read in the process.
        os.environ.setdefault("OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT", str(max(1, math.ceil(options.read_timeout_s))))

    def opener() -> cv2.VideoCapture:
        capture = _open(spec.target, api, [], spec.name, "absent, busy or not a camera")
        if options.fps is not None:
            capture.set(cv2.CAP_PROP_FPS, options.fps)
        return capture

    return LiveSource(spec.name, opener, options)


def open_gstreamer(spec: SourceSpec, options: SourceOptions) -> LiveSource:
    if not has_backend(cv2.CAP_GSTREAMER):
        raise SourceError(
            f"{spec.name}: this OpenCV ({cv2.__version__}, PyPI wheels included) is built without GStreamer; "
            "install Debian/Raspberry Pi OS python3-opencv (built with GStreamer) and make the venv with "
            "--system-site-packages, or build OpenCV with -DWITH_GSTREAMER=ON"
        )
    pipeline = complete_pipeline(str(spec.target))
    params = _timeouts(options)
    why = f"the pipeline did not start within {options.open_timeout_s:g} s"

    def opener() -> cv2.VideoCapture:
        return _open(pipeline, cv2.CAP_GSTREAMER, params, spec.name, why)

    return LiveSource(spec.name, opener, options)

