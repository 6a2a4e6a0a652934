"""The runtime's link to the fleet: it publishes what it is given, and hands commands on.

The link knows nothing of pipelines or cameras: it reads the run through the small
:class:`Observed` interface, and passes each command to the ``on_command`` function it was given.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from edge_sdk.errors import ConfigError, EdgeSDKError
from edge_sdk.mqtt import payloads, topics
from edge_sdk.mqtt.client import Command, Publisher
from edge_sdk.mqtt.settings import MQTTSettings, PublishMode
from edge_sdk.results import FrameResult

log = logging.getLogger("edge_sdk.mqtt")

SNAPSHOT_MIN_GAP_S = 1.0  # per camera, even on request: a JPEG per second at most


class Observed(Protocol):
    """What the link reads of the run it publishes."""

    def info(self) -> dict:
        """The retained birth message's body (:func:`payloads.info_body`)."""
        ...

    def status(self) -> dict:
        """The run's side of the metrics message: cameras, engine, totals (:func:`payloads.run_status`)."""
        ...

    def latest(self, camera: str) -> tuple[np.ndarray, tuple, object] | None:
        """The newest frame of ``camera``, its detections and what else to draw on it (an
        :class:`edge_sdk.annotate.Overlay` or None), or None before the first frame."""
        ...

    def camera_ids(self) -> list[str]: ...

    def watched_labels(self) -> list[str]: ...


class PublishGate:
    """Which frame results become detections messages: the mode, then the rate cap (one gate per camera)."""

    def __init__(self, mode: PublishMode, max_rate: float | None) -> None:
        self.mode, self.max_rate = mode, max_rate
        self._labels: frozenset[str] | None = None
        self._last = -1e9
        self.suppressed = 0  # frames the mode had nothing to say about
        self.rate_limited = 0  # frames the cap skipped

    def admit(self, result: FrameResult, now: float) -> bool:
        labels = seen_labels(result)
        if self.mode is PublishMode.EVENTS or (self.mode is PublishMode.ON_DETECTION and not labels):
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


