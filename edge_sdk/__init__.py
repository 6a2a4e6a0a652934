"""edge-sdk: image-recognition models from a workstation to the edge.

This package is the on-device runtime and the bundle format. It never imports TensorFlow; the
workstation converters live in :mod:`edge_sdk.converters` and are imported only when used.
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

__all__ = [
    "AccuracyBudgetError",
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
