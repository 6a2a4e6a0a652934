"""Telling what kind of source a spec string names, without opening anything."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from edge_sdk.errors import ConfigError, SourceError

STREAM_SCHEMES = frozenset({"rtsp", "rtsps", "http", "https", "rtmp", "rtmps", "srt", "udp", "tcp"})
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
_PICAMERA2 = re.compile(r"^picamera2(?::(\d+))?$")
_GLOB_CHARS = frozenset("*?[")


class SourceKind(str, Enum):
    CAMERA = "camera"
    STREAM = "stream"
    GSTREAMER = "gstreamer"
    PICAMERA2 = "picamera2"
    VIDEO = "video"
    IMAGES = "images"

    @property
    def live(self) -> bool:
        return self in (SourceKind.CAMERA, SourceKind.STREAM, SourceKind.GSTREAMER, SourceKind.PICAMERA2)


@dataclass(frozen=True)
class SourceSpec:
    """A parsed spec: its kind, what to open, and a name safe to print (no password)."""

    kind: SourceKind
    target: str | int
    name: str


def redact(url: str) -> str:
    """``rtsp://user:secret@host/`` -> ``rtsp://user:***@host/``: names end up in logs and MQTT."""
    return re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://[^/@:]*):[^/@]*@", r"\1:***@", url)


def parse_spec(spec: str) -> SourceSpec:
    """Classify ``spec``; paths are checked for existence, nothing is opened."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"spec must name a source (camera index, device, file, folder, URL or pipeline), got {spec!r}")
    spec = spec.strip()
    if spec.startswith("gst:"):
        return SourceSpec(SourceKind.GSTREAMER, spec[4:].strip(), spec)
    if match := _PICAMERA2.match(spec):
        return SourceSpec(SourceKind.PICAMERA2, int(match.group(1) or 0), spec)
    if match := _SCHEME.match(spec):
        scheme = match.group(1).lower()
        if scheme not in STREAM_SCHEMES:
            known = ", ".join(sorted(STREAM_SCHEMES))
            raise ConfigError(f"spec {redact(spec)!r}: unsupported URL scheme '{scheme}' (use one of {known})")
        return SourceSpec(SourceKind.STREAM, spec, redact(spec))
    if spec.isdigit():
        return SourceSpec(SourceKind.CAMERA, int(spec), f"camera {spec}")
    if spec.startswith("/dev/"):
        return SourceSpec(SourceKind.CAMERA, spec, spec)
    if "!" in spec and not Path(spec).exists():
        return SourceSpec(SourceKind.GSTREAMER, spec, f"gst:{spec}")
    return _parse_path(spec)


def _parse_path(spec: str) -> SourceSpec:
    # Imported here: edge_sdk.imagefolder loads cv2, and importing edge_sdk.sources should not.
    from edge_sdk.imagefolder import IMAGE_SUFFIXES

    path = Path(spec).expanduser()
    if path.is_dir():
        return SourceSpec(SourceKind.IMAGES, str(path), str(path))
    if path.is_file():
        kind = SourceKind.IMAGES if path.suffix.lower() in IMAGE_SUFFIXES else SourceKind.VIDEO
        return SourceSpec(kind, str(path), str(path))
    if _GLOB_CHARS & set(spec):
        return SourceSpec(SourceKind.IMAGES, str(path), str(path))
    raise SourceError(f"source {spec} does not exist (not a file, folder, glob, device, URL or pipeline)")
