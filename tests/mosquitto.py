"""A real Mosquitto per test: free loopback port, generated config, its own persistence, bounded waits."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class Mosquitto:
    """One broker, restartable on the same port with the same persistence folder.

    ``passwords`` maps user -> password (hashed with mosquitto_passwd); ``acl`` is an ACL file's
    text; ``tls`` is a dict with ``cafile``, ``certfile``, ``keyfile`` and optional
    ``require_certificate`` / ``use_identity_as_username`` for an extra TLS listener.
    """

    def __init__(
        self, folder: Path, *, passwords: dict[str, str] | None = None, acl: str | None = None,
        allow_anonymous: bool = True, tls: dict | None = None, websockets: bool = False,
        max_queued_messages: int = 100_000, extra: str = "",
    ) -> None:
        if MOSQUITTO is None:
            raise RuntimeError("mosquitto is not installed (.ci/run installs Debian's mosquitto)")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "data").mkdir(exist_ok=True)
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        self.ws_port = free_port() if websockets else None
        self.process: subprocess.Popen | None = None
        lines = [
            # As root, mosquitto drops to user 'mosquitto', who could not write this folder.
            "user root" if os.geteuid() == 0 else "",
            "persistence true", f"persistence_location {self.folder / 'data'}/", "autosave_interval 1",
            f"max_queued_messages {max_queued_messages}", "log_dest stderr", "log_type error", "log_type warning",
            "log_type notice", "log_type information", "connection_messages true",
            f"listener {self.port} 127.0.0.1", f"allow_anonymous {'true' if allow_anonymous else 'false'}",
        ]
        if passwords:
            path = self.folder / "passwd"
            path.write_text("")
            for user, password in passwords.items():
                subprocess.run(["mosquitto_passwd", "-b", str(path), user, password], check=True, capture_output=True)
            lines.append(f"password_file {path}")
        if acl is not None:
            (self.folder / "acl").write_text(acl)
            lines.append(f"acl_file {self.folder / 'acl'}")
        if tls:
            lines += [f"listener {self.tls_port} 127.0.0.1", f"cafile {tls['cafile']}", f"certfile {tls['certfile']}", f"keyfile {tls['keyfile']}"]
            if tls.get("require_certificate"):
                lines.append("require_certificate true")
            if tls.get("use_identity_as_username"):
                lines.append("use_identity_as_username true")
        if websockets:
            lines += [f"listener {self.ws_port} 127.0.0.1", "protocol websockets"]
        # mosquitto 2 applies per-listener security unless told otherwise; one set for all listeners.
        lines.insert(0, "per_listener_settings false")
        self.config = self.folder / "mosquitto.conf"
        self.config.write_text("\n".join(line for line in lines if line) + "\n" + extra)
        self._log = open(self.folder / "mosquitto.log", "ab")

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def tls_url(self) -> str:
        return f"mqtts://127.0.0.1:{self.tls_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}"

    def log(self) -> str:
        return (self.folder / "mosquitto.log").read_text(errors="replace")

    def start(self, timeout: float = 10.0) -> Mosquitto:
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=self._log, stderr=subprocess.STDOUT)
        if not _wait_port(self.port, timeout):
            self.kill()
            raise RuntimeError(f"mosquitto did not start on port {self.port}:\n{self.log()[-3000:]}")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful: SIGTERM, so the broker saves its persistence (sessions, queued messages)."""
        if self.process is None:
            return
        self.resume()
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)
        self.process = None

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def restart(self) -> Mosquitto:
        self.stop()
        return self.start()

    def pause(self) -> None:
        """SIGSTOP: sockets stay open, nothing is answered (a black-holed link, as the device sees it)."""
        if self.process is not None:
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        self._log.close()
