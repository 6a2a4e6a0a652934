"""Installed model updates on the device: verify in staging, then one atomic rename makes it current.

Layout under the store's root::

    releases/<version>-<manifest sha[:12]>/   complete, verified bundles
    current -> releases/...                   what the runtime loads (a relative symlink)
    previous -> releases/...                  kept for rollback
    state.json                                versions, for rollback protection
    .staging-*/                               unpacked, not yet trusted; removed at every open

The swap is ``os.replace`` of a fresh symlink onto ``current``: a process killed at any moment
leaves ``current`` pointing at a complete bundle, old or new.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge_sdk.bundle import open_bundle
from edge_sdk.errors import BundleError, EdgeSDKError, UpdateError
from edge_sdk.ota.archive import extract_archive
from edge_sdk.ota.keys import verify_bundle_signature


@dataclass(frozen=True)
class InstallResult:
    path: Path
    version: int
    old_sha256: str | None
    new_sha256: str
    key_id: str


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _model_sha(folder: Path) -> str | None:
    try:
        manifest = open_bundle(folder).manifest
    except EdgeSDKError:
        return None
    return next((f.sha256 for f in manifest.files if f.path == manifest.model_file), None)


class BundleStore:
    """The device's installed updates."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.root / "releases").mkdir(exist_ok=True, mode=0o700)
        for stale in self.root.glob(".staging-*"):
            shutil.rmtree(stale, ignore_errors=True)  # an install killed midway
        for stale in self.root.glob(".link-*"):
            stale.unlink(missing_ok=True)

    # -- reading ------------------------------------------------------------------------------

    def _link(self, name: str) -> Path | None:
        path = self.root / name
        if not path.is_symlink():
            return None
        target = path.resolve()
        return target if target.is_dir() else None

    def current(self) -> Path | None:
        """The installed bundle the runtime should load, or None when no update was installed."""
        return self._link("current")

    def previous(self) -> Path | None:
        return self._link("previous")

    def state(self) -> dict:
        try:
            return json.loads((self.root / "state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def installed_version(self) -> int | None:
        return self.state().get("version")

    # -- writing ------------------------------------------------------------------------------

    def _write_state(self, state: dict) -> None:
        temp = self.root / f".state-{secrets.token_hex(4)}.json"
        with open(temp, "w", encoding="utf-8") as handle:
            json.dump(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, self.root / "state.json")
        _fsync_dir(self.root)

    def _point(self, name: str, target: Path) -> None:
        temp = self.root / f".link-{secrets.token_hex(4)}"
        os.symlink(os.path.relpath(target, self.root), temp)
        os.replace(temp, self.root / name)
        _fsync_dir(self.root)

    def install(
        self, archive: bytes, *, public_keys: dict, check: Callable[[Path], None] | None = None, max_bytes: int,
    ) -> InstallResult:
        """Unpack, verify (signature, hashes, version), trial-run via ``check``, then swap atomically."""
        if len(archive) > max_bytes:
            raise UpdateError(f"the update archive is larger than {max_bytes} bytes")
        staging = self.root / f".staging-{secrets.token_hex(8)}"
        try:
            extract_archive(archive, staging, max_bytes=max_bytes)
            signature = verify_bundle_signature(staging, public_keys)
            try:
                open_bundle(staging)
            except BundleError as exc:
                raise UpdateError(f"the update is not a valid bundle: {str(exc).replace(f'bundle {staging}: ', '')}") from None
            highest = self.state().get("highest_version")
            if highest is not None and signature.version <= highest:
                raise UpdateError(f"update version {signature.version} is not newer than installed version {highest}")
            if check is not None:
                try:
                    check(staging)
                except Exception as exc:  # noqa: BLE001 - any failure of the new model rejects it
                    detail = str(exc) if isinstance(exc, EdgeSDKError) else f"{type(exc).__name__}: {exc}"
                    raise UpdateError(f"the new model failed its trial run: {detail}") from None
            release = self.root / "releases" / f"{signature.version}-{signature.manifest_sha256[:12]}"
            if release.exists():
                shutil.rmtree(release)
            os.replace(staging, release)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        old = self.current()
        old_sha = _model_sha(old) if old is not None else None
        if old is not None:
            self._point("previous", old)
        self._point("current", release)
        self._write_state({
            "version": signature.version, "highest_version": max(signature.version, self.state().get("highest_version") or 0),
            "current": release.name, "previous": old.name if old is not None else None, "key_id": signature.key_id,
        })
        self._prune()
        return InstallResult(release, signature.version, old_sha, _model_sha(release) or "", signature.key_id)

    def rollback(self) -> Path | None:
        """Make the previous release current again (the new one failed after the swap).

        With no previous release, the store forgets ``current`` so the runtime's own bundle is used.
        The highest version seen is kept: the failed update stays refused.
        """
        previous = self.previous()
        state = self.state()
        if previous is None:
            (self.root / "current").unlink(missing_ok=True)
            _fsync_dir(self.root)
            self._write_state({**state, "current": None, "version": None})
            return None
        self._point("current", previous)
        (self.root / "previous").unlink(missing_ok=True)
        version = int(previous.name.split("-", 1)[0]) if previous.name.split("-", 1)[0].isdigit() else None
        self._write_state({**state, "current": previous.name, "previous": None, "version": version})
        return previous

    def _prune(self) -> None:
        keep = {p.name for p in (self.current(), self.previous()) if p is not None}
        for release in (self.root / "releases").iterdir():
            if release.name not in keep:
                shutil.rmtree(release, ignore_errors=True)
