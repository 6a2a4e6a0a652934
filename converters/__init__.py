"""Workstation converters: prune, quantize and compile models into edge-sdk bundles.

Importing this package is cheap; TensorFlow and friends load when a conversion starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge_sdk.converters.api import ConversionResult, convert

__all__ = ["ConversionResult", "convert"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from edge_sdk.converters import api

        return getattr(api, name)
    raise AttributeError(name)
