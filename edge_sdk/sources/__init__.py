"""Frame sources for the runtime: cameras, streams, GStreamer pipelines, Picamera2, files, folders.

``open_source(spec, ...)`` returns a :class:`Source`; OpenCV and Picamera2 are imported only when
a source of that kind is opened.
"""

from edge_sdk.sources.base import Frame, Source, SourceEvent, SourceState, SourceStats
from edge_sdk.sources.open import open_source
from edge_sdk.sources.options import SourceOptions
from edge_sdk.sources.spec import SourceKind, SourceSpec, parse_spec

__all__ = [
    "Frame",
    "Source",
    "SourceEvent",
    "SourceKind",
    "SourceOptions",
    "SourceSpec",
    "SourceState",
    "SourceStats",
    "open_source",
    "parse_spec",
]
