"""The live view of a run over HTTP: every camera's annotated MJPEG stream, stats, /metrics, /healthz.

Standard library only (``http.server``), so a device needs nothing more to be watched from a
browser on another machine or scraped by Prometheus. Every request passes :class:`~edge_sdk.httpauth.Gate`
before any route; without a credential the server listens on loopback only. A camera's frames are
drawn and encoded only while someone watches it, at most ``MAX_STREAM_FPS`` a second, once per new
frame for every viewer; each viewer has its own thread, so a slow or vanished one holds up nobody,
least of all the cameras. The view reads the run through the small :class:`Watched` interface.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import select
import socket
import socketserver
import ssl
import sys
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Protocol
from urllib.parse import parse_qs, urlsplit

from edge_sdk import __version__
from edge_sdk.errors import ConfigError
from edge_sdk.httpauth import Answer, Credential, Gate, load_credential, load_tls
from edge_sdk.httpsettings import PASSWORD_ENV, TOKEN_ENV, LiveViewSettings, format_address, parse_address

__all__ = ["LiveView", "LiveViewSettings", "metrics_text", "parse_address"]

if TYPE_CHECKING:
    from edge_sdk.mqtt.link import FleetLink
    from edge_sdk.results import FrameResult

log = logging.getLogger("edge_sdk.liveview")

MAX_STREAM_FPS = 15.0
MAX_VIEWERS = 8
VIEWER_TIMEOUT_S = 5.0  # a viewer that stops reading is let go after this long
# Linux grows the send buffer of a reader that falls behind to megabytes: seconds of stale frames
# queued for it. With a small fixed one, a slow viewer's write waits, and it then gets the newest frame.
STREAM_SEND_BUFFER = 128 * 1024
BOUNDARY = b"edge-sdk-frame"
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _bind_host(asked: str, credential: Credential | None, *, tls: bool) -> tuple[str, str]:
    """The host to bind and a one-line notice of who can reach it."""
    wildcard = asked in ("0.0.0.0", "::", "")
    if credential is None:
        if _is_loopback(asked):
            return asked, "this machine only: no token or password given"
        loopback = "::1" if ":" in asked else "127.0.0.1"
        # Refusing would break `--http :8080` as it worked before; binding loopback keeps it safe and says why.
        return loopback, (f"listening on {loopback} only, not {'every interface' if wildcard else asked}: no token or password "
                          f"given (http.token_file, http.password_file, ${TOKEN_ENV} or ${PASSWORD_ENV})")
    scope = "every interface; " if wildcard else ""
    clear = "" if tls or _is_loopback(asked) else "; sent in clear text without http.cert_file and http.key_file"
    return asked, f"{scope}{credential.describe()}{clear}"


class Watched(Protocol):
    """What the live view reads of the run it shows (``edge_sdk.Runtime`` provides it)."""

    model_name: str

    def camera_ids(self) -> list[str]: ...

    def latest(self, camera: str):
        """``(frame, detections, overlay)`` of the camera's newest result (overlay: an
        :class:`edge_sdk.annotate.Overlay` of a tracking camera, else None), or None before the first."""
        ...

    def stats(self):
        """A RuntimeStats: every camera's state and counters, and the engine's health."""
        ...


class FrameFeed:
    """The newest encoded frame and its sequence number, shared by every viewer."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._seq = 0
        self._jpeg: bytes | None = None
        self._closed = False

    def publish(self, jpeg: bytes) -> None:
        with self._changed:
            self._seq += 1
            self._jpeg = jpeg
            self._changed.notify_all()

    def next(self, seen: int, *, timeout: float) -> tuple[int, bytes | None]:
        """The frame after number ``seen``, or ``(seen, None)`` after ``timeout`` or on close."""
        with self._changed:
            self._changed.wait_for(lambda: self._closed or (self._seq > seen and self._jpeg), timeout)
            if self._closed or self._seq <= seen:
                return seen, None
            return self._seq, self._jpeg

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


