"""The runtime's link to the fleet: results to MQTT, metrics on a timer, commands back in."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from pydantic import ValidationError

from edge_sdk.config import RunConfig, field_error
from edge_sdk.errors import CommandError, ConfigError, EdgeSDKError, UpdateError
from edge_sdk.mqtt import payloads, topics
from edge_sdk.mqtt.client import Command, Publisher
from edge_sdk.mqtt.settings import MQTTSettings, PublishMode
from edge_sdk.pipeline import Model, Pipeline
from edge_sdk.results import FrameResult

log = logging.getLogger("edge_sdk.mqtt")

SNAPSHOT_MIN_GAP_S = 1.0  # even on request: a JPEG per second at most
TRIAL_FRAMES = 3


class PublishGate:
    """Which frame results become detections messages: the mode, then the rate cap."""

    def __init__(self, mode: PublishMode, max_rate: float | None) -> None:
        self.mode, self.max_rate = mode, max_rate
        self._labels: frozenset[str] | None = None
        self._last = -1e9
        self.suppressed = 0  # frames the mode had nothing to say about
        self.rate_limited = 0  # frames the cap skipped

    def admit(self, result: FrameResult, now: float) -> bool:
        labels = frozenset(d.label for d in result.detections)
        if self.mode is PublishMode.ON_DETECTION and not labels:
            self.suppressed += 1
            return False
        if self.mode is PublishMode.ON_CHANGE:
            if labels == self._labels:
                self.suppressed += 1
                return False
        if self.max_rate and now - self._last < 1.0 / self.max_rate:
            self.rate_limited += 1
            return False
        self._labels = labels  # only a published set counts as seen, so a change is never lost to the cap
        self._last = now
        return True


def _rss_mb() -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _cpu_temp_c() -> float | None:
    # Raspberry Pi, Jetson and most Linux boards expose the SoC sensor here, in millidegrees.
    try:
        return round(int(Path("/sys/class/thermal/thermal_zone0/temp").read_text().strip()) / 1000, 1)
    except (OSError, ValueError):
        return None


class FleetLink:
    """Connects a pipeline to the broker for the length of a run."""

    def __init__(self, pipeline: Pipeline, settings: MQTTSettings, *, source: str | None = None) -> None:
        self.pipeline, self.settings, self.source = pipeline, settings, source
        self.gate = PublishGate(settings.publish, settings.max_rate)
        self.publisher = Publisher(settings, on_command=self._command)
        self.source_state: str | None = None
        self._stop = threading.Event()
        self._metrics_thread: threading.Thread | None = None
        self._last_snapshot = -1e9
        self._snapshot_lock = threading.Lock()

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> FleetLink:
        self._announce()
        self.pipeline.health_listeners.append(self.on_health)
        quarantined = self.publisher.outbox.quarantined
        if quarantined is not None:
            detail = (f"the outbox {self.publisher.outbox.path} was damaged and moved aside to {quarantined}; "
                      "a new one was started, and what the old one held was not sent")
            log.warning(detail)
            self.alert("outbox-quarantined", detail, path=str(quarantined))
        self.publisher.start()
        self._metrics_thread = threading.Thread(target=self._metrics_loop, name="edge-sdk-metrics", daemon=True)
        self._metrics_thread.start()
        return self

    def close(self, *, flush_timeout: float = 5.0) -> None:
        """Publish final metrics, give the outbox ``flush_timeout`` to drain, then disconnect."""
        self._stop.set()
        if self.on_health in self.pipeline.health_listeners:
            self.pipeline.health_listeners.remove(self.on_health)
        if self._metrics_thread is not None:
            self._metrics_thread.join(5)
        self.publish_metrics()
        self.publisher.flush(flush_timeout)
        self.publisher.close()

    def _announce(self) -> None:
        info = payloads.info_body(self.pipeline.bundle, source=self.source)
        self.publisher.set_retained(topics.INFO, self.publisher.envelope(payloads.INFO, info), qos=self.settings.qos.status)
        if self.settings.home_assistant:
            from edge_sdk.mqtt.homeassistant import discovery_messages

            watch = self.settings.watch_labels or self.pipeline.config.labels or []
            for topic, payload in discovery_messages(self.settings, model_name=self.pipeline.bundle.manifest.name, labels=watch):
                self.publisher.set_retained("", payload, qos=1, topic=topic)

    # -- results ----------------------------------------------------------------------------

    def on_result(self, result: FrameResult) -> None:
        """Called for every frame result; publishes what the mode and rate admit. Never blocks on the network."""
        now = time.monotonic()
        if self.gate.admit(result, now):
            body = payloads.detections_body(result)
            self.publisher.publish(topics.DETECTIONS, self.publisher.envelope(payloads.DETECTIONS, body), qos=self.settings.qos.detections)
        if self.settings.snapshot_interval_s and now - self._last_snapshot >= self.settings.snapshot_interval_s:
            self.publish_snapshot()

    def on_source_event(self, event) -> None:
        state = getattr(event.state, "value", str(event.state))
        changed, self.source_state = state != self.source_state, state
        if not changed:
            return
        # Metrics go out every 10 s by default: a camera that stalls and recovers in between would
        # never be seen by the fleet, and a lost one only seconds late. A change of state is
        # published at once (called from the source's thread; publish never waits on the network).
        try:
            self.publish_metrics()
        except EdgeSDKError:
            pass  # a full disk: the source must keep running; the next metrics say what failed

    def alert(self, kind: str, detail: str, **extra: str) -> None:
        """One event on ``alert`` (QoS 1 through the outbox, like detections); never raises."""
        try:
            body = payloads.alert_body(kind, detail, **extra)
            self.publisher.publish(topics.ALERT, self.publisher.envelope(payloads.ALERT, body), qos=1)
        except EdgeSDKError:
            log.warning("could not queue the %s alert", kind)  # a full disk; the log line above says what happened

    def on_health(self, health) -> None:
        """The inference watchdog's news: the retained status says 'degraded' (and why) while the engine
        is being restarted or has been given up on, 'online' once a fresh one runs; an alert and the
        metrics go out at once."""
        if health.state == "ok":
            self.publisher.set_health(None)
        else:
            self.publisher.set_health(f"inference engine {health.state}: {health.detail}")
            log.warning("inference engine %s: %s", health.state, health.detail)
            self.alert("engine-failed" if health.state == "failed" else "engine-restarted", health.detail or health.state)
        try:
            self.publish_metrics()
        except EdgeSDKError:
            pass  # a full disk: the next metrics say what failed

    def publish_metrics(self) -> None:
        stats = self.pipeline.stats.snapshot()
        publisher = self.publisher.stats()
        publisher["rate_limited"] = self.gate.rate_limited
        body = payloads.metrics_body(stats, publisher, rss_mb=_rss_mb(), cpu_temp_c=_cpu_temp_c(), source_state=self.source_state)
        self.publisher.publish(topics.METRICS, self.publisher.envelope(payloads.METRICS, body), qos=self.settings.qos.metrics)

    def _metrics_loop(self) -> None:
        while not self._stop.wait(self.settings.metrics_interval_s):
            try:
                self.publish_metrics()
            except EdgeSDKError:
                pass  # a full disk shows in the next metrics; the run goes on

    def publish_snapshot(self, *, force: bool = False) -> int | None:
        """Publish the newest frame, annotated, as JPEG; returns its size, or None when there is no frame."""
        from edge_sdk.annotate import annotate, jpeg

        with self._snapshot_lock:
            wait = SNAPSHOT_MIN_GAP_S - (time.monotonic() - self._last_snapshot)
            if wait > 0:
                if not force:
                    return None
                time.sleep(wait)
            frame = self.pipeline.latest_frame
            if frame is None:
                return None
            data = jpeg(annotate(frame, self.pipeline.latest_detections))
            if data is None:
                return None
            self._last_snapshot = time.monotonic()
            self.publisher.publish(topics.SNAPSHOT, data, qos=self.settings.qos.snapshot)
            return len(data)

    # -- commands ---------------------------------------------------------------------------

    def _command(self, command: Command) -> None:
        from edge_sdk.mqtt.commands import handle

        self.publisher.respond(command, handle(self, command))

    def apply_config(self, changes: dict) -> dict:
        """Validate and apply a live configuration change; returns what is now in force."""
        run_keys = {"threshold", "fps", "stride", "labels", "zones", "min_area"}
        run_changes = {k: v for k, v in changes.items() if k in run_keys}
        if "labels" in run_changes and run_changes["labels"] == []:
            run_changes["labels"] = None
        if "zones" in run_changes and run_changes["zones"] == []:
            run_changes["zones"] = None
        try:
            new = RunConfig.model_validate({**self.pipeline.config.model_dump(), **run_changes})
        except ValidationError as exc:
            raise CommandError(field_error(exc)) from None
        self.pipeline.config = new
        if "publish" in changes:
            self.gate.mode = PublishMode(changes["publish"])
        if "max_rate" in changes:
            self.gate.max_rate = changes["max_rate"] or None
        applied = {k: getattr(new, k) for k in run_changes}
        if "publish" in changes:
            applied["publish"] = self.gate.mode.value
        if "max_rate" in changes:
            applied["max_rate"] = self.gate.max_rate
        return {k: ([list(p) for p in v] if k == "zones" and v else v) for k, v in applied.items()}

    def install_model(self, archive: bytes) -> dict:
        """Verify, install, trial-run and swap in a signed bundle archive; the old one stays for rollback."""
        from edge_sdk.bundle import open_bundle
        from edge_sdk.ota.keys import load_public_keys
        from edge_sdk.ota.store import BundleStore

        if not self.settings.update_keys:
            raise UpdateError("model updates are off: no update_keys are configured on this device")
        keys = load_public_keys(self.settings.update_keys)

        def trial(folder: Path) -> None:
            bundle = open_bundle(folder)
            engine = self.pipeline.open_engine(bundle)
            candidate = Model.build(bundle, engine)
            frame = self.pipeline.latest_frame
            if frame is None:
                raise UpdateError("no live frame to try the new model on yet")
            try:
                for _ in range(TRIAL_FRAMES):
                    self.pipeline.infer(frame, model=candidate)
            finally:
                close = getattr(engine, "close", None)
                if close is not None:
                    close()  # an engine in a child process: the installed copy gets its own below

        store = BundleStore(self.settings.store_path)
        old_sha = self._model_sha()
        result = store.install(archive, public_keys=keys, check=trial, max_bytes=self.settings.update_max_bytes)
        # The trial ran from the staging folder; load the installed copy so the files in use are the kept ones.
        installed = open_bundle(result.path)
        engine = self.pipeline.open_engine(installed)

        def on_failure(exc: BaseException) -> None:
            # Runs in the inference thread, which has already put the old model back.
            log.warning("model update %s failed on a live frame (%s); rolled back", result.new_sha256[:12], exc)
            store.rollback()
            self._announce()  # info shows the model that runs again

        self.pipeline.swap(Model.build(installed, engine), on_failure=on_failure)
        self._announce()
        return {"old_sha256": old_sha, "new_sha256": self._model_sha(), "version": result.version}

    def _model_sha(self) -> str | None:
        manifest = self.pipeline.bundle.manifest
        return next((f.sha256 for f in manifest.files if f.path == manifest.model_file), None)


def check_settings(settings: MQTTSettings) -> None:
    """Fail before the run starts on settings that cannot work (unreadable key files and the like)."""
    for path in settings.update_keys:
        if not Path(path).is_file():
            raise ConfigError(f"update key {path} does not exist")
    tls = settings.tls
    for name in ("ca_file", "cert_file", "key_file"):
        path = getattr(tls, name) if tls is not None else None
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"mqtt.tls.{name}: {path} does not exist")
    settings.credentials()