def seen_labels(result: FrameResult) -> frozenset[str]:
    """What a frame saw, for the publish modes: its detections' labels and, for a semantic map, the
    classes present (the background is not a sighting)."""
    labels = {d.label for d in result.detections}
    if result.segmentation is not None:
        labels.update(label for label in result.segmentation.areas() if label.lower() != "background")
    return frozenset(labels)


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
    """Connects a run to the broker for its length: results, metrics, status and alerts out, commands in."""

    def __init__(self, settings: MQTTSettings, observed: Observed, *, on_command: Callable[[Command], dict] | None = None) -> None:
        self.settings, self.observed = settings, observed
        self._on_command = on_command
        self.mode, self.max_rate = settings.publish, settings.max_rate
        self.gates: dict[str, PublishGate] = {}
        self.publisher = Publisher(settings, on_command=self._command)
        self.source_states: dict[str, str] = {}
        self._camera_trouble: dict[str, str] = {}  # camera -> why it delivers no frames (failed, stalled, reconnecting)
        self._engine_trouble: str | None = None
        self._stop = threading.Event()
        self._metrics_thread: threading.Thread | None = None
        self._last_snapshot: dict[str, float] = {}
        self._snapshot_lock = threading.Lock()
        self._counts_pending: dict[str, object] = {}  # camera -> the newest counts not yet published
        self._counts_sent: dict[str, tuple[float, dict]] = {}  # camera -> when, and the zones' occupancy then
        self._counts_lock = threading.Lock()
        self.truncated = 0  # detections messages degraded to fit the size limit (payloads.detections_body)
        self.oversize = 0  # messages not sent because they were over the size limit all the same

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> FleetLink:
        self.announce()
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
        """Publish final metrics, give the outbox ``flush_timeout`` to drain, then disconnect (once)."""
        if self.observed is None:
            return
        self._stop.set()
        if self._metrics_thread is not None:
            self._metrics_thread.join(5)
        self._quietly(self.publish_metrics)
        self.publisher.flush(flush_timeout)
        self.publisher.close()
        self.observed = self._on_command = None  # the run refers to this link; no cycle outlives it

    def announce(self) -> None:
        """The retained info (what this device runs), and Home Assistant discovery when asked."""
        info = self.observed.info()
        self.publisher.set_retained(topics.INFO, self.publisher.envelope(payloads.INFO, info), qos=self.settings.qos.status)
        if self.settings.home_assistant:
            from edge_sdk.mqtt.homeassistant import discovery_messages

            watch = self.settings.watch_labels or self.observed.watched_labels()
            regions = {c["camera"]: (c.get("zones", []), c.get("lines", [])) for c in info.get("cameras", []) if "zones" in c}
            for topic, payload in discovery_messages(self.settings, model_name=info["model"]["name"], labels=watch,
                                                     cameras=self.observed.camera_ids(), regions=regions):
                self.publisher.set_retained("", payload, qos=1, topic=topic)

    @staticmethod
    def _quietly(publish: Callable[[], object]) -> None:
        try:
            publish()
        except EdgeSDKError:
            pass  # a full disk: the run goes on; the next metrics say what failed

    # -- what the run hands over ------------------------------------------------------------

    def gate(self, camera: str) -> PublishGate:
        gate = self.gates.get(camera)
        if gate is None:
            gate = self.gates[camera] = PublishGate(self.mode, self.max_rate)
        return gate

    def set_publishing(self, *, mode: PublishMode | None = None, max_rate: float | None | bool = False) -> None:
        """Change the publish mode and rate cap of every camera (``max_rate=None`` removes the cap)."""
        if mode is not None:
            self.mode = mode
        if max_rate is not False:
            self.max_rate = max_rate or None
        for gate in self.gates.values():
            gate.mode, gate.max_rate = self.mode, self.max_rate

    def on_result(self, result: FrameResult) -> None:
        """Called for every frame result; publishes what the mode and rate admit. Never blocks on the network."""
        now = time.monotonic()
        camera = result.camera or "main"
        if self.gate(camera).admit(result, now):
            body = payloads.detections_body(result, masks=self.settings.masks, vertices=self.settings.mask_vertices)
            if body.get("truncated"):
                self.truncated += 1
            self._publish(topics.camera_name(camera, topics.DETECTIONS), payloads.DETECTIONS, body, qos=self.settings.qos.detections)
        if result.events or result.counts is not None or camera in self._counts_pending:
            self.on_events(camera, result.events, result.counts, frame=result.index, frame_ts=result.timestamp)
        interval = self.settings.snapshot_interval_s
        if interval and now - self._last_snapshot.get(camera, -1e9) >= interval:
            self.publish_snapshot(camera)

    def _publish(self, name: str, schema: str, body: dict, *, qos: int) -> None:
        """``body`` enveloped and queued, unless it is over :data:`payloads.MAX_PAYLOAD_BYTES`: then
        it is counted in ``oversize`` and logged, never handed to the publisher (a broker such as
        AWS IoT Core would refuse it, and the outbox would try it again and again)."""
        data = self._encoded(schema, self.publisher.envelope(schema, body))
        if data is not None:
            self.publisher.publish(name, data, qos=qos)

    def _encoded(self, schema: str, payload: dict) -> bytes | None:
        """``payload`` as the publisher sends it, encoded once here to measure it; None when it is
        over the limit (counted and logged)."""
        data = payloads.encode(payload)
        if len(data) <= payloads.MAX_PAYLOAD_BYTES:
            return data
        self.oversize += 1
        log.warning("a %s message of %d bytes is over the %d-byte limit and was not sent", payloads.KINDS[schema],
                    len(data), payloads.MAX_PAYLOAD_BYTES)
        return None

    def on_events(self, camera: str, events, counts, *, frame: int | None = None, frame_ts: float | None = None,
                  now: bool = False) -> None:
        """A tracking camera's events, each a QoS 1 message through the outbox (a broker outage or
        a kill loses none), and its counts when given, retained (the newest is what matters): at
        once when a zone's occupancy changed (an occupancy sensor must not lag), and when only line
        totals changed at most every ``counts_interval_s`` (each crossing is an event already);
        ``now`` for a run's first and last counts."""
        for event in events:
            body = payloads.event_body(camera, event, frame=frame, frame_ts=frame_ts)
            self._publish(topics.camera_name(camera, topics.EVENTS), payloads.EVENT, body, qos=self.settings.qos.events)
        with self._counts_lock:
            if counts is not None:
                self._counts_pending[camera] = counts
            pending = self._counts_pending.get(camera)
            if pending is None:
                return
            clock = time.monotonic()
            sent, zones = self._counts_sent.get(camera, (-1e9, None))
            if not now and pending.zones == zones and clock - sent < self.settings.counts_interval_s:
                return
            del self._counts_pending[camera]
            self._counts_sent[camera] = (clock, {name: dict(by) for name, by in pending.zones.items()})
        data = self._encoded(payloads.COUNTS, self.publisher.envelope(payloads.COUNTS, payloads.counts_body(camera, pending)))
        if data is not None:
            self.publisher.set_retained(topics.camera_name(camera, topics.COUNTS), data, qos=self.settings.qos.status)

    def on_camera_state(self, camera: str, state: str, detail: str | None) -> None:
        """A camera's state changed: metrics go out at once, and an alert when it failed."""
        changed, self.source_states[camera] = state != self.source_states.get(camera), state
        if not changed:
            return
        if state in ("failed", "stalled", "reconnecting"):
            self._camera_trouble[camera] = f"camera {camera} {state}" + (f": {detail}" if detail else "")
        else:
            self._camera_trouble.pop(camera, None)
        self._update_status()
        if state == "failed":
            self.alert("camera-failed", detail or state, camera=camera)
        # Metrics go out every 10 s by default: a camera that stalls and recovers in between would
        # never be seen by the fleet, and a lost one only seconds late. A change of state is
        # published at once (called from the source's thread; publish never waits on the network).
        self._quietly(self.publish_metrics)

    def _update_status(self) -> None:
        """The retained status: 'degraded' with every reason while the engine or a camera is in
        trouble (engine first), 'online' otherwise."""
        reasons = [r for r in (self._engine_trouble, *self._camera_trouble.values()) if r]
        self.publisher.set_health("; ".join(reasons) if reasons else None)

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
            self._engine_trouble = None
        else:
            self._engine_trouble = f"inference engine {health.state}: {health.detail}"
            log.warning("inference engine %s: %s", health.state, health.detail)
        self._update_status()
        if health.state != "ok":
            self.alert("engine-failed" if health.state == "failed" else "engine-restarted", health.detail or health.state)
        self._quietly(self.publish_metrics)

    @property
    def rate_limited(self) -> int:
        """Results every camera's rate cap kept from being published."""
        return sum(gate.rate_limited for gate in list(self.gates.values()))

    def publish_metrics(self) -> None:
        body = payloads.metrics_body(self.observed.status(), self.publisher.stats(), rate_limited=self.rate_limited,
                                     rss_mb=_rss_mb(), cpu_temp_c=_cpu_temp_c())
        self.publisher.publish(topics.METRICS, self.publisher.envelope(payloads.METRICS, body), qos=self.settings.qos.metrics)

    def _metrics_loop(self) -> None:
        while not self._stop.wait(self.settings.metrics_interval_s):
            self._quietly(self.publish_metrics)

    def publish_snapshot(self, camera: str, *, force: bool = False) -> int | None:
        """Publish ``camera``'s newest frame, annotated, as JPEG; its size, or None when there is no frame."""
        from edge_sdk.annotate import annotate, jpeg

        with self._snapshot_lock:
            wait = SNAPSHOT_MIN_GAP_S - (time.monotonic() - self._last_snapshot.get(camera, -1e9))
            if wait > 0:
                if not force:
                    return None
                time.sleep(wait)
            latest = self.observed.latest(camera)
            if latest is None:
                return None
            data = jpeg(annotate(*latest), max_bytes=payloads.MAX_PAYLOAD_BYTES)
            if data is None:
                return None
            self._last_snapshot[camera] = time.monotonic()
            self.publisher.publish(topics.camera_name(camera, topics.SNAPSHOT), data, qos=self.settings.qos.snapshot)
            return len(data)

    # -- commands ---------------------------------------------------------------------------

    def _command(self, command: Command) -> None:
        if self._on_command is None:
            body = {"ok": False, "error": "this device takes no commands"}
        else:
            body = self._on_command(command)
        self.publisher.respond(command, body)


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