class LiveView:
    """Serves a run's live view as ``settings`` say, from ``start`` to ``close``.

    ``host`` and ``port`` (0: a free one) override ``settings.listen``; no settings at all means
    127.0.0.1, a free port, and a credential only if the environment holds one. The token or password
    and the certificate are read here: a :class:`ConfigError` names what is wrong. Without a
    credential a host beyond this machine is replaced by loopback; :attr:`notice` says so in one
    line, for the caller to show with :attr:`url`.

    Pass :meth:`on_result` every result so /healthz and the current fps know when frames arrive.
    ``link`` (a running MQTT ``FleetLink``) adds its counters when set.
    """

    def __init__(
        self, watched: Watched, *, settings: LiveViewSettings | None = None, host: str | None = None,
        port: int | None = None, link: FleetLink | None = None, stall_s: float = 5.0,
    ) -> None:
        if port is not None and not 0 <= port <= 65535:
            raise ConfigError(f"port must be 0-65535, not {port}")
        if stall_s <= 0:
            raise ConfigError(f"stall_s must be positive, not {stall_s}")
        settings = settings or LiveViewSettings(listen="127.0.0.1:0")
        asked_host, asked_port = settings.address
        if host is not None or port is not None:
            asked_host, asked_port = host if host is not None else asked_host, port if port is not None else asked_port
            settings = settings.model_copy(update={"listen": format_address(asked_host, asked_port)})
        self.settings = settings
        self.credential: Credential | None = load_credential(settings)
        self.tls: ssl.SSLContext | None = load_tls(settings)
        self.host, self.notice = _bind_host(asked_host, self.credential, tls=self.tls is not None)
        self.watched, self.link, self.stall_s = watched, link, stall_s
        self.port = asked_port
        self.feeds = {camera: FrameFeed() for camera in watched.camera_ids()}
        self._arrivals = {camera: deque(maxlen=256) for camera in self.feeds}  # monotonic times of the latest results
        self._lock = threading.Lock()
        self._viewers = {camera: 0 for camera in self.feeds}
        self._watched = threading.Event()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._threads: list[threading.Thread] = []

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> LiveView:
        try:
            self._server = _Server((self.host, self.port), self, tls=self.tls)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise ConfigError(f"--http: cannot listen on {self.host}:{self.port}: {reason[:1].lower()}{reason[1:]}") from exc
        self.port = self._server.server_address[1]
        self._server.gate = Gate(self.credential, metrics_public=self.settings.metrics_public,
                                 secure=self.tls is not None, port=self.port)
        log.info("live view on %s (%s)", self.url, self.notice)
        self._threads = [
            threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.5}, name="edge-sdk-http", daemon=True),
            threading.Thread(target=self._encode_loop, name="edge-sdk-stream", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def close(self) -> None:
        self._stopping.set()
        self._watched.set()  # wakes the encoder so it sees the stop
        for feed in self.feeds.values():
            feed.close()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for thread in self._threads:
            thread.join(5)
        self.link = None

    def __enter__(self) -> LiveView:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def url(self) -> str:
        host = socket.gethostname() if self.host in ("0.0.0.0", "::", "") else self.host
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{f'[{host}]' if ':' in host else host}:{self.port}/"

    def describe(self) -> str:
        """Where the view is, in one line for the person who started the run."""
        return f"live view on {self.url} ({self.notice}; also /metrics and /healthz)"

    def on_result(self, result: FrameResult) -> None:
        arrivals = self._arrivals.get(result.camera)
        if arrivals is not None:
            with self._lock:
                arrivals.append(time.monotonic())

    # -- viewers and the shared streams -----------------------------------------------------

    def admit(self, camera: str) -> bool:
        with self._lock:
            if sum(self._viewers.values()) >= MAX_VIEWERS:
                return False
            self._viewers[camera] += 1
            self._watched.set()
            return True

    def leave(self, camera: str) -> None:
        with self._lock:
            self._viewers[camera] -= 1
            if not any(self._viewers.values()) and not self._stopping.is_set():
                self._watched.clear()

    def _encode_loop(self) -> None:
        from edge_sdk.annotate import annotate, jpeg

        shown: dict[str, object] = {}
        while not self._stopping.is_set():
            self._watched.wait()
            with self._lock:
                watched = [camera for camera, count in self._viewers.items() if count]
            for camera in watched:
                latest = self.watched.latest(camera)
                if latest is not None and latest[0] is not shown.get(camera):
                    shown[camera] = latest[0]
                    data = jpeg(annotate(*latest))
                    if data is not None:
                        self.feeds[camera].publish(data)
            self._stopping.wait(1.0 / MAX_STREAM_FPS)

    # -- what the endpoints report ----------------------------------------------------------

    def _times(self, camera: str) -> list[float]:
        with self._lock:
            return list(self._arrivals[camera])

    @staticmethod
    def _rate(times: list[float], now: float) -> tuple[float | None, float]:
        """Age of the newest result (None before the first) and results per second over the last 5 s (256 at most)."""
        if not times:
            return None, 0.0
        recent = [t for t in times if now - t <= 5.0]
        fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else 0.0
        return now - times[-1], fps

    def _camera_health(self, camera, now: float) -> tuple[bool, dict]:
        """A camera is healthy while results keep coming: the last within max(stall_s, 3 frame intervals).
        One that ended (a file played to its end, max_frames) is done, not unhealthy."""
        times = self._times(camera.id)
        body = {"camera": camera.id, "state": camera.state, "frames": camera.stats.frames_done}
        if camera.state in ("ended", "done"):
            return True, {**body, "status": camera.state}
        if camera.state == "failed":
            return False, {**body, "status": "failed", "reason": camera.detail or ""}
        if not times:
            return False, {**body, "status": "starting", "reason": "no frame processed yet"}
        age = now - times[-1]
        interval = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else 0.0
        limit = max(self.stall_s, 3 * interval)
        body["last_frame_age_s"] = round(age, 3)
        if age > limit:
            return False, {**body, "status": "stalled", "reason": f"no frame for {age:.1f} s (limit {limit:.1f} s)"}
        return True, {**body, "status": "ok"}

    def health(self) -> tuple[bool, dict]:
        """Healthy while the engine is, every camera that has not ended delivers frames, and one has not ended."""
        stats, now = self.watched.stats(), time.monotonic()
        cameras = [self._camera_health(camera, now) for camera in stats.cameras]
        body = {"frames": stats.frames, "cameras": [c for _, c in cameras]}
        if stats.engine.state != "ok":  # restarting after a hang or a failure, or given up on
            return False, {"status": f"engine {stats.engine.state}", "reason": stats.engine.detail or "", **body}
        if cameras and all(c["status"] in ("ended", "done") for _, c in cameras):
            return False, {"status": "ended", "reason": "every camera has ended", **body}
        sick = next((c for ok, c in cameras if not ok), None)
        if sick is not None:
            reason = f"camera {sick['camera']}: {sick.get('reason') or sick['status']}" if len(cameras) > 1 else sick.get("reason", "")
            return False, {"status": sick["status"], "reason": reason, **body}
        return True, {"status": "ok", **body}

    def snapshot(self) -> dict:
        """Everything the page and /metrics show, as JSON-ready values: each camera, then totals."""
        stats, now = self.watched.stats(), time.monotonic()
        cameras = []
        for camera in stats.cameras:
            age, fps = self._rate(self._times(camera.id), now)
            latest = self.watched.latest(camera.id)
            cameras.append({
                **camera.stats.as_dict(), "id": camera.id, "state": camera.state, "detail": camera.detail,
                "fps_avg": camera.stats.fps, "fps": fps, "last_frame_age_s": age, "viewers": self._viewers[camera.id],
                "latest": [d.to_json(masks="summary") for d in latest[1]] if latest is not None else [],
            })
        engine = stats.engine
        totals = {key: sum(c[key] for c in cameras) for key in ("frames_in", "frames_done", "frames_skipped", "frame_errors",
                                                                "frames_dropped", "detections", "fps", "viewers")}
        return {
            **totals, "cameras": cameras, "model": self.watched.model_name, "version": __version__,
            "engine_state": engine.state, "engine_detail": engine.detail, "engine_restarts": engine.restarts,
            "engine_hangs": engine.hangs, "engine_lost_frames": engine.lost_frames, "mqtt": self._mqtt(),
        }

    def _mqtt(self) -> dict | None:
        if self.link is None:
            return None
        from edge_sdk.mqtt.payloads import metrics_body

        # The fleet's own metrics message defines published/dropped/reconnects; the page agrees with it.
        publisher = self.link.publisher.stats()
        body = metrics_body({"cameras": [], "engine": {"state": "ok", "restarts": 0, "hangs": 0, "lost_frames": 0}},
                            publisher, rate_limited=self.link.rate_limited, rss_mb=None, cpu_temp_c=None)
        keys = ("published", "acked", "dropped", "refused", "reconnects", "outbox_depth", "outbox_bytes")
        return {**{k: body[k] for k in keys}, "connected": publisher.state == "online"}


# -- Prometheus text format 0.0.4 ---------------------------------------------------------------

_STAGES = {"preprocess": "preprocess", "infer": "infer", "decode": "decode", "latency": "end_to_end"}
_COUNTERS = (
    ("frames_in", "frames_in_total", "Frames the camera's source delivered."),
    ("frames_done", "frames_processed_total", "Frames inferred, decoded and filtered."),
    ("frames_skipped", "frames_skipped_total", "Frames skipped on purpose (stride or fps cap)."),
    ("frame_errors", "frame_errors_total", "Frames that could not be preprocessed or inferred."),
    ("detections", "detections_total", "Detections reported, after the filters."),
    ("frames_dropped", "source_frames_dropped_total", "Frames a live source dropped to stay on the newest one."),
    ("reconnects", "source_reconnects_total", "Times the camera's source reconnected."),
)
_ENGINE = (
    ("engine_restarts", "engine_restarts_total", "Fresh inference engines opened by the watchdog after a hang or a failure."),
    ("engine_hangs", "engine_hangs_total", "Inferences that ran past watchdog.hang_s."),
    ("engine_lost_frames", "engine_lost_frames_total", "Frames that were inside a hung or failed inference."),
)
_MQTT = (
    ("published", "counter", "mqtt_published_total", "Messages handed to the broker."),
    ("acked", "counter", "mqtt_acked_total", "QoS 1 messages the broker acknowledged."),
    ("dropped", "counter", "mqtt_dropped_total", "Messages dropped: outbox overflow or expiry, QoS 0 while offline, rate cap."),
    ("refused", "counter", "mqtt_refused_total", "Messages the broker refused (dead-lettered)."),
    ("reconnects", "counter", "mqtt_reconnects_total", "Reconnections to the broker after the first connection."),
    ("outbox_depth", "gauge", "mqtt_outbox_depth", "Messages waiting in the outbox for an acknowledgement."),
    ("outbox_bytes", "gauge", "mqtt_outbox_bytes", "Bytes waiting in the outbox."),
    ("connected", "gauge", "mqtt_connected", "1 while connected to the broker."),
)


def _escape(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: dict[str, object]) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}" if labels else ""


