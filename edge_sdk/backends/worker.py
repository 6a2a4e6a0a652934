"""An engine in a child process, so a hung accelerator can be killed and a crashed one survived.

A delegate that hangs in native code (an Edge TPU on a flaky USB port, a GPU driver) cannot be
stopped from inside the process, and one that segfaults takes the process with it. Here the engine
lives in ``python -m edge_sdk.backends.worker``; the parent sends each input over a socket and waits
for the outputs. :meth:`EngineProcess.abort` kills the child, which wakes a waiting :meth:`run`
with an error at once; the pipeline's watchdog then opens a fresh one.

The wire format is ours on both ends: a JSON header per message, then one raw buffer per array.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from edge_sdk.errors import EdgeSDKError, EngineError

START_TIMEOUT_S = 120.0  # opening a model on an NPU or GPU compiles it; a healthy start is well within this


class EngineCrashed(EngineError):
    """The engine's process died or was killed while it held a request."""


def _wire_specs(specs: list[dict]) -> list[dict]:
    return [{**spec, "dtype": np.dtype(spec["dtype"]).str, "quantization": spec["quantization"]} for spec in specs]


def _local_specs(specs: list[dict]) -> list[dict]:
    return [
        {**spec, "dtype": np.dtype(spec["dtype"]), "quantization": tuple(spec["quantization"]) if spec["quantization"] else None}
        for spec in specs
    ]


def _send_arrays(conn: Connection, header: dict, arrays: list[np.ndarray]) -> None:
    arrays = [np.ascontiguousarray(a) for a in arrays]
    header = {**header, "arrays": [[a.dtype.str, list(a.shape)] for a in arrays]}
    conn.send_bytes(json.dumps(header).encode())
    for array in arrays:
        conn.send_bytes(memoryview(array).cast("B") if array.size else b"")


def _recv_arrays(conn: Connection) -> tuple[dict, list[np.ndarray]]:
    header = json.loads(conn.recv_bytes())
    arrays = [np.frombuffer(conn.recv_bytes(), dtype=np.dtype(dtype)).reshape(shape) for dtype, shape in header.pop("arrays", [])]
    return header, arrays


class EngineProcess:
    """An :class:`~edge_sdk.backends.Engine` whose engine runs in a child process.

    ``options`` are :func:`~edge_sdk.backends.open_engine`'s keywords; the child opens the bundle at
    ``bundle_path`` itself (verifying it again), so nothing but arrays crosses the socket.
    """

    def __init__(self, bundle_path: str | Path, *, start_timeout: float = START_TIMEOUT_S, **options) -> None:
        ours, theirs = socket.socketpair()
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "edge_sdk.backends.worker", str(theirs.fileno()), str(bundle_path), json.dumps(options)],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            )
        except OSError as exc:
            ours.close()
            raise EngineError(f"cannot start the engine process: {exc}") from exc
        finally:
            theirs.close()
        self._socket = ours  # kept for shutdown(); the Connection reads and writes a copy of it
        self._conn = Connection(os.dup(ours.fileno()))
        self._lock = threading.Lock()  # one request at a time; abort() never takes it
        self._aborted: str | None = None
        try:
            ready = self._conn.poll(start_timeout)
            hello = json.loads(self._conn.recv_bytes()) if ready else None
        except (EOFError, OSError, ValueError):
            reason = f"the engine process failed to start ({self._exit_reason()})"
            self.close()
            raise EngineError(reason) from None
        if hello is None or "error" in hello:
            self.close()
            raise EngineError(hello["error"] if hello else f"the engine process did not open the model within {start_timeout:.0f} s")
        self._inputs, self._outputs = _local_specs(hello["inputs"]), _local_specs(hello["outputs"])
        self.name = hello.get("name", "engine")

    @property
    def pid(self) -> int:
        return self._process.pid

    def input_specs(self) -> list[dict]:
        return self._inputs

    def output_specs(self) -> list[dict]:
        return self._outputs

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        with self._lock:
            if self._aborted is not None:
                raise EngineCrashed(self._aborted)
            try:
                _send_arrays(self._conn, {}, inputs)
                header, outputs = _recv_arrays(self._conn)
            except (EOFError, OSError, ValueError):
                reason = self._aborted or f"the engine process died during an inference ({self._exit_reason()})"
                self.abort(reason)
                raise EngineCrashed(reason) from None
        if "error" in header:
            raise EngineError(header["error"])
        return outputs

    def abort(self, reason: str | None = None) -> None:
        """Kill the child now (from any thread); a waiting :meth:`run` wakes with :class:`EngineCrashed`.

        Killing the child closes its end of the socket, which is what wakes :meth:`run`; our end is
        closed only by the thread that uses it, never under its feet.
        """
        if self._aborted is None:
            self._aborted = reason or "the engine process was stopped"
        if self._process.poll() is None:
            try:
                self._process.kill()
            except OSError:
                pass
        try:
            self._process.wait(5)
        except subprocess.TimeoutExpired:
            pass  # in uninterruptible sleep (a USB driver): the kernel ends it when the call returns

    def close(self) -> None:
        """Let the child finish (end-of-file on its socket), kill it if it does not, free the socket."""
        if self._aborted is None and self._process.poll() is None:
            self._aborted = "the engine was closed"
            try:
                self._socket.shutdown(socket.SHUT_RDWR)  # the child reads end-of-file and exits
                self._process.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.abort()
        # A run() woken by the kill lets go of the socket at once; one whose child cannot die (stuck
        # in a driver) keeps it, and the socket is freed with this object instead.
        if self._lock.acquire(timeout=5):
            try:
                self._conn.close()
                self._socket.close()
            finally:
                self._lock.release()

    def _exit_reason(self) -> str:
        try:
            code = self._process.wait(2)
        except subprocess.TimeoutExpired:
            return "it stopped answering"
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit code {code}"

    def __del__(self) -> None:
        process = getattr(self, "_process", None)
        if process is not None and process.poll() is None:
            process.kill()


def _serve(fd: int, bundle_path: str, options: dict) -> int:
    from edge_sdk.backends import open_engine
    from edge_sdk.bundle import open_bundle

    conn = Connection(fd)
    try:
        engine = open_engine(open_bundle(bundle_path), **options)
    except EdgeSDKError as exc:
        conn.send_bytes(json.dumps({"error": str(exc)}).encode())
        return 2
    conn.send_bytes(json.dumps({
        "inputs": _wire_specs(engine.input_specs()), "outputs": _wire_specs(engine.output_specs()),
        "name": type(engine).__name__,
    }).encode())
    while True:
        try:
            _, inputs = _recv_arrays(conn)
        except (EOFError, OSError):
            return 0  # the parent closed us, or died
        try:
            outputs = engine.run(inputs)
        except EdgeSDKError as exc:
            _send_arrays(conn, {"error": str(exc)}, [])
            continue
        _send_arrays(conn, {}, outputs)


if __name__ == "__main__":
    # Without this, a Ctrl-C in the terminal would reach the child too and kill it mid-inference
    # before the parent has decided to stop; the parent ends it by closing the socket.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(_serve(int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])))
