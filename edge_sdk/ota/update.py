"""A model update applied to a running pipeline: verify, install, try on a live frame, swap, and
roll back if the new model fails while on probation."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from edge_sdk.bundle import open_bundle
from edge_sdk.errors import UpdateError
from edge_sdk.mqtt.settings import MQTTSettings
from edge_sdk.pipeline import Model, Pipeline, describe

log = logging.getLogger("edge_sdk.ota")

TRIAL_FRAMES = 3


class UpdateStage(str, Enum):
    """Where the last model update of a device stands (in its retained info)."""

    PROBATION = "probation"  # swapped in, not yet through PROBATION_FRAMES live frames
    ACCEPTED = "accepted"  # passed probation
    ROLLED_BACK = "rolled-back"  # failed on a live frame, or the fleet asked (cmd/rollback)


@dataclass(frozen=True)
class UpdateState:
    """The last model update of a device and where it stands."""

    state: UpdateStage
    version: int
    sha256: str | None
    detail: str | None = None
    ts: float = field(default_factory=time.time)

    def to_json(self) -> dict:
        return {"state": self.state.value, "version": self.version, "sha256": self.sha256, "detail": self.detail,
                "ts": round(self.ts, 3)}


def model_sha(pipeline: Pipeline) -> str | None:
    manifest = pipeline.bundle.manifest
    return next((f.sha256 for f in manifest.files if f.path == manifest.model_file), None)


def installed_bundle(settings: MQTTSettings | None) -> Path | None:
    """The model update installed on this device, which runs in place of the bundle given; None without one."""
    if settings is None or not settings.update_keys:
        return None
    from edge_sdk.ota.store import BundleStore

    return BundleStore(settings.store_path).current()


def install_update(pipeline: Pipeline, settings: MQTTSettings, archive: bytes, *,
                   on_change: Callable[[UpdateState], None]) -> dict:
    """Verify, install, trial-run and swap in a signed bundle archive; the old one stays for rollback.

    ``on_change`` is told when the update's state changes (swapped in on probation, accepted after
    :data:`~edge_sdk.pipeline.PROBATION_FRAMES`, or rolled back after failing on a live frame), so
    the fleet hears which model runs.
    """
    from edge_sdk.ota.keys import load_public_keys
    from edge_sdk.ota.store import BundleStore

    if not settings.update_keys:
        raise UpdateError("model updates are off: no update_keys are configured on this device")
    keys = load_public_keys(settings.update_keys)

    def trial(folder: Path) -> None:
        bundle = open_bundle(folder)
        engine = pipeline.open_engine(bundle)
        candidate = Model.build(bundle, engine)
        frame = pipeline.latest_frame
        if frame is None:
            raise UpdateError("no live frame to try the new model on yet")
        try:
            for _ in range(TRIAL_FRAMES):
                pipeline.infer(frame, model=candidate)
        finally:
            close = getattr(engine, "close", None)
            if close is not None:
                close()  # an engine in a child process: the installed copy gets its own below

    store = BundleStore(settings.store_path)
    old_sha = model_sha(pipeline)
    result = store.install(archive, public_keys=keys, check=trial, max_bytes=settings.update_max_bytes)
    # The trial ran from the staging folder; load the installed copy so the files in use are the kept ones.
    installed = open_bundle(result.path)
    engine = pipeline.open_engine(installed)

    def on_failure(exc: BaseException) -> None:
        # Runs in a camera's thread, which has already put the old model back.
        log.warning("model update %s failed on a live frame (%s); rolled back", result.new_sha256[:12], exc)
        store.rollback()
        on_change(UpdateState(UpdateStage.ROLLED_BACK, result.version, result.new_sha256,
                              f"failed on a live frame: {describe(exc)}"))

    def on_success() -> None:
        on_change(UpdateState(UpdateStage.ACCEPTED, result.version, result.new_sha256))

    pipeline.swap(Model.build(installed, engine), on_failure=on_failure, on_success=on_success)
    on_change(UpdateState(UpdateStage.PROBATION, result.version, result.new_sha256))
    return {"old_sha256": old_sha, "new_sha256": model_sha(pipeline), "version": result.version}


def roll_back(pipeline: Pipeline, settings: MQTTSettings, *, expect_sha256: str, original: Path) -> Path | None:
    """Put the bundle before the running update back, at once and without probation, when the
    running model is ``expect_sha256``; returns the bundle now running, None when nothing changed.

    The bundle before is the store's previous release, or ``original`` (the run's own bundle) when
    the store has none. The store keeps the highest version seen: the rolled-back one stays refused.
    """
    from edge_sdk.ota.store import BundleStore

    if model_sha(pipeline) != expect_sha256:
        return None
    if settings is None or not settings.update_keys:
        raise UpdateError("model updates are off on this device: there is nothing to roll back")
    store = BundleStore(settings.store_path)
    folder = store.rollback() or Path(original)
    bundle = open_bundle(folder)
    pipeline.replace(Model.build(bundle, pipeline.open_engine(bundle)))
    return folder
