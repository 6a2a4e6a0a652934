"""The demo's MQTT broker: the one given, else Mosquitto from PATH, else an embedded pure-Python one.

Whatever is started here listens on loopback only, on a free port, and stops with the demo.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from edge_sdk.errors import ConfigError, PublishError

MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/opt/homebrew/sbin/mosquitto")


@dataclass(frozen=True)
class DemoBroker:
    url: str
    kind: str  # "given", "mosquitto" or "embedded (amqtt)"
    protocol: str  # MQTT protocol the runtime and the subscriber speak to it


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, *, timeout: float, alive=lambda: True) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def find_mosquitto() -> str | None:
    return shutil.which("mosquitto") or next((p for p in MOSQUITTO_PATHS if Path(p).is_file()), None)


@contextmanager
def _mosquitto(executable: str, folder: Path) -> Iterator[str]:
    port = _free_port()
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\n")
    config.chmod(0o644)  # run as root, mosquitto drops to its own user and must still read this
    process = subprocess.Popen([executable, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        if not _wait_for_port(port, timeout=10, alive=lambda: process.poll() is None):
            error = process.stderr.read().decode(errors="replace").strip().splitlines() if process.poll() is not None else []
            raise PublishError(f"Mosquitto ({executable}) did not start on 127.0.0.1:{port}: {error[-1] if error else 'timed out'}")
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@contextmanager
def _embedded() -> Iterator[str]:
    try:
        from amqtt.broker import Broker
    except ImportError as exc:
        raise ConfigError(
            "no MQTT broker: pass --broker URL, install Mosquitto (apt install mosquitto), "
            'or pip install "edge-sdk[examples]" for the embedded one'
        ) from exc
    # amqtt logs every client's connect and disconnect at INFO and a refused MQTT 5 hello as ERROR.
    for name in ("amqtt", "transitions"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    port = _free_port()
    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    loop = asyncio.new_event_loop()
    holder: dict = {}

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            holder["broker"] = Broker(config, loop=loop)
            loop.run_until_complete(holder["broker"].start())
        except Exception as exc:  # reported below as one line; the demo cannot go on without it
            holder["error"] = exc
            return
        loop.run_forever()

    thread = threading.Thread(target=serve, name="edge-sdk-demo-broker", daemon=True)
    thread.start()
    try:
        if not _wait_for_port(port, timeout=10, alive=thread.is_alive):
            raise PublishError(f"the embedded MQTT broker did not start on 127.0.0.1:{port}: {holder.get('error', 'timed out')}")
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        if "broker" in holder and loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(holder["broker"].shutdown(), loop).result(5)
            except Exception:  # noqa: BLE001 - shutting down; the thread is a daemon either way
                pass
            loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


@contextmanager
def demo_broker(given: str | None, *, folder: Path, embedded: bool = False) -> Iterator[DemoBroker]:
    """The broker the demo publishes to, started here when none is given."""
    if given:
        yield DemoBroker(given, "given", "5")
        return
    executable = None if embedded else find_mosquitto()
    if executable is not None:
        with _mosquitto(executable, folder) as url:
            yield DemoBroker(url, f"Mosquitto ({executable})", "5")
        return
    with _embedded() as url:
        # amqtt speaks MQTT 3.1.1 only.
        yield DemoBroker(url, "embedded (amqtt)", "3.1.1")
