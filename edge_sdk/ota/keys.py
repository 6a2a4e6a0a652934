"""Ed25519 keys and bundle signatures.

The signature covers the manifest's sha256, and the manifest lists every file's sha256, so one
signature vouches for the whole bundle. A version number inside the signed message lets a device
refuse an older bundle (rollback) even when it is validly signed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from edge_sdk.bundle import MANIFEST_NAME, open_bundle, sha256_file
from edge_sdk.errors import ConfigError, UpdateError

SIGNATURE_NAME = "edge-bundle.sig"
SIGNATURE_SCHEMA = "edge-sdk/signature@1"


@dataclass(frozen=True)
class SignatureInfo:
    key_id: str
    version: int
    manifest_sha256: str
    signed_at: float


def _raw(public_key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key) -> str:
    """First 16 hex digits of the sha256 of the raw 32-byte public key."""
    return hashlib.sha256(_raw(public_key)).hexdigest()[:16]


def _write_new(path: Path, data: bytes, mode: int, *, overwrite: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    # Created with its final mode: a private key is never readable by others, not even briefly.
    fd = os.open(path, flags, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
    finally:
        os.close(fd)


def generate_keypair(private_path: Path, public_path: Path, *, overwrite: bool = False) -> str:
    """Write a new ed25519 key pair (private 0600, public 0644); returns the key id."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private_path, public_path = Path(private_path), Path(public_path)
    for path in (private_path, public_path):
        if path.exists() and not overwrite:
            raise ConfigError(f"{path} already exists (use --force to replace it)")
        if not path.parent.is_dir():
            raise ConfigError(f"folder {path.parent} does not exist")
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    _write_new(private_path, private, 0o600, overwrite=overwrite)
    _write_new(public_path, public, 0o644, overwrite=overwrite)
    return key_id(key.public_key())


def load_private_key(path: Path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except OSError as exc:
        raise ConfigError(f"signing key {path} cannot be read: {exc.strerror or exc}") from None
    except (ValueError, TypeError):
        raise ConfigError(f"signing key {path} is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"signing key {path} is not an ed25519 key (make one with 'edge-sdk keys generate')")
    return key


def load_public_keys(paths) -> dict:
    """key id -> ed25519 public key, for every file in ``paths``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    keys = {}
    for path in paths:
        try:
            key = serialization.load_pem_public_key(Path(path).read_bytes())
        except OSError as exc:
            raise ConfigError(f"update key {path} cannot be read: {exc.strerror or exc}") from None
        except ValueError:
            raise ConfigError(f"update key {path} is not a PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError(f"update key {path} is not an ed25519 key")
        keys[key_id(key)] = key
    return keys


def _message(fields: dict) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def sign_bundle(folder: Path, private_key_path: Path, *, version: int | None = None) -> SignatureInfo:
    """Verify ``folder`` as a bundle, then write its signature file next to the manifest."""
    folder = Path(folder)
    open_bundle(folder)
    key = load_private_key(private_key_path)
    if version is not None and version < 1:
        raise ConfigError(f"--version must be a positive integer, not {version}")
    fields = {
        "schema": SIGNATURE_SCHEMA, "algorithm": "ed25519", "key_id": key_id(key.public_key()),
        "version": version if version is not None else int(time.time()),
        "manifest_sha256": sha256_file(folder / MANIFEST_NAME), "signed_at": round(time.time(), 3),
    }
    document = {**fields, "signature": base64.b64encode(key.sign(_message(fields))).decode()}
    temp = folder / f".{SIGNATURE_NAME}.tmp"
    temp.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    os.replace(temp, folder / SIGNATURE_NAME)
    return SignatureInfo(fields["key_id"], fields["version"], fields["manifest_sha256"], fields["signed_at"])


def verify_bundle_signature(folder: Path, public_keys: dict) -> SignatureInfo:
    """The signature's facts, or UpdateError saying why the bundle is not trusted."""
    from cryptography.exceptions import InvalidSignature

    path = Path(folder) / SIGNATURE_NAME
    if not path.is_file():
        raise UpdateError(f"the bundle is not signed ({SIGNATURE_NAME} is missing; run 'edge-sdk sign')")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        fields = {k: document[k] for k in ("schema", "algorithm", "key_id", "version", "manifest_sha256", "signed_at")}
        signature = base64.b64decode(document["signature"], validate=True)
    except (OSError, ValueError, KeyError, TypeError):
        raise UpdateError(f"{SIGNATURE_NAME} is malformed") from None
    if fields["schema"] != SIGNATURE_SCHEMA or fields["algorithm"] != "ed25519":
        raise UpdateError(f"{SIGNATURE_NAME}: unsupported signature format {fields['schema']!r}/{fields['algorithm']!r}")
    if not isinstance(fields["version"], int) or isinstance(fields["version"], bool):
        raise UpdateError(f"{SIGNATURE_NAME}: version must be an integer")
    key = public_keys.get(fields["key_id"])
    if key is None:
        raise UpdateError(f"the bundle is signed by key {str(fields['key_id'])[:16]!r}, which this device does not trust")
    try:
        key.verify(signature, _message(fields))
    except InvalidSignature:
        raise UpdateError("the bundle's signature does not verify") from None
    if sha256_file(Path(folder) / MANIFEST_NAME) != fields["manifest_sha256"]:
        raise UpdateError(f"{MANIFEST_NAME} was changed after signing")
    return SignatureInfo(fields["key_id"], fields["version"], fields["manifest_sha256"], fields["signed_at"])
