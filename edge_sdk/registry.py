"""Explicit, lazy registries: a name maps to "module:attribute", imported only when asked for."""

from __future__ import annotations

import importlib


def resolve(registry: dict[str, str], name: str, *, error: type[Exception], what: str) -> object:
    """The attribute ``registry[name]`` names, importing its module now; ``error`` for an unknown name."""
    try:
        spec = registry[name]
    except KeyError as exc:
        raise error(f"no {what} '{name}' (known: {', '.join(sorted(registry))})") from exc
    module_name, _, attribute = spec.partition(":")
    return getattr(importlib.import_module(module_name), attribute)