def _family(name: str, kind: str, help_text: str, samples: list[tuple[dict, float]]) -> list[str]:
    full = f"edge_sdk_{name}"
    lines = [f"# HELP {full} {help_text}", f"# TYPE {full} {kind}"]
    return lines + [f"{full}{_labels(labels)} {float(value)!r}" for labels, value in samples]


def metrics_text(snapshot: dict) -> str:
    """A :meth:`LiveView.snapshot` in the Prometheus text exposition format, version 0.0.4; one
    sample per camera (label ``camera``) for what is counted per camera."""
    cameras = snapshot["cameras"]
    lines = _family("info", "gauge", "The model being run and the SDK version.",
                    [({"model": snapshot["model"], "version": snapshot["version"]}, 1)])
    for key, name, help_text in _COUNTERS:
        lines += _family(name, "counter", help_text, [({"camera": c["id"]}, c[key]) for c in cameras])
    lines += _family("fps", "gauge", "Frames processed per second, over the last 5 seconds or 256 frames.",
                     [({"camera": c["id"]}, c["fps"]) for c in cameras])
    latency = [({"camera": c["id"], "stage": stage, "quantile": q}, c[f"{key}_ms_{p}"] / 1e3)
               for c in cameras for key, stage in _STAGES.items() for q, p in (("0.5", "p50"), ("0.99", "p99"))
               if c[f"{key}_ms_{p}"] is not None]
    if latency:
        lines += _family("latency_seconds", "gauge",
                         "Per-stage time and end-to-end latency (capture to result) over the last 1000 frames, by quantile.", latency)
    ages = [({"camera": c["id"]}, c["last_frame_age_s"]) for c in cameras if c["last_frame_age_s"] is not None]
    if ages:
        lines += _family("last_frame_age_seconds", "gauge", "Seconds since the camera's last frame was processed.", ages)
    lines += _family("camera_up", "gauge", "1 while the camera is starting or delivering frames, 0 once it failed or ended.",
                     [({"camera": c["id"], "state": c["state"]}, int(c["state"] not in ("failed", "ended", "done"))) for c in cameras])
    for key, name, help_text in _ENGINE:
        lines += _family(name, "counter", help_text, [({}, snapshot[key])])
    lines += _family("engine_healthy", "gauge", "1 while the inference engine is healthy, 0 while the watchdog restarts it or has given up.",
                     [({}, int(snapshot["engine_state"] == "ok"))])
    lines += _family("stream_viewers", "gauge", "Browsers watching a camera's live stream.",
                     [({"camera": c["id"]}, c["viewers"]) for c in cameras])
    for key, kind, name, help_text in _MQTT if snapshot["mqtt"] is not None else ():
        lines += _family(name, kind, help_text, [({}, snapshot["mqtt"][key])])
    return "\n".join(lines) + "\n"


