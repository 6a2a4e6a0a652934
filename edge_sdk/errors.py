"""One error tree for the whole SDK.

Every failure a user can cause or meet is an :class:`EdgeSDKError`; the CLI prints its message on
one line and exits with code 2. Third-party failures are translated at the boundary with
``raise X(...) from exc`` so the cause stays in the chain for debugging.
"""

from __future__ import annotations


class EdgeSDKError(Exception):
    """Root of every error edge-sdk raises on purpose."""

    exit_code = 2


class ProfileError(EdgeSDKError):
    """A device profile is unknown, unreadable or has a wrong field."""


class BundleError(EdgeSDKError):
    """A bundle is missing, malformed, tampered with or cannot be written."""


class ModelError(EdgeSDKError):
    """An input model is missing, corrupt or not an image model."""


class DatasetError(EdgeSDKError):
    """An image folder is missing, empty or laid out wrongly."""


class ConversionError(EdgeSDKError):
    """Pruning, quantization or compilation failed."""


class AccuracyBudgetError(ConversionError):
    """The converted model lost more accuracy than the budget allows, even after the remedies.

    Carries the finished report so callers can show what was tried.
    """

    def __init__(self, message: str, *, report: object | None = None) -> None:
        super().__init__(message)
        self.report = report


class EngineError(EdgeSDKError):
    """An inference engine is not installed or cannot run the model."""


class ConfigError(EdgeSDKError):
    """A configuration value or file is invalid."""


class SourceError(EdgeSDKError):
    """A frame source cannot be opened or read."""


class PublishError(EdgeSDKError):
    """Messages cannot be published."""


class UpdateError(EdgeSDKError):
    """A model update was refused: bad signature, bad hash, unsafe archive, or it failed to run."""


class CommandError(EdgeSDKError):
    """A fleet command was malformed, unknown or not allowed."""


class StoreError(EdgeSDKError):
    """A fleet store (SQLite, PostgreSQL) cannot be opened or written."""


class StoreUnavailable(StoreError):
    """The store is down for now (a database restarting, a connection lost): retry the same batch."""


class RolloutError(EdgeSDKError):
    """A rollout cannot start or go on: bad stages, a bundle the fleet would refuse, no known device."""
