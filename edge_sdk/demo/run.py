"""``edge-sdk demo``: the whole chain on one machine, from the shipped detector to detections on MQTT.

1. Convert the shipped shapes detector for a profile, pruned and int8, with its report (cached).
2. Make a video of moving shapes whose true boxes are known.
3. Use the broker given, else Mosquitto, else an embedded one, on loopback.
4. Run the runtime on the video and publish to the broker, while a real subscriber prints what arrives.
5. Summarise: frames, fps, latency, messages, precision/recall of what arrived against the truth,
   and the line count the events reported against the video's true crossings.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_sdk import __version__
from edge_sdk.errors import EdgeSDKError, PublishError

DEMO_PROFILE = "x86-cpu"
PRUNE = 0.5
PRUNE_EPOCHS = 2
PRUNE_LEARNING_RATE = 1e-3  # distillation from the unpruned detector tolerates a brisk rate
MAX_DROP = 1.5
RESIZE = "letterbox"  # a 4:3 camera frame keeps its shapes' proportions, as the detector saw them in training
TRAIN_SCENES = 800
VAL_SCENES = 200
THRESHOLD = 0.4
OBJECTS = 4
DEVICE_ID = "demo-device"
CAMERA_ID = "shapes"
LINE = "gate"  # a vertical line through the middle of the picture; moving rightwards across it is 'in'
LINE_X = 0.5
LINE_MARGIN = 0.02  # the tracker's default line_margin: the truth counts a crossing as the counter does


def default_workdir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "edge-sdk" / "demo"


def _cache_key(model: Path, profile: str) -> str:
    settings = json.dumps({"sdk": __version__, "profile": profile, "prune": PRUNE, "epochs": PRUNE_EPOCHS,
                           "learning_rate": PRUNE_LEARNING_RATE, "resize": RESIZE,
                           "max_drop": MAX_DROP, "train": TRAIN_SCENES, "val": VAL_SCENES}, sort_keys=True)
    return hashlib.sha256(model.read_bytes() + settings.encode()).hexdigest()[:12]


def prepared_bundle(workdir: Path, console, *, profile: str = DEMO_PROFILE, force: bool = False) -> Path:
    """The demo's converted bundle: reused when this model and these settings were converted before."""
    from edge_sdk.bundle import open_bundle
    from edge_sdk.converters.assets import DETECTOR

    if not DETECTOR.is_file():
        raise EdgeSDKError(f"the shipped detector {DETECTOR} is missing; reinstall edge-sdk or run examples/train_detector.py")
    out = workdir / f"bundle-{profile}-{_cache_key(DETECTOR, profile)}"
    if out.exists() and not force:
        try:
            bundle = open_bundle(out)
            console.print(f"[bold]1. Conversion[/]: cached bundle {out} (delete it or pass --reconvert to redo)")
            _print_accuracy_line(console, bundle.manifest.report)
            return out
        except EdgeSDKError as exc:
            console.print(f"cached bundle {out} is unusable ({exc}); converting again")
    return _convert(workdir, out, console, profile=profile)


def _convert(workdir: Path, out: Path, console, *, profile: str) -> Path:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from edge_sdk.converters import convert
    from edge_sdk.converters.assets import DETECTOR
    from edge_sdk.render import report_tables
    from edge_sdk.samples import shapes

    console.print(f"[bold]1. Conversion[/]: the shipped shapes detector for [bold]{profile}[/], pruned {PRUNE:.0%} "
                  f"and int8 (first run only, about two minutes)")
    data = workdir / "data"
    shutil.rmtree(data, ignore_errors=True)
    train = shapes.write_yolo(data / "train", TRAIN_SCENES, seed=1, photos=shapes.TRAIN_PHOTOS)
    val = shapes.write_yolo(data / "val", VAL_SCENES, seed=2, photos=shapes.HELD_OUT_PHOTOS)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, transient=True) as bar:
        tasks: dict[str, int] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done, total=total)

        result = convert(DETECTOR, profile=profile, out=out, calib=train, val=val, train=train, prune=PRUNE,
                         epochs=PRUNE_EPOCHS, learning_rate=PRUNE_LEARNING_RATE, max_drop=MAX_DROP, resize=RESIZE,
                         name="shapes-detector", progress=progress)
    console.print(report_tables(result.report))
    return out