# -- HTTP ---------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    gate: Gate

    def __init__(self, address: tuple[str, int], view: LiveView, *, tls: ssl.SSLContext | None = None) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.view, self.tls = view, tls
        super().__init__(address, _Handler)

    def finish_request(self, request, client_address) -> None:
        if self.tls is None:
            return super().finish_request(request, client_address)
        # The handshake happens here, in the connection's own thread and under its timeout: done on
        # accept, one client that connects and says nothing would hold up every other.
        request.settimeout(VIEWER_TIMEOUT_S)
        try:
            secured = self.tls.wrap_socket(request, server_side=True)
        except (OSError, ValueError):
            return  # not TLS, or gone; wrap_socket closed it
        try:
            super().finish_request(secured, client_address)
        finally:
            self.shutdown_request(secured)

    def server_bind(self) -> None:
        # HTTPServer's own server_bind asks DNS for this host's full name (getfqdn), which waits
        # out resolver timeouts on an offline device before the first request is served.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # a browser that closed the connection or stopped reading
        log.exception("live view request from %s failed", client_address[0])


def _peer_gone(sock: socket.socket) -> bool:
    """Whether the other end closed the connection (readable with nothing to read)."""
    poller = select.poll()  # not select.select: it refuses descriptors numbered 1024 or more
    poller.register(sock, select.POLLIN)
    if not poller.poll(0):
        return False
    if isinstance(sock, ssl.SSLSocket):
        # TLS cannot peek: the byte read (if any) is one a viewer sent after its request, never used.
        timeout = sock.gettimeout()
        sock.settimeout(0)
        try:
            return sock.recv(1) == b""
        except (ssl.SSLWantReadError, BlockingIOError):
            return False  # part of a record, not a close
        except OSError:
            return True
        finally:
            sock.settimeout(timeout)
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = f"edge-sdk/{__version__}"
    timeout = VIEWER_TIMEOUT_S

    def do_GET(self) -> None:
        answer = self.server.gate.check(self.client_address[0], self.path, self.headers)
        if answer is not None:
            self._answer(answer)
            return
        route = {"/": self._page, "/stream.mjpg": self._stream, "/stats.json": self._stats,
                 "/metrics": self._metrics, "/healthz": self._health}.get(urlsplit(self.path).path)
        if route is None:
            self._send(404, "text/plain; charset=utf-8", b"not found\n")
            return
        route()

    def log_message(self, format: str, *args) -> None:
        pass  # stderr carries the run's events and summary; a page polling every second would bury them

    def _answer(self, answer: Answer) -> None:
        self.send_response(answer.status)
        for name, value in answer.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(answer.body)

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, value: dict) -> None:
        self._send(status, "application/json", json.dumps(value).encode())

    def _page(self) -> None:
        self._send(200, "text/html; charset=utf-8", PAGE.encode())

    def _stats(self) -> None:
        self._json(200, self.server.view.snapshot())

    def _metrics(self) -> None:
        self._send(200, PROMETHEUS_TYPE, metrics_text(self.server.view.snapshot()).encode())

    def _health(self) -> None:
        ok, body = self.server.view.health()
        self._json(200 if ok else 503, body)

    def _stream(self) -> None:
        view = self.server.view
        asked = parse_qs(urlsplit(self.path).query).get("camera")
        camera = asked[0] if asked else next(iter(view.feeds), None)
        if camera not in view.feeds:
            self._send(404, "text/plain; charset=utf-8", b"no such camera\n")
            return
        if not view.admit(camera):
            self._send(503, "text/plain; charset=utf-8", f"{MAX_VIEWERS} viewers already; try again later\n".encode())
            return
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SEND_BUFFER)
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY.decode()}")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(b"--" + BOUNDARY + b"\r\n")
            self._parts(view.feeds[camera])
        finally:
            view.leave(camera)

    def _parts(self, feed: FrameFeed) -> None:
        seen = 0
        while True:
            seen, data = feed.next(seen, timeout=1.0)
            if data is None:
                if feed.closed or _peer_gone(self.connection):
                    return
                continue
            # The closing boundary goes right after the image: browsers show a part only once
            # they see where it ends.
            head = b"Content-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(data)
            self.wfile.write(head + data + b"\r\n--" + BOUNDARY + b"\r\n")


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>edge-sdk live view</title>
<style>
body{margin:0;font:14px system-ui,sans-serif;background:#111;color:#eee;display:flex;flex-wrap:wrap;gap:16px;padding:16px}
main{display:flex;flex-wrap:wrap;gap:12px;flex:1 1 640px}figure{margin:0}figcaption{padding:4px 0}
img{max-width:100%;min-width:320px;background:#222;image-rendering:pixelated;display:block}
table{border-collapse:collapse;min-width:260px}td{padding:3px 8px;border-bottom:1px solid #333}
td:last-child{text-align:right;font-variant-numeric:tabular-nums}h1{font-size:16px;margin:0 0 8px}
.bad{color:#f66}.mqtt{display:none}.has-mqtt .mqtt{display:table-row}
</style></head>
<body><main id="cameras"></main>
<section id="panel"><h1 id="model">edge-sdk</h1><table>
<tr><td>status</td><td id="status">…</td></tr>
<tr><td>fps</td><td id="fps">–</td></tr>
<tr><td>frames</td><td id="frames">0</td></tr>
<tr><td>detections</td><td id="detections">0</td></tr>
<tr><td>dropped / skipped / bad</td><td id="drops">–</td></tr>
<tr><td>engine</td><td id="engine">–</td></tr>
<tr class="mqtt"><td>mqtt published / acked</td><td id="mqtt-sent">–</td></tr>
<tr class="mqtt"><td>mqtt outbox / dropped / refused</td><td id="mqtt-kept">–</td></tr>
</table></section>
<script>
const $ = (id) => document.getElementById(id);
const ms = (v) => v === null || v === undefined ? "–" : v.toFixed(1);
function tile(c) {
  // One figure per camera, made once: its <img> keeps its stream open across refreshes.
  let figure = document.querySelector(`figure[data-camera="${CSS.escape(c.id)}"]`);
  if (figure) return figure;
  figure = document.createElement("figure");
  figure.dataset.camera = c.id;
  const img = document.createElement("img");
  img.className = "stream"; img.alt = "camera " + c.id;
  img.src = "stream.mjpg?camera=" + encodeURIComponent(c.id);
  // A stream that ended (restart, too many viewers) is retried rather than left frozen.
  img.onerror = () => setTimeout(() => { img.src = "stream.mjpg?camera=" + encodeURIComponent(c.id) + "&t=" + Date.now(); }, 2000);
  const caption = document.createElement("figcaption");
  figure.append(img, caption);
  $("cameras").append(figure);
  return figure;
}
function show(s) {
  $("model").textContent = s.model; $("status").textContent = "running"; $("status").className = "";
  $("fps").textContent = s.fps.toFixed(1);
  $("frames").textContent = s.frames_done; $("detections").textContent = s.detections;
  $("drops").textContent = s.frames_dropped + " / " + s.frames_skipped + " / " + s.frame_errors;
  $("engine").textContent = s.engine_state + (s.engine_restarts ? " (" + s.engine_restarts + " restarts)" : "");
  $("engine").className = s.engine_state === "ok" ? "" : "bad";
  for (const c of s.cameras) {
    const caption = tile(c).querySelector("figcaption");
    const latest = c.latest.map((d) => d.label + " " + d.score.toFixed(2)).join(", ") || "–";
    caption.textContent = c.id + " · " + c.state + " · " + c.fps.toFixed(1) + " fps · p50/p99 " + ms(c.latency_ms_p50) +
      " / " + ms(c.latency_ms_p99) + " ms · " + latest;
    caption.className = ["failed", "stalled", "reconnecting"].includes(c.state) ? "bad" : "";
  }
  document.body.classList.toggle("has-mqtt", s.mqtt !== null);
  if (s.mqtt) {
    $("mqtt-sent").textContent = s.mqtt.published + " / " + s.mqtt.acked;
    $("mqtt-kept").textContent = s.mqtt.outbox_depth + " / " + s.mqtt.dropped + " / " + s.mqtt.refused;
  }
}
// From the origin, not relative to the address: an address typed with user:password@ makes fetch() refuse.
const here = location.origin + location.pathname.replace(/[^/]*$/, "");
async function tick() {
  try { show(await (await fetch(here + "stats.json", {cache: "no-store"})).json()); }
  catch (e) { $("status").textContent = "unreachable"; $("status").className = "bad"; }
}
tick(); setInterval(tick, 1000);
</script></body></html>
"""
