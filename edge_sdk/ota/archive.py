"""Bundle archives: deterministic .tar.gz out, and extraction that trusts nothing in.

Extraction is done member by member rather than with ``extractall``: only regular files and
folders, no absolute paths, no ``..``, no links, no devices, no duplicates, and hard caps on the
file count and on the bytes actually written (so a gzip bomb stops at the cap, not at the disk).
"""

from __future__ import annotations

import io
import ssl
import tarfile
import zlib
from pathlib import Path, PurePosixPath

from edge_sdk.bundle import MANIFEST_NAME, open_bundle
from edge_sdk.errors import UpdateError
from edge_sdk.ota.keys import SIGNATURE_NAME

_CHUNK = 1 << 16


def pack_bundle(folder: Path) -> bytes:
    """The bundle's manifest, signature and files as a gzip'd tar, byte-for-byte reproducible."""
    folder = Path(folder)
    bundle = open_bundle(folder)
    names = [MANIFEST_NAME] + ([SIGNATURE_NAME] if (folder / SIGNATURE_NAME).is_file() else [])
    names += sorted(entry.path for entry in bundle.manifest.files)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name in names:
            data = (folder / name).read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime, info.uid, info.gid = len(data), 0o644, 0, 0, 0
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _safe_name(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    # "." (tar -C bundle .) has no parts at all; it names the bundle folder itself.
    if not name or path.is_absolute() or name.startswith(("/", "\\")) or (path.parts and ":" in path.parts[0]):
        raise UpdateError(f"archive member {name[:80]!r} has an absolute path")
    if any(part == ".." for part in path.parts) or "\\" in name or "\x00" in name:
        raise UpdateError(f"archive member {name[:80]!r} points outside the bundle")
    return path


def extract_archive(data: bytes, dest: Path, *, max_bytes: int, max_files: int = 64) -> None:
    """Unpack ``data`` into the new folder ``dest``; UpdateError on anything unsafe or malformed."""
    dest = Path(dest)
    if len(data) == 0:
        raise UpdateError("the update archive is empty")
    if data[:2] != b"\x1f\x8b":
        raise UpdateError("the update is not a .tar.gz bundle archive")
    dest.mkdir(mode=0o700)
    seen: set[str] = set()
    written = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r|gz") as tar:
            for member in tar:
                path = _safe_name(member.name)
                key = str(path)
                if key in seen:
                    raise UpdateError(f"archive member {key[:80]!r} appears twice")
                seen.add(key)
                if len(seen) > max_files:
                    raise UpdateError(f"the update archive has more than {max_files} files")
                if member.isdir():
                    (dest / path).mkdir(parents=True, exist_ok=True, mode=0o700)
                    continue
                if not member.isreg():
                    kind = "link" if member.issym() or member.islnk() else "device or special file"
                    raise UpdateError(f"archive member {key[:80]!r} is a {kind}; only regular files are accepted")
                if written + member.size > max_bytes:
                    raise UpdateError(f"the update unpacks to more than {max_bytes} bytes")
                target = dest / path
                target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                source = tar.extractfile(member)
                with open(target, "xb") as out:
                    while chunk := source.read(_CHUNK):
                        written += len(chunk)
                        if written > max_bytes:
                            raise UpdateError(f"the update unpacks to more than {max_bytes} bytes")
                        out.write(chunk)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise UpdateError(f"the update archive is damaged: {exc}") from None


def fetch_archive(url: str, *, max_bytes: int, timeout: float = 30.0, ca_file: Path | None = None) -> bytes:
    """Download an archive over HTTPS (certificate checked), refusing more than ``max_bytes``."""
    import urllib.error
    import urllib.request
    from urllib.parse import urlsplit

    if urlsplit(url).scheme != "https":
        raise UpdateError(f"model URLs must be https:// (got {url[:80]!r})")
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context))
    try:
        with opener.open(url, timeout=timeout) as response:
            data = response.read(max_bytes + 1)
    except urllib.error.HTTPError as exc:
        raise UpdateError(f"downloading the model failed: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UpdateError(f"downloading the model failed: {reason}") from None
    if len(data) > max_bytes:
        raise UpdateError(f"the model archive is larger than {max_bytes} bytes")
    return data


def member_names(data: bytes) -> list[str]:
    """Names in an archive, for messages and tests; nothing is extracted."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|gz") as tar:
        return [m.name for m in tar]


__all__ = ["extract_archive", "fetch_archive", "member_names", "pack_bundle"]