def _print_accuracy_line(console, report) -> None:
    if report is None or report.accuracy is None:
        return
    a = report.accuracy
    line = (f"   held-out mAP@0.5: float {a.reference.map50:.3f}, converted {a.converted.map50:.3f} "
            f"(drop {a.drop_points:.2f} points, budget {a.max_drop:g})")
    if a.drop_map50_95_points is not None:
        line += (f"; mAP@0.5:0.95: float {a.reference.map50_95:.3f}, converted {a.converted.map50_95:.3f} "
                 f"(drop {a.drop_map50_95_points:.2f} points, budget {a.max_drop_map50_95:g})")
    if report.sparsity is not None:
        line += f"; sparsity {report.sparsity.prunable:.0%}"
    console.print(line)


@dataclass
class Received:
    """What the demo's subscriber got."""

    messages: dict[int, dict] = field(default_factory=dict)  # frame index -> detections payload
    events: dict[int, dict] = field(default_factory=dict)  # seq -> event payload
    counts: dict | None = None  # the newest counts payload
    duplicates: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Subscriber:
    """A real MQTT client, separate from the runtime's, that prints detections as they arrive."""

    def __init__(self, broker, device_id: str, console, *, quiet: bool) -> None:
        import paho.mqtt.client as mqtt

        from edge_sdk.mqtt import topics
        from edge_sdk.mqtt.client import secure
        from edge_sdk.mqtt.settings import MQTTSettings

        self.console, self.quiet = console, quiet
        self.received = Received()
        self.topic = topics.topic(device_id, topics.camera_name(CAMERA_ID, topics.DETECTIONS))
        self.events_topic = topics.topic(device_id, topics.camera_name(CAMERA_ID, topics.EVENTS))
        self.counts_topic = topics.topic(device_id, topics.camera_name(CAMERA_ID, topics.COUNTS))
        settings = MQTTSettings(broker=broker.url, device_id=f"{device_id}-viewer", protocol=broker.protocol)
        protocol = mqtt.MQTTv5 if broker.protocol == "5" else mqtt.MQTTv311
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"edge-sdk-demo-viewer-{os.getpid()}",
                                  protocol=protocol, transport=settings.transport)
        secure(self.client, settings, credentials=settings.credentials())
        self.client.on_message = self._on_message
        self._subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.host, self.port = settings.host, settings.port

    def start(self, timeout: float = 10.0) -> Subscriber:
        try:
            self.client.connect(self.host, self.port, keepalive=30)
        except OSError as exc:
            raise PublishError(f"demo subscriber cannot reach the broker {self.host}:{self.port}: {exc.strerror or exc}") from exc
        self.client.loop_start()
        self.client.subscribe([(self.topic, 1), (self.events_topic, 1), (self.counts_topic, 1)])
        if not self._subscribed.wait(timeout):
            self.stop()
            raise PublishError(f"demo subscriber got no SUBACK from {self.host}:{self.port} within {timeout:g} s")
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_message(self, client, userdata, message) -> None:
        now = time.time()
        if message.topic != self.topic:
            self._on_event(message)
            return
        try:
            body = json.loads(message.payload)
            frame = int(body["frame"])
        except (ValueError, KeyError, TypeError, AttributeError):
            return
        with self.received.lock:
            if frame in self.received.messages:
                self.received.duplicates += 1
                return
            self.received.messages[frame] = body
            self.received.latencies_ms.append(1000.0 * (now - float(body.get("frame_ts", now))))
        if not self.quiet:
            found = ", ".join(f"{d['label']} {d['score']:.2f}" for d in body.get("detections", [])) or "nothing"
            self.console.print(f"   [dim]mqtt[/] frame {frame:4d}: {found}", highlight=False)


    def _on_event(self, message) -> None:
        try:
            body = json.loads(message.payload)
            seq = int(body["seq"])
        except (ValueError, KeyError, TypeError):
            return
        with self.received.lock:
            if message.topic == self.counts_topic:
                if self.received.counts is None or seq > self.received.counts["seq"]:
                    self.received.counts = body
                return
            if seq in self.received.events:
                self.received.duplicates += 1
                return
            self.received.events[seq] = body
        if not self.quiet and body.get("type") == "line":
            self.console.print(f"   [dim]mqtt[/] [bold]line {body['line']}[/]: {body['label']} #{body['track_id']} "
                               f"crossed {body['direction']}", highlight=False)


