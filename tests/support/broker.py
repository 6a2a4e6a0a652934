"""A real Mosquitto per test: free loopback ports, generated config, its own persistence, bounded waits."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from support import HOST, accepts, free_port, wait


MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd")


def password_line(user: str, password: str) -> str:
    """One password_file line as mosquitto_passwd 2.0 writes it: PBKDF2-SHA512, 101 rounds ("$7$")."""
    salt = secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101)
    return f"{user}:$7$101${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def _tls_files(tls) -> dict[str, Path]:
    """A Pki (its CA and server certificate) or a mapping with cafile/certfile/keyfile."""
    if isinstance(tls, Mapping):
        return {key: Path(tls[key]) for key in ("cafile", "certfile", "keyfile")}
    return {"cafile": Path(tls.ca_cert), "certfile": Path(tls.server_cert), "keyfile": Path(tls.server_key)}


class Mosquitto:
    """One broker on its own ports, restartable on the same ports with the same persistence.

    ``tls`` (a ``support.pki.Pki`` or a mapping with cafile/certfile/keyfile) adds a TLS listener;
    ``passwords`` maps user -> password; ``acl`` is an ACL file's text. Security settings are
    global (``per_listener_settings false``), so the plain listener enforces them too.
    """

    def __init__(
        self,
        folder: Path,
        *,
        tls=None,
        require_certificate: bool = False,
        use_identity_as_username: bool = False,
        passwords: Mapping[str, str] | None = None,
        acl: str | None = None,
        allow_anonymous: bool = True,
        websockets: bool = False,
        max_queued_messages: int = 100_000,
        max_inflight_messages: int = 20,
        autosave_interval: int = 1,
        verbose: bool = False,
        extra: str = "",
    ) -> None:
        if MOSQUITTO is None:
            raise RuntimeError("mosquitto is not installed (.ci/run installs Debian's mosquitto)")
        if max_queued_messages < 1:
            raise ValueError(f"max_queued_messages must be >= 1 (0 means unbounded), got {max_queued_messages}")
        if max_inflight_messages < 1:
            raise ValueError(f"max_inflight_messages must be >= 1, got {max_inflight_messages}")
        if isinstance(tls, Mapping):  # the older dict form carried the listener options inside
            require_certificate = require_certificate or bool(tls.get("require_certificate"))
            use_identity_as_username = use_identity_as_username or bool(tls.get("use_identity_as_username"))
        if (require_certificate or use_identity_as_username) and tls is None:
            raise ValueError("require_certificate and use_identity_as_username need tls=")
        self.folder = Path(folder)
        self.data = self.folder / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.tls_port = free_port() if tls is not None else None
        self.ws_port = free_port() if websockets else None
        self.process: subprocess.Popen | None = None
        self._log_path = self.folder / "mosquitto.log"
        lines = [
            # Started as root, mosquitto drops to user 'mosquitto' before it reads the certificates
            # and writes persistence: it then exits on the 0600 keys, or runs and fails only when
            # it saves (pytest's tmp dirs are 0700). Staying root is the simplest honest fix.
            "user root" if os.geteuid() == 0 else "",
            "per_listener_settings false",
            f"allow_anonymous {'true' if allow_anonymous else 'false'}",
            "persistence true",
            f"persistence_location {self.data}/",
            f"autosave_interval {autosave_interval}",
            f"max_queued_messages {max_queued_messages}",
            f"max_inflight_messages {max_inflight_messages}",
            "log_dest stderr",
            "log_timestamp_format %H:%M:%S",
            *(f"log_type {t}" for t in ("error", "warning", "notice", "information", "subscribe", "unsubscribe")),
            "log_type debug" if verbose else "",
            "connection_messages true",
            f"listener {self.port} {HOST}",
        ]
        if passwords:
            lines.append(f"password_file {self._write_passwords(passwords)}")
        if acl is not None:
            (self.folder / "acl").write_text(acl)
            lines.append(f"acl_file {self.folder / 'acl'}")
        if tls is not None:
            files = _tls_files(tls)
            lines += [f"listener {self.tls_port} {HOST}", *(f"{key} {path}" for key, path in files.items())]
            lines.append(f"require_certificate {'true' if require_certificate else 'false'}")
            lines.append(f"use_identity_as_username {'true' if use_identity_as_username else 'false'}")
        if websockets:
            lines += [f"listener {self.ws_port} {HOST}", "protocol websockets"]
        self.config = self.folder / "mosquitto.conf"
        self.config.write_text("\n".join(line for line in lines if line) + "\n" + extra + "\n")

    def _write_passwords(self, passwords: Mapping[str, str]) -> Path:
        path = self.folder / "passwd"
        if MOSQUITTO_PASSWD is None:
            path.write_text("".join(password_line(u, p) + "\n" for u, p in passwords.items()))
        else:
            for i, (user, password) in enumerate(passwords.items()):
                create = ["-c"] if i == 0 else []
                subprocess.run([MOSQUITTO_PASSWD, "-b", *create, str(path), user, password], check=True, capture_output=True, timeout=10)
        path.chmod(0o600)
        return path

    @property
    def url(self) -> str:
        return f"mqtt://{HOST}:{self.port}"

    @property
    def tls_url(self) -> str:
        if self.tls_port is None:
            raise ValueError("this broker has no TLS listener (pass tls=)")
        return f"mqtts://{HOST}:{self.tls_port}"

    @property
    def ws_url(self) -> str:
        if self.ws_port is None:
            raise ValueError("this broker has no websockets listener (pass websockets=True)")
        return f"ws://{HOST}:{self.ws_port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self._log_path.read_text(errors="replace") if self._log_path.exists() else ""

    def wait_for_log(self, text: str, timeout: float = 5.0) -> bool:
        return wait(lambda: text in self.log(), timeout)

    def start(self, timeout: float = 10.0) -> Mosquitto:
        """Start and return once every listener accepts connections; fail fast with the log."""
        if self.running:
            raise RuntimeError(f"mosquitto on port {self.port} is already running")
        offset = self._log_path.stat().st_size if self._log_path.exists() else 0
        with open(self._log_path, "ab") as log:
            self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT)
        ports = [p for p in (self.port, self.tls_port, self.ws_port) if p is not None]
        deadline = time.monotonic() + timeout
        # Listeners open before the certificates, password and ACL files are loaded, and a broker
        # that fails on those exits a moment later: wait for "running", then for the plain port
        # (probing the TLS port would log a failed handshake).
        while not (" running" in self.log()[offset:] and accepts(self.port)):
            if self.process.poll() is not None or time.monotonic() > deadline:
                code = self.process.poll()
                self.kill()
                raise RuntimeError(f"mosquitto did not start on {ports} (exit code {code}):\n{self.log()[offset:][-3000:]}")
            time.sleep(0.02)
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
        """SIGKILL: only what the last autosave wrote survives."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def restart(self, timeout: float = 10.0) -> Mosquitto:
        self.stop(timeout)
        return self.start(timeout)

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

