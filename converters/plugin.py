"""The plugin target: a bundle for a third-party engine, packaged in the model format the plugin reads.

The plugin's class says what it ``consumes`` ("onnx" or "tflite"); this target is then the ONNX
or TFLite target, accuracy measured in our own engine for that format on this machine (the
plugin's hardware is usually not on the workstation). The manifest's target is ``plugin`` and its
profile names the engine, so the device opens the plugin.
"""

from __future__ import annotations

from collections.abc import Iterator

from edge_sdk.backends import plugins
from edge_sdk.converters.targets import Attempt, Job, Packaged, get


def format_of(engine: str) -> str:
    """The model format the plugin ``engine`` reads (imports the plugin, which must be installed here)."""
    return plugins.consumes(engine)


class PluginTarget:
    """Delegates to the target of the plugin's model format."""

    def _inner(self, job: Job):
        return get(format_of(job.device.engine))

    def preflight(self, job: Job) -> None:
        self._inner(job).preflight(job)

    def float_model(self, job: Job) -> bytes:
        return self._inner(job).float_model(job)

    def attempts(self, job: Job) -> Iterator[Attempt]:
        return self._inner(job).attempts(job)

    def package(self, job: Job, attempt: Attempt) -> Packaged:
        return self._inner(job).package(job, attempt)