def _truth_rows(boxes) -> np.ndarray:
    return np.asarray([(b.class_id, b.x1, b.y1, b.x2, b.y2) for b in boxes], dtype=np.float64).reshape(-1, 5)


def _found_rows(body: dict) -> np.ndarray:
    w, h = body["width"], body["height"]
    rows = [(d["class_id"], d["box"][0] * w, d["box"][1] * h, d["box"][2] * w, d["box"][3] * h, d["score"])
            for d in body.get("detections", []) if d.get("box")]
    return np.asarray(rows, dtype=np.float64).reshape(-1, 6)


@dataclass
class Summary:
    frames: int
    fps: float
    latency_p50_ms: float
    latency_p99_ms: float
    published: int
    acked: int
    received: int
    duplicates: int
    mqtt_p50_ms: float
    mqtt_p99_ms: float
    precision: float
    recall: float
    line_in: int  # what the events counted on the line
    line_out: int
    truth_in: int  # the video's true crossings
    truth_out: int
    objects: int  # shapes in the video
    tracks_new: int  # 'new' track events received
    tracks_end: int
    events: int  # event messages received
    broker: str
    pngs: list[Path]


def run_demo(*, workdir: Path, console, broker_url: str | None = None, frames: int = 200, fps: float = 15.0,
             realtime: bool = True, reconvert: bool = False, embedded: bool = False, quiet: bool = False) -> Summary:
    """The whole demo; raises PublishError when nothing arrived over MQTT."""
    from edge_sdk.demo.broker import demo_broker
    from edge_sdk.samples import shapes

    workdir.mkdir(parents=True, exist_ok=True)
    bundle = prepared_bundle(workdir, console, force=reconvert)
    run_dir = workdir / "last-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    video = run_dir / "shapes.avi"
    truth = shapes.moving_video(video, frames=frames, fps=fps, objects=OBJECTS, lanes=True)
    console.print(f"[bold]2. Video[/]: {video} ({frames} frames of 640x480 at {fps:g} fps; {OBJECTS} shapes with known boxes)")
    with demo_broker(broker_url, folder=run_dir / "broker", embedded=embedded) as broker:
        console.print(f"[bold]3. Broker[/]: {broker.kind} at {broker.url} (MQTT {broker.protocol})")
        console.print(f"[bold]4. Run[/]: edge-sdk runtime on the video, publishing to {broker.url}; "
                      f"a separate subscriber prints what arrives")
        subscriber = Subscriber(broker, DEVICE_ID, console, quiet=quiet).start()
        try:
            stats, sent = _run_runtime(bundle, video, broker, run_dir, fps=fps if realtime else None)
            _wait_for(lambda: len(subscriber.received.messages) + len(subscriber.received.events) >= sent.acked, timeout=5.0)
        finally:
            subscriber.stop()
    received = subscriber.received
    if not received.messages:
        raise PublishError(f"nothing arrived over MQTT from {broker.url}: {sent.acked} messages were acknowledged "
                           f"by the broker, {sent.outbox_depth} left in the outbox")
    precision, recall = _chain_accuracy(received, truth)
    pngs = _write_pngs(video, received, truth, run_dir)
    lat = np.asarray(received.latencies_ms or [0.0])
    crossings = shapes.line_crossings(truth, x=LINE_X * 640, margin=LINE_MARGIN * 640)
    line = (received.counts or {}).get("lines", {}).get(LINE, {"in": 0, "out": 0})
    actions = [e.get("action") for e in received.events.values() if e.get("type") == "track"]
    return Summary(
        frames=stats.frames_done, fps=stats.fps, latency_p50_ms=stats.latency_ms_p50 or 0.0,
        latency_p99_ms=stats.latency_ms_p99 or 0.0, published=sent.sent, acked=sent.acked,
        received=len(received.messages), duplicates=received.duplicates, mqtt_p50_ms=float(np.percentile(lat, 50)),
        mqtt_p99_ms=float(np.percentile(lat, 99)), precision=precision, recall=recall,
        line_in=line["in"], line_out=line["out"], truth_in=crossings["right"], truth_out=crossings["left"], objects=OBJECTS,
        tracks_new=actions.count("new"), tracks_end=actions.count("end"), events=len(received.events),
        broker=broker.kind, pngs=pngs,
    )


