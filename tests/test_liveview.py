"""``edge-sdk run --http``: a real bundle served to a real headless Chromium, a Prometheus parser and raw sockets."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_sdk.cli import main
from edge_sdk.config import RunConfig
from edge_sdk.converters import convert
from edge_sdk.liveview import MAX_STREAM_FPS, MAX_VIEWERS, VIEWER_TIMEOUT_S
from edge_sdk.runtime import Runtime
from support import free_port, interrupt, wait
from support.broker import Mosquitto
from support.browser import chromium, needs_browser

pytestmark = pytest.mark.slow

FRAME_SIZE = (240, 180)
PLAYBACK_FPS = 30


@pytest.fixture(autouse=True)
def _no_credential_in_the_environment(monkeypatch):
    # These tests watch the open live view of loopback; tests/test_liveview_auth.py gives credentials.
    for name in ("EDGE_SDK_HTTP_TOKEN", "EDGE_SDK_HTTP_PASSWORD"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def bundle(keras3_model, digits, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("liveview") / "bundle"
    convert(keras3_model, profile="rpi4", out=out, calib=digits["calib"])
    return out


@pytest.fixture(scope="module")
def video(digits, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("liveview-video") / "digits.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, FRAME_SIZE)
    for i in range(40):
        writer.write(cv2.resize(digits["images"][digits["val_idx"][i]], FRAME_SIZE, interpolation=cv2.INTER_NEAREST))
    writer.release()
    return path


def _wait_for_url(proc: subprocess.Popen, log: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(r"live view on (http://127\.0\.0\.1:\d+/)", log.read_text())
        if found:
            return found.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError(f"no live view URL on stderr:\n{log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def served(bundle, video, tmp_path_factory):
    """``edge-sdk run --loop --http 127.0.0.1:0`` in a child process, publishing to a real broker."""
    root = tmp_path_factory.mktemp("served")
    with Mosquitto(root / "broker") as broker:
        (root / "run.yaml").write_text(json.dumps({"mqtt": {
            "broker": broker.url, "device_id": "live-1", "outbox": {"path": str(root / "outbox.sqlite3")},
        }}))
        log = root / "stderr.txt"
        cmd = [sys.executable, "-m", "edge_sdk.cli", "run", str(bundle), "--source", str(video), "--loop",
               "--fps", str(PLAYBACK_FPS), "--threshold", "0", "--config", str(root / "run.yaml"), "--http", "127.0.0.1:0"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_SDK_HTTP_")}  # open: loopback, no credential
        with open(log, "wb") as err:
            # A shell's background job ignores SIGINT, and the child would inherit that; the run must
            # meet the Ctrl-C it is stopped with below.
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env,
                                    preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            yield _wait_for_url(proc, log, timeout=60).rstrip("/")
        finally:
            interrupt(proc)
    text = log.read_text()
    assert proc.returncode == 130 and re.search(r"frames \d+ .* fps", text), text[-2000:]  # Ctrl-C, then the summary
    assert "Traceback" not in text, text[-2000:]


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, whatever http_proxy says


def _get(url: str, *, timeout: float = 5.0) -> tuple[int, dict, bytes]:
    try:
        with _DIRECT.open(url, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _stats(base: str) -> dict:
    status, _, body = _get(base + "/stats.json")
    assert status == 200
    return json.loads(body)


class MjpegReader:
    """A ``multipart/x-mixed-replace`` client that keeps every JPEG it receives."""

    def __init__(self, base: str) -> None:
        host, port = base.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=5)
        self.conn.request("GET", "/stream.mjpg")
        self.response = self.conn.getresponse()
        self.parts: list[bytes] = []
        content_type = self.response.getheader("Content-Type", "")
        found = re.fullmatch(r"multipart/x-mixed-replace; ?boundary=(\S+)", content_type)
        assert self.response.status == 200 and found, (self.response.status, content_type)
        self.boundary = b"--" + found.group(1).encode()

    def read_part(self) -> bytes:
        line = self.response.readline()
        while line.strip() != self.boundary:  # the preamble, or the CRLF that ends the previous part
            assert line in (b"\r\n", b"\n"), line[:80]
            line = self.response.readline()
        headers = {}
        while (line := self.response.readline().strip()):
            name, _, value = line.decode().partition(":")
            headers[name.lower()] = value.strip()
        assert headers["content-type"] == "image/jpeg"
        part = self.response.read(int(headers["content-length"]))
        self.parts.append(part)
        return part

    def read_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.read_part()

    def read_until(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.read_part()

    def close(self) -> None:
        self.response.close()  # the connection alone does not own the socket once the response is read
        self.conn.close()


@pytest.mark.timeout(60, func_only=True)
@needs_browser
def test_headless_chromium_shows_the_stream_and_live_counters(served, bundle, tmp_path):
    from selenium.webdriver.common.by import By

    with chromium() as driver:
        driver.get(served + "/")
        size = wait(lambda: driver.execute_script(
            "const i = document.querySelector('img.stream'); return i && i.naturalWidth > 0 && [i.naturalWidth, i.naturalHeight];"),
            20, step=0.1, what="the stream's first frame in the <img>")
        assert tuple(size) == FRAME_SIZE

        def frames() -> int:
            return int(driver.find_element(By.ID, "frames").text)

        first = wait(frames, 10, step=0.1, what="the stats panel's first refresh")
        wait(lambda: frames() > first, 10, step=0.1, what="the frame counter to grow")
        assert driver.find_element(By.ID, "model").text == json.loads((bundle / "edge-bundle.json").read_text())["name"]
        assert float(driver.find_element(By.ID, "fps").text) > 0
        assert driver.find_element(By.ID, "mqtt-sent").is_displayed()
        assert "://" not in driver.page_source  # offline devices: nothing fetched from anywhere else
        rect = driver.execute_script("const r = document.querySelector('img.stream').getBoundingClientRect();"
                                     "return [r.left, r.top, r.width, r.height, window.devicePixelRatio];")
        shot = tmp_path / "liveview.png"
        assert driver.save_screenshot(str(shot))
    image = cv2.imread(str(shot))
    assert image is not None and image.shape[0] > 100
    left, top, width, height = (int(v * rect[4]) for v in rect[:4])  # CSS pixels to screenshot pixels
    stream = image[top:top + height, left:left + width]
    assert stream.size and float(stream.std()) > 20, "the stream area of the screenshot is blank"


@pytest.mark.timeout(30, func_only=True)
def test_metrics_parse_as_prometheus_text_and_counters_grow(served):
    from prometheus_client.parser import text_string_to_metric_families

    def scrape() -> dict:
        status, headers, body = _get(served + "/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        assert all(f.documentation and f.name.startswith("edge_sdk_") for f in families.values())
        return families

    def value(families, name: str, **labels) -> float:
        return next(s.value for f in families.values() for s in f.samples if s.name == name and labels.items() <= s.labels.items())

    before = scrape()
    time.sleep(1.0)
    after = scrape()
    for name in ("frames_in", "frames_processed", "detections", "mqtt_published", "mqtt_acked"):
        assert after[f"edge_sdk_{name}"].type == "counter"
        assert value(after, f"edge_sdk_{name}_total") > value(before, f"edge_sdk_{name}_total"), name
    assert after["edge_sdk_fps"].type == "gauge" and value(after, "edge_sdk_fps") > PLAYBACK_FPS / 3
    p50 = value(after, "edge_sdk_latency_seconds", stage="end_to_end", quantile="0.5")
    p99 = value(after, "edge_sdk_latency_seconds", stage="end_to_end", quantile="0.99")
    assert 0 < p50 <= p99 < 5
    assert value(after, "edge_sdk_info", version="0.1.0") == 1
    assert value(after, "edge_sdk_mqtt_connected") == 1 and value(after, "edge_sdk_mqtt_outbox_depth") >= 0


@pytest.mark.timeout(30, func_only=True)
def test_healthz_is_ok_while_frames_flow_and_unknown_paths_are_404(served):
    status, _, body = _get(served + "/healthz")
    health = json.loads(body)
    assert status == 200 and health["status"] == "ok" and health["frames"] > 0, health
    assert _get(served + "/nope")[0] == 404


@pytest.mark.timeout(30, func_only=True)
def test_stream_parts_are_jpegs_of_the_frame_size_at_a_capped_rate(served):
    reader = MjpegReader(served)
    try:
        reader.read_part()  # the newest frame, sent at once
        start = time.monotonic()
        reader.read_for(2.0)
        elapsed = time.monotonic() - start
    finally:
        reader.close()
    rate = (len(reader.parts) - 1) / elapsed
    assert PLAYBACK_FPS / 4 < rate <= MAX_STREAM_FPS * 1.15, rate  # the source runs at 30 fps
    for part in reader.parts:
        image = cv2.imdecode(np.frombuffer(part, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.shape == (FRAME_SIZE[1], FRAME_SIZE[0], 3)


def _stalled_viewer(base: str) -> socket.socket:
    """A viewer that asks for the stream and never reads: its tiny receive buffer fills at once."""
    host, port = base.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.sendall(b"GET /stream.mjpg HTTP/1.0\r\n\r\n")
    return sock


@pytest.mark.timeout(40, func_only=True)
def test_stalled_and_extra_viewers_hold_up_nobody(served):
    connected = time.monotonic()
    stalled = _stalled_viewer(served)
    readers = [MjpegReader(served), MjpegReader(served)]
    done = threading.Event()
    threads = [threading.Thread(target=r.read_until, args=(done,), daemon=True) for r in readers]
    try:
        wait(lambda: _stats(served)["viewers"] == 3, 5, step=0.1, what="three viewers")
        crowd = [MjpegReader(served) for _ in range(MAX_VIEWERS - 3)]
        assert _get(served + "/stream.mjpg")[0] == 503  # one over the cap
        for viewer in crowd:
            viewer.close()
        start, before = time.monotonic(), _stats(served)["frames_done"]
        for thread in threads:
            thread.start()
        # Writes to the stalled viewer block once its buffers fill; it is let go VIEWER_TIMEOUT_S later.
        wait(lambda: _stats(served)["viewers"] == 2, VIEWER_TIMEOUT_S + 10, step=0.1, what="the stalled viewer to be let go")
        let_go, elapsed, after = time.monotonic() - connected, time.monotonic() - start, _stats(served)["frames_done"]
        done.set()
        for thread in threads:
            thread.join(10)
    finally:
        done.set()
        for viewer in readers:
            viewer.close()
        stalled.close()
    assert let_go > VIEWER_TIMEOUT_S  # it was really stuck in a write for that long, not merely slow
    assert (after - before) / elapsed >= PLAYBACK_FPS * 0.5, "the pipeline slowed down while a viewer stalled"
    assert all(len(r.parts) >= MAX_STREAM_FPS * 0.5 * elapsed for r in readers), [len(r.parts) for r in readers]
    wait(lambda: _stats(served)["viewers"] == 0, 5, step=0.1, what="the server to let every closed viewer go")


@pytest.mark.timeout(60, func_only=True)
def test_healthz_is_503_before_the_first_frame_ok_while_frames_flow_and_503_once_every_camera_ended(bundle, video):
    config = RunConfig(source=str(video), fps=PLAYBACK_FPS, threshold=0, http="127.0.0.1:0")
    with Runtime(bundle, config) as runtime:
        base = f"http://127.0.0.1:{runtime.view.port}"
        status, _, body = _get(base + "/healthz")
        assert status == 503 and json.loads(body)["status"] == "starting"
        assert b'edge_sdk_frames_processed_total{camera="main"} 0.0' in _get(base + "/metrics")[2]
        runtime.start()
        health = wait(lambda: (lambda got: got[0] == 200 and json.loads(got[2]))(_get(base + "/healthz")), 10, step=0.1,
                      what="a healthy view")
        assert health["status"] == "ok" and health["cameras"][0]["camera"] == "main" and health["frames"] > 0, health
        assert runtime.wait(15)
        status, _, body = _get(base + "/healthz")
        health = json.loads(body)
        assert status == 503 and health["status"] == "ended" and health["frames"] == 40, health
        port = runtime.view.port
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)
    assert not [t for t in threading.enumerate() if t.name in ("edge-sdk-http", "edge-sdk-stream")]


@pytest.mark.timeout(30, func_only=True)
def test_a_viewer_who_leaves_is_let_go_even_when_no_frame_comes(bundle, video):
    with Runtime(bundle, RunConfig(source=str(video), threshold=0, max_frames=3, http="127.0.0.1:0")) as runtime:
        list(runtime.results())
        base = f"http://127.0.0.1:{runtime.view.port}"
        reader = MjpegReader(base)
        reader.read_part()  # the last frame, then nothing new: the server has nothing to write
        assert _stats(base)["viewers"] == 1
        reader.close()
        wait(lambda: _stats(base)["viewers"] == 0, 3, step=0.1, what="the server to notice the viewer left")


@pytest.mark.timeout(60, func_only=True)
def test_bad_http_values_and_a_busy_port_are_one_line_exit_2(bundle, video, tmp_path, capsys):
    run = ["run", str(bundle), "--source", str(video), "--max-frames", "1"]
    for value in ("8080", "localhost:", ":65536", "::8080", ":80x", "a b:80"):
        assert main([*run, "--http", value]) == 2, value
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("edge-sdk: error: ") and "'http'" in err[0], err
    config = tmp_path / "run.yaml"
    config.write_text("http: 8080\n")
    assert main([*run, "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "run.yaml: field 'http'" in err[0], err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main([*run, "--http", f"127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--http: cannot listen on 127.0.0.1:{port}: address already in use" in err[0], err
    assert not [t for t in threading.enumerate() if t.name == "edge-sdk-http"]


@pytest.mark.timeout(60, func_only=True)
def test_http_comes_from_the_config_file_and_the_flag_wins(bundle, video, tmp_path, capsys):
    in_file, on_flag = free_port(), free_port()
    config = tmp_path / "run.yaml"
    config.write_text(f"http: 127.0.0.1:{in_file}\nmax_frames: 5\n")
    run = ["run", str(bundle), "--source", str(video), "--config", str(config)]
    assert main(run) == 0
    assert f"live view on http://127.0.0.1:{in_file}/" in capsys.readouterr().err
    assert main([*run, "--http", f"127.0.0.1:{on_flag}"]) == 0
    err = capsys.readouterr().err
    assert f"live view on http://127.0.0.1:{on_flag}/" in err and "frames 5" in err
    with pytest.raises(ConnectionRefusedError):  # the server went with the run
        socket.create_connection(("127.0.0.1", on_flag), timeout=2)
