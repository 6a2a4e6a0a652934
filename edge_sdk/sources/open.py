"""``open_source``: one entry point from a spec string to a running :class:`Source`."""

from __future__ import annotations

import importlib

from edge_sdk.errors import ConfigError
from edge_sdk.sources.base import EventCallback, Source
from edge_sdk.sources.options import SourceOptions
from edge_sdk.sources.spec import SourceKind, parse_spec

# kind -> (module, function); the module is imported only when that kind is opened.
BUILDERS: dict[SourceKind, tuple[str, str]] = {
    SourceKind.CAMERA: ("edge_sdk.sources.capture", "open_camera"),
    SourceKind.STREAM: ("edge_sdk.sources.capture", "open_stream"),
    SourceKind.GSTREAMER: ("edge_sdk.sources.capture", "open_gstreamer"),
    SourceKind.PICAMERA2: ("edge_sdk.sources.picamera2", "open_picamera2"),
    SourceKind.VIDEO: ("edge_sdk.sources.video", "open_video"),
    SourceKind.IMAGES: ("edge_sdk.sources.images", "open_images"),
}


def open_source(
    spec: str,
    *,
    fps: float | None = None,
    loop: bool = False,
    on_event: EventCallback | None = None,
    open_timeout_s: float = 2.0,
    read_timeout_s: float = 2.0,
    stall_after_s: float = 3.0,
    retries: int | None = None,
    backoff_initial_s: float = 0.5,
    backoff_max_s: float = 5.0,
) -> Source:
    """Open a frame source named by ``spec``.

    ``spec`` is a camera index (``"0"``) or V4L2 device (``/dev/video0``); a video file; an image
    folder, glob (``frames/*.png``) or single image; an ``rtsp://``, ``http(s)://`` (or other
    FFmpeg) URL; a GStreamer pipeline (``gst:...`` or any string with ``!``); or ``picamera2`` /
    ``picamera2:N`` for a CSI camera through Picamera2.

    Live sources (cameras, streams, pipelines, Picamera2) start a reader thread at once and never
    block here: a source that is absent is retried in the background. Their ``frames()`` hands out
    the newest frame only (older ones are dropped and counted) as soon as it arrives; they are not
    paced here (``fps`` is only passed on to a camera's driver): the pipeline's ``RunConfig.fps``
    caps them, and ``cmd/config`` changes it while they run. A lost source is reopened with capped
    exponential backoff (``backoff_initial_s`` doubling up to ``backoff_max_s``, with jitter), and ``frames()`` raises :class:`SourceError` after ``retries``
    consecutive failed attempts (``None``: retry forever). FFmpeg and GStreamer opens and reads give
    up after ``open_timeout_s`` and ``read_timeout_s``; no frame for ``stall_after_s`` is reported
    as a ``stalled`` event.

    Files and folders are read at their own pace and never drop a frame, unless ``fps`` asks for
    real-time playback: then frames are paced to the wall clock and the ones whose time has
    passed are dropped (counted). ``loop`` restarts them at the end.

    ``on_event`` receives :class:`SourceEvent` values (connected, stalled, resumed, reconnecting,
    skipped, ended, failed), one at a time, from the source's threads for live sources; keep it
    short. Raises :class:`ConfigError` for a bad argument and :class:`SourceError` for a source
    that cannot be used at all (a missing file, a back-end this OpenCV lacks).
    """
    options = SourceOptions(
        fps=fps,
        loop=loop,
        on_event=on_event,
        open_timeout_s=open_timeout_s,
        read_timeout_s=read_timeout_s,
        stall_after_s=stall_after_s,
        retries=retries,
        backoff_initial_s=backoff_initial_s,
        backoff_max_s=backoff_max_s,
    )
    parsed = parse_spec(spec)
    if loop and parsed.kind.live:
        raise ConfigError(f"loop applies to video files and image folders, not to the {parsed.kind.value} {parsed.name}")
    module, function = BUILDERS[parsed.kind]
    build = getattr(importlib.import_module(module), function)
    return build(parsed, options)
