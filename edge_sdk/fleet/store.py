"""The fleet's stores: SQLite (one file, several processes) and PostgreSQL, picked by :func:`open_store`.

Both keep the same tables (``edge_sdk.fleet.schema``) and share one write path (``edge_sdk.fleet.sql``).
"""

from __future__ import annotations

import importlib
import os

from edge_sdk.errors import StoreError
from edge_sdk.fleet.sql import SQLStore
from edge_sdk.fleet.urls import redact

__all__ = ["SQLStore", "open_store", "redact"]


# scheme -> (module, class): a backend's module is imported only when a URL asks for it.
STORES = {
    "postgresql": ("edge_sdk.fleet.postgres", "PostgresStore"),
    "postgres": ("edge_sdk.fleet.postgres", "PostgresStore"),
    "sqlite": ("edge_sdk.fleet.sqlite", "SQLiteStore"),
}


def open_store(target: str | os.PathLike) -> SQLStore:
    """A store for ``postgresql://…`` / ``postgres://…`` (PostgreSQL), ``sqlite:///path`` or a plain path (SQLite).

    ``sqlite:///fleet.db`` is relative to the working folder, ``sqlite:////var/lib/fleet.db`` absolute.
    """
    text = os.fspath(target) if isinstance(target, os.PathLike) else str(target)
    if not text.strip():
        raise StoreError("no store given: pass a postgresql:// URL, a sqlite:/// URL or a file path")
    scheme, _, rest = text.partition("://") if "://" in text else ("sqlite", "", "/" + text)
    scheme = scheme.lower()
    if scheme not in STORES:
        raise StoreError(f"unsupported store {redact(text)}: use postgresql://…, sqlite:///path or a file path")
    module, name = STORES[scheme]
    if scheme == "sqlite":
        if not rest.startswith("/") or len(rest) == 1:
            raise StoreError(f"store URL {redact(text)} names no file: write sqlite:///relative.db or sqlite:////absolute.db")
        text = rest[1:]
    return getattr(importlib.import_module(module), name)(text)
