"""``Runtime``: the one place that opens, wires and closes a run.

bundle (or the model update installed over it) -> engine -> cameras -> pipeline -> live view and
fleet link; closed in reverse order. The CLI's ``run``, the demo and the examples use it, and so
does a Python program::

    from edge_sdk import Runtime, RunConfig

    config = RunConfig(cameras=[{"id": "door", "source": "rtsp://cam1/stream"},
                                {"id": "yard", "source": "yard.mp4", "threshold": 0.5}])
    with Runtime("bundle/", config) as runtime:
        for result in runtime.results():
            print(result.camera, [d.label for d in result.detections])

The pieces do not know the runtime: the fleet link reads it through ``Observed``
(:mod:`edge_sdk.mqtt.link`), fleet commands act on it through ``Controls``
(:mod:`edge_sdk.mqtt.commands`), and the live view reads it through ``Watched``
(:mod:`edge_sdk.liveview`).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from pydantic import ValidationError

from edge_sdk.annotate import Overlay
from edge_sdk.camera import Camera, CameraRun, CameraState
from edge_sdk.config import CameraConfig, RunConfig, field_error
from edge_sdk.errors import CommandError, ConfigError
from edge_sdk.pipeline import Pipeline, open_pipeline
from edge_sdk.results import FrameResult
from edge_sdk.stats import StatsSnapshot
from edge_sdk.watchdog import Health

log = logging.getLogger("edge_sdk.runtime")

LIVE_KEYS = ("threshold", "fps", "stride", "labels", "zones", "min_area")  # what cmd/config changes per camera


@dataclass(frozen=True)
class CameraStatus:
    """One camera at one moment: what it is doing, and its counters."""

    id: str
    source: str  # credentials in a URL are masked
    state: CameraState  # starting, running, stalled, reconnecting, ended, done or failed
    detail: str | None
    stats: StatsSnapshot
    counts: dict | None = None  # a tracking camera's zone occupancy and line totals (Counts.to_json())


@dataclass(frozen=True)
class RuntimeStats:
    """Every camera and the shared engine at one moment."""

    cameras: tuple[CameraStatus, ...]
    engine: Health

    @property
    def frames(self) -> int:
        return sum(c.stats.frames_done for c in self.cameras)

    @property
    def fps(self) -> float:
        return sum(c.stats.fps for c in self.cameras)


class Runtime:
    """A bundle run on one or several cameras, publishing to the fleet and serving the live view
    when the configuration asks. Use as a context manager, or call :meth:`open` and :meth:`close`.

    ``notify`` receives one-line notices for a person (where it publishes, where the live view
    is, each camera's changes of state); by default they go to the ``edge_sdk.runtime`` logger.
    """

    def __init__(self, bundle: str | Path, config: RunConfig | dict | None = None, *,
                 notify: Callable[[str], None] | None = None) -> None:
        if isinstance(config, dict):
            try:
                config = RunConfig.model_validate(config)
            except ValidationError as exc:
                raise ConfigError(f"run config: {field_error(exc)}") from None
        self.config = config or RunConfig()
        self.bundle_path = Path(bundle)
        self._given_bundle = Path(bundle)  # what a fleet rollback falls back to when the store keeps no previous release
        self._model_version: int | None = None  # the installed update's signed version; None for the bundle given
        self._update = None  # the last model update's UpdateState, for the retained info
        self.notify = notify or log.info
        self.pipeline: Pipeline | None = None
        self.cameras: list[Camera] = []
        self.link = None
        self.view = None
        self._settings: dict[str, CameraConfig] = {}
        self._listeners: list[Callable[[FrameResult], None]] = []
        self._run: CameraRun | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._ledger = None
        self._restart_ends: dict[str, list] = {}  # camera -> the 'end' of tracks the run before left open

    # -- lifecycle ----------------------------------------------------------------------------

    def open(self) -> Runtime:
        """Open everything a run needs; on any failure, close what was opened and raise. Opening
        an open runtime does nothing."""
        if self.pipeline is not None:
            return self
        config = self.config
        settings = config.camera_list()
        if not settings:
            raise ConfigError("--source is required (or 'source:' or 'cameras:' in the --config file)")
        try:
            self._open_pipeline()
            self.cameras = [self._camera(camera) for camera in settings]
            self._open_tracking()
            if config.http is not None:  # the live view binds its port before the fleet hears of the run
                self._open_view()
            if config.mqtt is not None:
                self._open_link()
        except BaseException:
            self.close()
            raise
        return self

    def _open_pipeline(self) -> None:
        from edge_sdk.ota.update import installed_bundle

        if self.config.mqtt is not None:
            from edge_sdk.mqtt.link import check_settings

            check_settings(self.config.mqtt)
        installed = installed_bundle(self.config.mqtt)
        if installed is not None:
            from edge_sdk.ota.store import BundleStore

            self.notify(f"running the model update installed at {installed} (in place of {self.bundle_path})")
            self.bundle_path = installed
            self._model_version = BundleStore(self.config.mqtt.store_path).installed_version()
        self.pipeline = open_pipeline(self.bundle_path, config=self.config)

    def _camera(self, settings: CameraConfig) -> Camera:
        from edge_sdk.sources import open_source

        def opener():
            return open_source(settings.source, fps=settings.fps, loop=settings.loop, on_event=camera.on_source_event,
                               retries=self.config.retries)

        camera = Camera(settings.id, opener, settings=settings)
        self._settings[settings.id] = settings
        camera.listeners.append(self._camera_changed)
        return camera

    def _open_tracking(self) -> None:
        """A tracker and scene per camera when the run tracks; the ledger of the run before
        (open tracks to end, ids to carry on from, line totals) when the run publishes."""
        tracking = self.config.tracking_settings()
        if tracking is None:
            return
        from edge_sdk.bundle import Task
        from edge_sdk.tracking.ledger import Ledger
        from edge_sdk.tracking.stage import TrackingStage
        from edge_sdk.tracking.values import Counts, TrackAction, TrackEvent

        if self.pipeline.bundle.manifest.task not in (Task.DETECTION, Task.INSTANCE_SEGMENTATION, Task.POSE):
            raise ConfigError(f"tracking, named zones, lines and the 'events' publish mode need boxes; "
                              f"{self.bundle_path} is a {self.pipeline.bundle.manifest.task.value} model")
        records = {}
        if self.config.mqtt is not None:
            self._ledger = Ledger(self.config.mqtt.ledger_path)
            records = self._ledger.load()
        for record_camera, record in records.items():
            self._restart_ends[record_camera] = [TrackEvent(TrackAction.END, track, reason="restart") for track in record.open_tracks]
        for camera in self.cameras:
            settings = self._settings[camera.id]
            record = records.get(camera.id)
            stage = TrackingStage(tracking, zones=settings.named_zones, lines=settings.named_lines,
                                  first_id=record.next_id if record else 1,
                                  counts=Counts(lines=record.lines or {}) if record else None)
            stage.on_finish = functools.partial(self._publish_events, camera.id)
            camera.stage = stage

    def _stage(self, camera_id: str):
        return next((c.stage for c in self.cameras if c.id == camera_id), None)

    def _publish_events(self, camera_id: str, events, counts) -> None:
        """Events that come from no frame (ends when a camera stops or the run before was killed)."""
        if self.link is None:
            return
        self.link.on_events(camera_id, events, counts, now=True)
        self._record(camera_id, events)

    def _record(self, camera_id: str, events) -> None:
        """The ledger follows what is in the outbox (called after the link took the events)."""
        if self._ledger is not None and events:
            stage = self._stage(camera_id)
            self._ledger.apply(camera_id, events, next_id=stage.next_id if stage is not None else 1)

    def _record_result(self, result: FrameResult) -> None:
        if result.events:
            self._record(result.camera, result.events)

    def _camera_changed(self, camera: Camera) -> None:
        self.notify(f"camera {camera.id} {camera.state}" + (f": {camera.detail}" if camera.detail else ""))
        if self.link is not None:
            self.link.on_camera_state(camera.id, camera.state, camera.detail)

    def _open_view(self) -> None:
        from edge_sdk.liveview import LiveView

        self.view = LiveView(self, settings=self.config.http).start()
        self._listeners.append(self.view.on_result)
        self.notify(self.view.describe())

    def _open_link(self) -> None:
        from edge_sdk.mqtt import commands
        from edge_sdk.mqtt.link import FleetLink

        mqtt = self.config.mqtt
        self.link = FleetLink(mqtt, self, on_command=lambda command: commands.handle(self, mqtt, command)).start()
        self.pipeline.health_listeners.append(self.link.on_health)
        self._listeners.append(self.link.on_result)
        self._listeners.append(self._record_result)  # after the link: the ledger records what is in the outbox
        self.notify(f"publishing to {mqtt.redacted_broker()} as {mqtt.device_id}")
        if self.view is not None:
            self.view.link = self.link
        # What the run before left open ends now ('restart'), and every tracking camera's counts
        # (line totals carried over, zones empty) are retained from the start.
        for camera_id, events in self._restart_ends.items():
            if events:
                self.notify(f"camera {camera_id}: {len(events)} tracks left open by the run before end (restart)")
            stage = self._stage(camera_id)
            self._publish_events(camera_id, events, stage.counts() if stage is not None else None)
        for camera in self.cameras:
            if camera.stage is not None and camera.id not in self._restart_ends:
                self.link.on_events(camera.id, [], camera.stage.counts(), now=True)
        self._restart_ends = {}

    def close(self, *, flush_timeout: float = 5.0) -> None:
        """Stop the run and close, in reverse order: live view, fleet link (giving the outbox
        ``flush_timeout`` seconds to drain; what is left stays on disk), engine."""
        self.stop()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(15)
        if self.view is not None:
            self.view.close()
        if self.link is not None:
            if self.pipeline is not None and self.link.on_health in self.pipeline.health_listeners:
                self.pipeline.health_listeners.remove(self.link.on_health)
            self.link.close(flush_timeout=flush_timeout)
        if self.pipeline is not None:
            self.pipeline.close()
        # Break every cycle through this object, so a program that opens run after run frees each
        # old engine (and its native threads) at once, not whenever the collector runs.
        for camera in self.cameras:
            camera.forget()
        self._listeners.clear()
        self._run = None

    def __enter__(self) -> Runtime:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- running ------------------------------------------------------------------------------

    def results(self) -> Iterator[FrameResult]:
        """Every camera's results as they come, until every camera has ended, ``max_frames`` or
        :meth:`stop`; then, per tracking camera, one ``final`` result with the ends of the tracks it
        still had open. Raises when the engine is given up on, or when every camera failed."""
        if self.pipeline is None:
            raise ConfigError("the runtime is not open: use 'with Runtime(...)' or call open() first")
        with self._lock:
            self._run = CameraRun(self.pipeline, self.cameras)
        return self._deliver(self._run)

    def _deliver(self, run: CameraRun) -> Iterator[FrameResult]:
        for result in run.results():
            for listener in self._listeners:
                listener(result)
            yield result
        # Each tracking camera's last word: the ends of the tracks it had open when it stopped (the
        # fleet link and the ledger were told as it stopped, from its own thread).
        for camera in self.cameras:
            closing = camera.stage.closing if camera.stage is not None else None
            if closing is not None and closing.events:
                yield closing

    def run(self, on_result: Callable[[FrameResult], None] | None = None) -> RuntimeStats:
        """Run to the end, calling ``on_result`` for each result; returns the final stats."""
        for result in self.results():
            if on_result is not None:
                on_result(result)
        return self.stats()

    def start(self, on_result: Callable[[FrameResult], None] | None = None) -> Runtime:
        """Run in a background thread (opening first if needed), for a program with a loop of its
        own; :meth:`wait` joins it and raises what stopped it, :meth:`stop` ends it."""
        if self.pipeline is None:
            self.open()
        results = self.results()

        def body() -> None:
            try:
                for result in results:
                    if on_result is not None:
                        on_result(result)
            except BaseException as exc:  # noqa: BLE001 - handed to wait()
                self._error = exc

        self._error = None
        self._thread = threading.Thread(target=body, name="edge-sdk-runtime", daemon=True)
        self._thread.start()
        return self

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for a run begun by :meth:`start`; True once it has ended. Raises what stopped it."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                return False
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return True

    @property
    def running(self) -> bool:
        """Whether a run begun by :meth:`start` is still going."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def error(self) -> BaseException | None:
        """What stopped a run begun by :meth:`start` (None while it runs, or after a clean end)."""
        return self._error

    def stop(self) -> None:
        """End the run from any thread: :meth:`results` returns after the frames in flight."""
        with self._lock:
            if self._run is not None:
                self._run.request_stop()

    def stats(self) -> RuntimeStats:
        from edge_sdk.sources.spec import redact

        return RuntimeStats(
            cameras=tuple(CameraStatus(c.id, redact(self._settings[c.id].source), c.state, c.detail, c.stats.snapshot(),
                                       c.stage.counts().to_json() if c.stage is not None else None)
                          for c in self.cameras),
            engine=replace(self.pipeline.health) if self.pipeline is not None else Health(),
        )

    @property
    def model_name(self) -> str:
        return self.pipeline.bundle.manifest.name

    def camera(self, camera_id: str) -> Camera:
        found = next((c for c in self.cameras if c.id == camera_id), None)
        if found is None:
            raise CommandError(f"unknown camera {camera_id[:64]!r}; cameras: {', '.join(self.camera_ids())}")
        return found

    # -- Observed: what the fleet link and the live view read --------------------------------------

    def camera_ids(self) -> list[str]:
        return [c.id for c in self.cameras]

    def info(self) -> dict:
        from edge_sdk.backends import describe
        from edge_sdk.mqtt import payloads

        stats = self.stats()
        sources = [{"camera": c.id, "source": c.source, **self._regions(c.id)} for c in stats.cameras]
        return payloads.info_body(self.pipeline.bundle, source=sources[0]["source"] if len(sources) == 1 else None, cameras=sources,
                                  version=self._model_version, update=self._update.to_json() if self._update is not None else None,
                                  engine=describe(self.pipeline.engine))

    def _regions(self, camera_id: str) -> dict:
        """A tracking camera's named zones and lines, for the info message (and discovery)."""
        settings = self._settings[camera_id]
        if not (settings.named_zones or settings.named_lines):
            return {}
        return {"zones": list(settings.named_zones), "lines": list(settings.named_lines)}

    def status(self) -> dict:
        from edge_sdk.mqtt import payloads

        stats = self.stats()
        cameras = [payloads.camera_status(c.id, c.state, c.detail, c.stats) for c in stats.cameras]
        return payloads.run_status(cameras, stats.engine)

    def latest(self, camera_id: str):
        camera = next((c for c in self.cameras if c.id == camera_id), None)
        if camera is None or camera.latest_frame is None:
            return None
        overlay = camera.stage.overlay() if camera.stage is not None else None
        segmentation = camera.latest_segmentation
        if segmentation is not None:
            overlay = Overlay(segmentation=segmentation) if overlay is None else replace(overlay, segmentation=segmentation)
        return camera.latest_frame, camera.latest_detections, overlay

    def watched_labels(self) -> list[str]:
        labels: list[str] = []
        for settings in self._settings.values():
            labels += [label for label in settings.labels or [] if label not in labels]
        return labels

    # -- Controls: what fleet commands may do --------------------------------------------------

    def configure(self, changes: dict, *, camera: str | None) -> dict:
        """Apply live settings to one camera or every camera, all or none; returns what is now in force."""
        targets = [self.camera(camera)] if camera is not None else self.cameras
        update = {k: v for k, v in changes.items() if k in LIVE_KEYS}
        if "zones" in update and (isinstance(update["zones"], dict) or any(self._settings[t.id].named_zones for t in targets)):
            raise CommandError("named zones are set in the run's config file (tracks and counts depend on them); "
                               "change them there and restart")
        for key in ("labels", "zones"):
            if update.get(key) == []:
                update[key] = None  # [] clears the allow-list or the zones
        new = {}
        for target in targets:
            try:
                new[target.id] = CameraConfig.model_validate({**self._settings[target.id].model_dump(), **update})
            except ValidationError as exc:
                raise CommandError(field_error(exc)) from None
        for target in targets:  # every camera validated first: a bad value changes none
            self._settings[target.id] = target.settings = new[target.id]
        applied = {k: getattr(new[targets[0].id], k) for k in update}
        if changes.get("publish") == "events" and not any(c.stage is not None for c in self.cameras):
            raise CommandError("publish 'events' needs a run that tracks: name zones or lines, or set 'tracking', "
                               "in the run's config, and restart")
        if self.link is not None and ("publish" in changes or "max_rate" in changes):
            from edge_sdk.mqtt.settings import PublishMode

            self.link.set_publishing(mode=PublishMode(changes["publish"]) if "publish" in changes else None,
                                     max_rate=changes["max_rate"] if "max_rate" in changes else False)
            if "publish" in changes:
                applied["publish"] = self.link.mode.value
            if "max_rate" in changes:
                applied["max_rate"] = self.link.max_rate
        return {k: ([list(p) for p in v] if k == "zones" and v else v) for k, v in applied.items()}

    def snapshot(self, *, camera: str | None) -> dict:
        ids = [self.camera(camera).id] if camera is not None else self.camera_ids()
        sizes = {i: self.link.publish_snapshot(i, force=True) for i in ids} if self.link is not None else {}
        return {i: size for i, size in sizes.items() if size is not None}

    def install_model(self, archive: bytes) -> dict:
        from edge_sdk.ota.update import install_update

        return install_update(self.pipeline, self.config.mqtt, archive, on_change=self._update_changed)

    def _update_changed(self, update) -> None:
        from edge_sdk.ota.update import UpdateStage

        with self._lock:
            self._update = update
            if update.state is UpdateStage.ROLLED_BACK:
                from edge_sdk.ota.store import BundleStore

                self._model_version = BundleStore(self.config.mqtt.store_path).installed_version()
            else:
                self._model_version = update.version
        if self.link is not None:
            self.link.announce()

    def rollback_model(self, expect_sha256: str) -> dict:
        """Put the model before the running update back, when the device runs ``expect_sha256``."""
        from edge_sdk.ota.update import UpdateStage, UpdateState, model_sha, roll_back

        running = model_sha(self.pipeline)
        with self._lock:
            update = self._update
            folder = roll_back(self.pipeline, self.config.mqtt, expect_sha256=expect_sha256, original=self._given_bundle)
        if folder is None:
            return {"rolled_back": False, "sha256": running, "version": self._model_version}
        self.notify(f"model {expect_sha256[:12]} rolled back as the fleet asked; running {folder}")
        version = update.version if update is not None and update.sha256 == expect_sha256 else (self._model_version or 0)
        self._update_changed(UpdateState(UpdateStage.ROLLED_BACK, version, expect_sha256, "rolled back by the fleet"))
        return {"rolled_back": True, "old_sha256": expect_sha256, "sha256": model_sha(self.pipeline), "version": self._model_version}
