"""``edge-sdk keys`` and ``edge-sdk sign``: the workstation side of signed model updates."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

keys_app = typer.Typer(help="Make the ed25519 key pair that signs model updates.", no_args_is_help=True)


@keys_app.command("generate")
def generate(
    out_dir: Path = typer.Option(Path("."), "--out-dir", help="Folder for NAME.key (private, 0600) and NAME.pub."),
    name: str = typer.Option("edge-sdk-update", help="File name stem of the key pair."),
    force: bool = typer.Option(False, "--force", help="Replace existing key files."),
) -> None:
    """Write a new signing key pair. Keep NAME.key on the workstation; copy NAME.pub to devices (mqtt.update_keys)."""
    from edge_sdk.ota.keys import generate_keypair

    private, public = out_dir / f"{name}.key", out_dir / f"{name}.pub"
    identifier = generate_keypair(private, public, overwrite=force)
    typer.echo(f"key id {identifier}\nprivate key {private} (keep it secret)\npublic key {public} (give it to devices)")


def sign(
    bundle: Path = typer.Argument(..., help="Bundle folder to sign."),
    key: Path = typer.Option(..., "--key", help="Private key from 'edge-sdk keys generate'."),
    version: Optional[int] = typer.Option(None, help="Update version; devices refuse one not newer than theirs (default: now, in Unix seconds)."),
) -> None:
    """Sign a bundle for over-the-air updates (writes edge-bundle.sig next to its manifest)."""
    from edge_sdk.ota.keys import sign_bundle

    info = sign_bundle(bundle, key, version=version)
    typer.echo(f"signed {bundle}: key {info.key_id}, version {info.version}, manifest sha256 {info.manifest_sha256}")
