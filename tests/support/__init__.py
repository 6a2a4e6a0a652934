"""The tests' harnesses, one of each: a real broker (:mod:`support.broker`), a test PKI
(:mod:`support.pki`), a fault proxy (:mod:`support.faultproxy`), the backend's de-duplicating
subscriber (:mod:`support.subscriber`), a raw MQTT peer (:mod:`support.peer`), a real PostgreSQL
(:mod:`support.postgres`) and the device messages a fleet store receives (:mod:`support.fleet`), the
broker and database fixtures (:mod:`support.fixtures`, re-exported by ``tests/conftest.py``), real media and live
streams (:mod:`support.media`), small bundles, models and plugin decoders, and the fuzz and
reliability tiers' builders.

Here: the one ``free_port``, the one ``wait``, and the environment a child process needs to
import this package (a plugin decoder named ``plugin:support.decoders....``, a relay, a fuzz child).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

HOST = "127.0.0.1"
TESTS = Path(__file__).resolve().parent.parent
ROOT = TESTS.parent

T = TypeVar("T")


def free_port() -> int:
    """A loopback port nothing listens on now (closed again before the caller binds it)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def accepts(port: int, *, host: str = HOST) -> bool:
    """Whether something accepts a TCP connection on ``port`` now."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def wait(predicate: Callable[[], T], timeout: float = 5.0, *, step: float = 0.02, what: str | None = None) -> T | bool:
    """Poll ``predicate`` every ``step`` seconds until it returns something true, and return that.

    Past ``timeout`` (the predicate is asked once more after the deadline): ``False``, or, when
    ``what`` names what was awaited, ``AssertionError("timed out after {timeout} s waiting for {what}")``.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            if what is not None:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            return False
        time.sleep(step)


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment with ``tests/`` first on PYTHONPATH, so a child imports ``support``."""
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path below ``folder`` with its bytes (None for a folder), to prove a failed command changed
    nothing; empty when ``folder`` does not exist."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def single_error_line(capsys) -> str:
    """The one line a failed CLI command wrote on stderr (pytest's ``capsys``), with no traceback."""
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {captured.err!r}"
    assert "Traceback" not in captured.err
    return lines[0]


def interrupt(process, timeout: float = 20.0) -> bool:
    """Stop a child as Ctrl-C does; True when it ended by itself within ``timeout``, else it is killed."""
    import signal
    import subprocess

    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout)
        return True
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return False
