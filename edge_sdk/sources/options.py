"""The knobs of :func:`~edge_sdk.sources.open_source`, checked once, carried as one frozen value."""

from __future__ import annotations

import math
from dataclasses import dataclass

from edge_sdk.errors import ConfigError
from edge_sdk.sources.base import EventCallback


def _positive(name: str, value: object, unit: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a positive number of {unit}, got {value!r}")


@dataclass(frozen=True)
class SourceOptions:
    """Validated options; see :func:`~edge_sdk.sources.open_source` for what each one does."""

    fps: float | None = None
    loop: bool = False
    on_event: EventCallback | None = None
    open_timeout_s: float = 2.0
    read_timeout_s: float = 2.0
    stall_after_s: float = 3.0
    retries: int | None = None
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 5.0  # keeps "frames back within 10 s of the source returning" with connect time

    def __post_init__(self) -> None:
        if self.fps is not None:
            _positive("fps", self.fps, "frames per second")
        if not isinstance(self.loop, bool):
            raise ConfigError(f"loop must be True or False, got {self.loop!r}")
        if self.on_event is not None and not callable(self.on_event):
            raise ConfigError(f"on_event must be a callable taking a SourceEvent, got {self.on_event!r}")
        for name in ("open_timeout_s", "read_timeout_s", "stall_after_s", "backoff_initial_s", "backoff_max_s"):
            _positive(name, getattr(self, name), "seconds")
        if self.retries is not None and (
            isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0
        ):
            raise ConfigError(f"retries must be None (retry forever) or an integer >= 0, got {self.retries!r}")
        if self.backoff_max_s < self.backoff_initial_s:
            raise ConfigError(
                f"backoff_max_s ({self.backoff_max_s}) must be at least backoff_initial_s ({self.backoff_initial_s})"
            )
