"""edge-sdk: image-recognition models from a workstation to the edge.

This package is the on-device runtime and the bundle format. It never imports TensorFlow; the
workstation converters live in :mod:`edge_sdk.converters` and are imported only when used.

The Python API is :class:`Runtime` with its :class:`RunConfig` (and :class:`CameraConfig` for each
camera); both are loaded on first use, so ``import edge_sdk`` stays light.
"""

from edge_sdk.errors import (
    AccuracyBudgetError,
    BundleError,
    ConfigError,
    ConversionError,
    DatasetError,
    EdgeSDKError,
    EngineError,
    ModelError,
    ProfileError,
    PublishError,
    SourceError,
)

__version__ = "0.1.0"

_LAZY = {"Runtime": "edge_sdk.runtime", "RunConfig": "edge_sdk.config", "CameraConfig": "edge_sdk.config",
         "CameraState": "edge_sdk.camera",
         "FrameResult": "edge_sdk.results", "Detection": "edge_sdk.results"}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edge_sdk' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "AccuracyBudgetError",
    "CameraConfig",
    "CameraState",
    "Detection",
    "FrameResult",
    "RunConfig",
    "Runtime",
    "BundleError",
    "ConfigError",
    "ConversionError",
    "DatasetError",
    "EdgeSDKError",
    "EngineError",
    "ModelError",
    "ProfileError",
    "PublishError",
    "SourceError",
    "__version__",
]
