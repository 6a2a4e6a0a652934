"""Real media for the source tests: video files, image folders and live streams on loopback.

Live streams are encoded by a real ffmpeg process. ffmpeg can serve HTTP MPEG-TS to one client
(``-listen 1``) but cannot serve RTSP to a player (its RTSP muxer only pushes, and
``-rtsp_flags listen`` is for receiving a push), so :class:`RtspRelay` is a small RTSP server that
ffmpeg publishes into (ANNOUNCE/RECORD) and players read from (DESCRIBE/SETUP/PLAY), both over
TCP-interleaved RTP, the way a camera or MediaMTX serves a stream.

Run as ``python -m support.media rtsp-relay`` (with tests/ on the path) it serves on a free loopback port, prints the port, and
stops when its standard input closes.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from support import HOST, accepts, child_env, free_port, wait


FFMPEG = shutil.which("ffmpeg")


def level_frame(i: int, *, size: tuple[int, int] = (64, 48), gray: bool = False) -> np.ndarray:
    """A flat frame whose brightness encodes ``i``; survives lossy codecs (see :func:`frame_level`)."""
    width, height = size
    value = 20 + 10 * i
    shape = (height, width) if gray else (height, width, 3)
    return np.full(shape, value, np.uint8)


def frame_level(image: np.ndarray) -> int:
    return int(round((float(image.mean()) - 20) / 10))


def write_video(path: Path, count: int, *, size: tuple[int, int] = (64, 48), fps: float = 25.0) -> Path:
    """An MJPEG AVI of ``count`` frames, frame i at level i (``count`` <= 23)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"cv2.VideoWriter cannot write {path}")
    for i in range(count):
        writer.write(level_frame(i, size=size))
    writer.release()
    return path


def ffmpeg_testsrc(path: Path, *, seconds: float = 1.0, size: str = "160x120", rate: int = 25) -> Path:
    """A video made by ffmpeg's ``testsrc`` (H.264 when available, else MPEG-4 Part 2)."""
    subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
         "-i", f"testsrc=size={size}:rate={rate}:duration={seconds}", "-pix_fmt", "yuv420p", str(path)],
        check=True, timeout=60,
    )
    return path


def _stream_input(rate: int, size: str) -> list[str]:
    return ["-re", "-f", "lavfi", "-i", f"testsrc=size={size}:rate={rate}"]


class HttpTsServer:
    """ffmpeg serving MPEG-TS over HTTP on loopback, respawned after each client, like a camera.

    ``-listen 1`` serves a single client and closes its listening socket, so a supervisor thread
    starts a fresh ffmpeg whenever the previous one exits, until :meth:`stop`.
    """

    def __init__(self, *, rate: int = 25, size: str = "160x120") -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}/live.ts"
        self._cmd = [FFMPEG, "-hide_banner", "-loglevel", "quiet", *_stream_input(rate, size),
                     "-c:v", "mpeg2video", "-g", "5", "-f", "mpegts", "-listen", "1", self.url]
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._running = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> HttpTsServer:
        self._running.set()
        self._thread = threading.Thread(target=self._supervise, name="http-ts-server", daemon=True)
        self._thread.start()
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        """Kill the server (SIGKILL, as a crash or a pulled cable) and do not respawn it."""
        self._running.clear()
        with self._lock:
            if self._proc is not None:
                self._proc.kill()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def _supervise(self) -> None:
        while self._running.is_set():
            with self._lock:
                if not self._running.is_set():
                    return
                self._proc = subprocess.Popen(self._cmd, stdin=subprocess.DEVNULL)
            self._proc.wait()

    def __enter__(self) -> HttpTsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_for_port(port: int, *, timeout: float = 10.0) -> None:
    if not wait(lambda: accepts(port), timeout, step=0.05):
        raise RuntimeError(f"nothing listens on {HOST}:{port} after {timeout} s")


