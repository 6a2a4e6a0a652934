"""Fleet commands: an allow-list of names, each a function from a request to a result body.

A command never stops the runtime: bad JSON, a wrong type, an unknown name or an oversized
payload is answered with ``{"ok": false, "error": ...}``. Commands act on :class:`Controls`, the
small interface they declare here; the runtime provides it.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge_sdk.config import field_error
from edge_sdk.errors import CommandError, EdgeSDKError
from edge_sdk.mqtt.client import Command
from edge_sdk.mqtt.settings import MQTTSettings, PublishMode


class Controls(Protocol):
    """What fleet commands may do to a running device."""

    def configure(self, changes: dict, *, camera: str | None) -> dict:
        """Apply live settings to ``camera`` (None: every camera); returns what is now in force.
        Raises CommandError naming a bad field or an unknown camera."""
        ...

    def snapshot(self, *, camera: str | None) -> dict:
        """Publish the newest annotated frame of ``camera`` (None: every camera); returns ``{camera: bytes}``."""
        ...

    def install_model(self, archive: bytes) -> dict:
        """Verify, install, try and swap in a signed bundle archive; ``{old_sha256, new_sha256, version}``."""
        ...

    def rollback_model(self, expect_sha256: str) -> dict:
        """Put the model before the running update back, without probation, when the device runs
        ``expect_sha256``; ``{rolled_back, sha256, version}`` (``rolled_back`` false: it runs another model)."""
        ...


class ConfigChange(BaseModel):
    """What ``cmd/config`` may change while the runtime runs."""

    # json.loads reads NaN, Infinity and 1e999; echoed back they would make the answer invalid JSON.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    threshold: float | None = Field(default=None, ge=0, le=1, description="Minimum score.")
    fps: float | None = Field(default=None, gt=0, description="Most frames per second processed.")
    stride: int | None = Field(default=None, ge=1, description="Process every Nth frame.")
    labels: list[str] | None = Field(default=None, description="Label allow-list; [] allows every label.")
    zones: list[list[tuple[float, float]]] | None = Field(default=None, description="Zones of interest; [] removes them.")
    min_area: float | None = Field(default=None, ge=0, le=1, description="Minimum box area share.")
    publish: PublishMode | None = Field(default=None, description="every_frame, on_detection, on_change or events (a run that tracks).")
    max_rate: float | None = Field(default=None, ge=0, description="Most detections messages per second; 0 removes the cap.")
    camera: str | None = Field(default=None, description="The camera to change; absent: every camera.")
    request_id: str | int | None = Field(default=None, description="Echoed in the result.")


class SnapshotRequest(BaseModel):
    """``cmd/snapshot``: the newest frame of one camera, or of each."""

    model_config = ConfigDict(extra="forbid")

    camera: str | None = Field(default=None, description="The camera; absent: every camera.")
    request_id: str | int | None = Field(default=None, description="Echoed in the result.")


class ModelRequest(BaseModel):
    """``cmd/model`` as JSON (a raw .tar.gz payload is accepted too)."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, description="https:// address of the bundle archive.")
    archive_b64: str | None = Field(default=None, description="The bundle archive, base64.")
    request_id: str | int | None = Field(default=None, description="Echoed in the result.")


class RollbackRequest(BaseModel):
    """``cmd/rollback``: leave the model ``sha256`` for the one before it (a rollout that aborts)."""

    model_config = ConfigDict(extra="forbid")

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="The model to leave; a device running another one changes nothing.")
    request_id: str | int | None = Field(default=None, description="Echoed in the result.")


MAX_NESTING = 32  # no command is deeper than a few levels


def _nesting(text: str | bytes) -> int:
    """How deep the JSON arrays and objects of ``text`` nest (brackets inside strings do not count).

    Checked before parsing: json's own guard is the interpreter's recursion limit, which any
    library in the process may raise (onnx2tf sets it to INT_MAX), and then a deep payload crashes.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _object(command: Command) -> dict:
    if command.too_large:
        raise CommandError(f"payload too large for cmd/{command.name}")
    if not command.payload.strip():
        return {}
    if _nesting(command.payload) > MAX_NESTING:
        raise CommandError("payload is nested too deeply")
    try:
        data = json.loads(command.payload)
    except RecursionError:
        raise CommandError("payload is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise CommandError(f"payload is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CommandError(f"payload must be a JSON object, not {type(data).__name__}")
    return data


def _validated(model: type[BaseModel], data: dict) -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise CommandError(field_error(exc)) from None


def config(controls: Controls, settings: MQTTSettings, command: Command) -> dict:
    change = _validated(ConfigChange, _object(command))
    # Fields given as null mean "leave alone" except where null is the way to clear (none here):
    # [] clears labels and zones, 0 removes the rate cap.
    applied = controls.configure(change.model_dump(exclude_none=True, exclude={"request_id", "camera"}), camera=change.camera)
    return {"ok": True, "applied": applied, "camera": change.camera, "request_id": change.request_id}


def snapshot(controls: Controls, settings: MQTTSettings, command: Command) -> dict:
    request = _validated(SnapshotRequest, _object(command))
    sizes = controls.snapshot(camera=request.camera)
    if not sizes:
        raise CommandError("no frame has been processed yet")
    return {"ok": True, "bytes": sum(sizes.values()), "cameras": sizes, "request_id": request.request_id}


def model(controls: Controls, settings: MQTTSettings, command: Command) -> dict:
    if command.too_large:
        raise CommandError(f"model archive larger than {settings.update_max_bytes} bytes")
    if command.payload[:2] == b"\x1f\x8b":
        archive, request_id = command.payload, None
    else:
        request = _validated(ModelRequest, _object(command))
        request_id = request.request_id
        if (request.url is None) == (request.archive_b64 is None):
            raise CommandError("give exactly one of 'url' and 'archive_b64' (or send the .tar.gz itself)")
        if request.url is not None:
            from edge_sdk.ota.archive import fetch_archive

            if not settings.update_keys:  # a device that refuses updates downloads nothing for anyone
                raise CommandError("model updates are off: no update_keys are configured on this device")

            archive = fetch_archive(request.url, max_bytes=settings.update_max_bytes, ca_file=settings.update_ca_file)
        else:
            try:
                archive = base64.b64decode(request.archive_b64, validate=True)
            except (binascii.Error, ValueError):
                raise CommandError("'archive_b64' is not valid base64") from None
    return {"ok": True, **controls.install_model(archive), "request_id": request_id}


def rollback(controls: Controls, settings: MQTTSettings, command: Command) -> dict:
    request = _validated(RollbackRequest, _object(command))
    return {"ok": True, **controls.rollback_model(request.sha256), "request_id": request.request_id}


ALLOWED: dict[str, Callable[[Controls, MQTTSettings, Command], dict]] = {
    "config": config, "snapshot": snapshot, "model": model, "rollback": rollback,
}


def handle(controls: Controls, settings: MQTTSettings, command: Command) -> dict:
    """The result body for ``command``; errors become ``{"ok": false, "error": ...}``."""
    handler = ALLOWED.get(command.name)
    if handler is None:
        # repr: a topic level may hold a newline or control characters, and the error is one line.
        return {"ok": False, "error": f"unknown command {command.name[:64]!r}; allowed: {', '.join(sorted(ALLOWED))}"}
    try:
        return handler(controls, settings, command)
    except EdgeSDKError as exc:
        return {"ok": False, "error": str(exc)}