def _run_runtime(bundle: Path, video: Path, broker, run_dir: Path, *, fps: float | None):
    from edge_sdk.config import RunConfig
    from edge_sdk.mqtt.settings import MQTTSettings, OutboxSettings, PublishMode
    from edge_sdk.runtime import Runtime

    settings = MQTTSettings(broker=broker.url, device_id=DEVICE_ID, protocol=broker.protocol,
                            publish=PublishMode.EVERY_FRAME, metrics_interval_s=5.0,
                            outbox=OutboxSettings(path=run_dir / "outbox.sqlite3"))
    config = RunConfig(cameras=[{"id": CAMERA_ID, "source": str(video), "fps": fps}], threshold=THRESHOLD, mqtt=settings,
                       lines={LINE: {"points": [[LINE_X, 0.0], [LINE_X, 1.0]], "in": "right"}})
    runtime = Runtime(bundle, config).open()
    try:
        runtime.run()
    finally:
        runtime.close(flush_timeout=10.0)  # the demo waits longer than a device would for the last acknowledgements
    return runtime.stats().cameras[0].stats, runtime.link.publisher.stats()


def _wait_for(predicate, *, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _chain_accuracy(received: Received, truth) -> tuple[float, float]:
    """Precision and recall of what arrived over MQTT against the video's true boxes (IoU 0.5, same class).

    A frame whose message never arrived counts as detecting nothing.
    """
    from edge_sdk.converters.detection_eval import precision_recall

    found = [_found_rows(received.messages[i]) if i in received.messages else np.zeros((0, 6)) for i in range(len(truth))]
    return precision_recall(found, [_truth_rows(t) for t in truth], score=0.0)


def _write_pngs(video: Path, received: Received, truth, run_dir: Path, count: int = 4) -> list[Path]:
    """A few frames with what arrived over MQTT drawn on them (truth in thin white)."""
    import cv2

    from edge_sdk.annotate import annotate
    from edge_sdk.results import BBox, Detection

    picks = set(np.linspace(0, len(truth) - 1, count).astype(int).tolist())
    capture = cv2.VideoCapture(str(video))
    written = []
    try:
        for index in range(len(truth)):
            ok, frame = capture.read()
            if not ok:
                break
            if index not in picks or index not in received.messages:
                continue
            body = received.messages[index]
            for b in truth[index]:
                cv2.rectangle(frame, (int(b.x1), int(b.y1)), (int(b.x2), int(b.y2)), (255, 255, 255), 1)
            detections = [Detection(d["class_id"], d["label"], d["score"], BBox(*d["box"]) if d.get("box") else None)
                          for d in body.get("detections", [])]
            path = run_dir / f"frame_{index:04d}.png"
            cv2.imwrite(str(path), annotate(frame, detections))
            written.append(path)
    finally:
        capture.release()
    return written


def summary_table(summary: Summary):
    from rich.table import Table

    table = Table(title="Demo summary", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row("frames", f"{summary.frames} at {summary.fps:.1f} fps")
    table.add_row("latency (frame to result)", f"p50 {summary.latency_p50_ms:.1f} ms, p99 {summary.latency_p99_ms:.1f} ms")
    table.add_row("MQTT", f"{summary.published} published, {summary.acked} acknowledged; received {summary.received} "
                          f"detections and {summary.events} events ({summary.duplicates} duplicates) via {summary.broker}")
    table.add_row("frame to subscriber", f"p50 {summary.mqtt_p50_ms:.1f} ms, p99 {summary.mqtt_p99_ms:.1f} ms")
    table.add_row("whole chain vs truth", f"precision {summary.precision:.1%}, recall {summary.recall:.1%} "
                                          "(IoU 0.5, same class, what arrived over MQTT)")
    exact = summary.line_in == summary.truth_in and summary.line_out == summary.truth_out
    table.add_row(f"line '{LINE}' count", f"in {summary.line_in}, out {summary.line_out}; the video's truth: in "
                                          f"{summary.truth_in}, out {summary.truth_out} ({'exact' if exact else 'differs'})")
    table.add_row("tracks", f"{summary.tracks_new} new, {summary.tracks_end} ended, for {summary.objects} objects "
                            f"({summary.events} event messages)")
    table.add_row("annotated frames", ", ".join(str(p) for p in summary.pngs) or "none")
    return table