class _Conn:
    """One RTSP connection: requests, and RTP packets interleaved as ``$ channel length data``."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.file = sock.makefile("rb")
        self.send_lock = threading.Lock()

    def next_message(self) -> tuple[str, dict[str, str], bytes] | bytes | None:
        first = self.file.read(1)
        if not first:
            return None
        if first == b"$":
            header = self.file.read(3)
            if len(header) < 3:
                return None
            data = self.file.read(int.from_bytes(header[1:3], "big"))
            return b"$" + header + data
        line = first + self.file.readline()
        headers: dict[str, str] = {}
        while True:
            raw = self.file.readline()
            if not raw or raw in (b"\r\n", b"\n"):
                break
            name, _, value = raw.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        body = self.file.read(int(headers.get("content-length", "0")))
        return line.decode().strip(), headers, body

    def reply(self, headers: dict[str, str], status: str = "200 OK", extra: dict[str, str] | None = None,
              body: bytes = b"") -> None:
        lines = [f"RTSP/1.0 {status}", f"CSeq: {headers.get('cseq', '0')}"]
        lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    def send(self, data: bytes) -> None:
        with self.send_lock:
            self.sock.sendall(data)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class RtspRelay:
    """A one-path RTSP server: one publisher (ANNOUNCE/RECORD) and any number of players (PLAY).

    When the publisher disconnects, players are disconnected and DESCRIBE answers 404 until a
    publisher is back, as MediaMTX does. Run it in its own process (:class:`RtspStream`) so the
    tests' thread and file-descriptor counts see only the source under test.
    """

    def __init__(self) -> None:
        self._server = socket.create_server((HOST, 0))
        self.port = self._server.getsockname()[1]
        self.url = f"rtsp://{HOST}:{self.port}/live"
        self._lock = threading.Lock()
        self._sdp: bytes | None = None
        self._readers: list[_Conn] = []
        self._conns: list[_Conn] = []
        self._closed = False
        self._accept_thread = threading.Thread(target=self._accept, name="rtsp-relay", daemon=True)
        self._accept_thread.start()

    def close(self) -> None:
        self._closed = True
        try:
            # close() alone does not wake a thread blocked in accept() on Linux; shutdown() does.
            self._server.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._server.close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            conn.close()
        self._accept_thread.join(5)

    # -- the server ---------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._closed:
            try:
                sock, _ = self._server.accept()
            except OSError:
                return
            conn = _Conn(sock)
            with self._lock:
                self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), name="rtsp-conn", daemon=True).start()

    def _serve(self, conn: _Conn) -> None:
        publishing = False
        try:
            while (message := conn.next_message()) is not None:
                if isinstance(message, bytes):
                    if publishing:
                        self._forward(message)
                    continue
                request, headers, body = message
                method = request.split(" ", 1)[0]
                publishing = self._answer(conn, method, headers, body) or publishing
        except OSError:
            pass
        finally:
            with self._lock:
                if conn in self._readers:
                    self._readers.remove(conn)
                if conn in self._conns:
                    self._conns.remove(conn)
                readers = list(self._readers) if publishing else []
                if publishing:
                    self._sdp = None
                    self._readers.clear()
            for reader in readers:
                reader.close()
            conn.close()

    def _answer(self, conn: _Conn, method: str, headers: dict[str, str], body: bytes) -> bool:
        session = {"Session": "4242"}
        if method == "OPTIONS":
            conn.reply(headers, extra={"Public": "OPTIONS, DESCRIBE, ANNOUNCE, SETUP, PLAY, RECORD, TEARDOWN"})
        elif method == "ANNOUNCE":
            self._sdp = body
            conn.reply(headers)
        elif method == "DESCRIBE":
            sdp = self._sdp
            if sdp is None:
                conn.reply(headers, "404 Not Found")
            else:
                extra = {"Content-Base": f"{self.url}/", "Content-Type": "application/sdp"}
                conn.reply(headers, extra=extra, body=sdp)
        elif method == "SETUP":
            transport = headers.get("transport", "")
            if "RTP/AVP/TCP" not in transport:
                # A player tries UDP first; refusing it makes ffmpeg switch to TCP at once.
                conn.reply(headers, "461 Unsupported Transport")
            else:
                conn.reply(headers, extra={"Transport": transport, **session})
        elif method == "RECORD":
            conn.reply(headers, extra=session)
            return True
        elif method == "PLAY":
            conn.reply(headers, extra={**session, "Range": "npt=0.000-"})
            # A reader that stops reading must not stall the publisher (and the other readers).
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 2, 0))
            with self._lock:
                self._readers.append(conn)
        else:
            conn.reply(headers, extra=session)
        return False

    def _forward(self, packet: bytes) -> None:
        with self._lock:
            readers = list(self._readers)
        for reader in readers:
            try:
                reader.send(packet)
            except OSError:
                with self._lock:
                    if reader in self._readers:
                        self._readers.remove(reader)
                reader.close()


class RtspStream:
    """An RTSP stream on loopback: :class:`RtspRelay` in a subprocess, fed by ffmpeg ``testsrc``.

    ffmpeg publishes MPEG-4 Part 2 with a key frame every 5 frames, so a player joining mid-stream
    decodes within 0.2 s. :meth:`freeze`/:meth:`thaw` SIGSTOP/SIGCONT the publisher (a hung
    camera: connections stay up, no data flows); :meth:`kill` SIGKILLs it (a crashed camera).
    """

    def __init__(self) -> None:
        self._relay = subprocess.Popen(
            [sys.executable, "-m", "support.media", "rtsp-relay"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=child_env(),
        )
        self.port = int(self._relay.stdout.readline())
        self.url = f"rtsp://{HOST}:{self.port}/live"
        self._publisher: subprocess.Popen | None = None

    def publish(self, *, rate: int = 25, size: str = "160x120", timeout: float = 10.0) -> RtspStream:
        self._publisher = subprocess.Popen(
            [FFMPEG, "-hide_banner", "-loglevel", "quiet", *_stream_input(rate, size),
             "-c:v", "mpeg4", "-g", "5", "-q:v", "5", "-f", "rtsp", "-rtsp_transport", "tcp", self.url],
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not rtsp_describe_ok(self.url):
            if time.monotonic() > deadline or self._publisher.poll() is not None:
                raise RuntimeError("ffmpeg did not publish into the RTSP relay")
            time.sleep(0.05)
        return self

    def freeze(self) -> None:
        os.kill(self._publisher.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self._publisher.pid, signal.SIGCONT)

    def kill(self) -> None:
        if self._publisher is not None:
            self._publisher.kill()
            self._publisher.wait(10)
            self._publisher = None

    def close(self) -> None:
        if self._publisher is not None:
            os.kill(self._publisher.pid, signal.SIGCONT)
        self.kill()
        self._relay.stdin.close()
        try:
            self._relay.wait(5)
        except subprocess.TimeoutExpired:
            self._relay.kill()
            self._relay.wait(5)
        self._relay.stdout.close()

    def __enter__(self) -> RtspStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def rtsp_describe_ok(url: str) -> bool:
    """Whether the server at ``url`` answers DESCRIBE with 200 (that is, a publisher is live)."""
    host, port = url.split("/")[2].split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2) as sock:
            sock.sendall(f"DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\n\r\n".encode())
            return sock.recv(64).startswith(b"RTSP/1.0 200")
    except OSError:
        return False


def _serve_relay() -> None:
    relay = RtspRelay()
    print(relay.port, flush=True)
    sys.stdin.read()
    relay.close()


if __name__ == "__main__":
    if sys.argv[1:] == ["rtsp-relay"]:
        _serve_relay()
