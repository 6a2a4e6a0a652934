"""Runs fuzz cases in a child process, so a native crash or a hang costs the child, never pytest.

The parent (:func:`run_batch`) sends one job on stdin: a kind and a list of cases. The child reports
one JSON line per case on a private copy of stdout (native libraries' own prints are sent to
stderr): ``{"start": i}`` before a case, then its result. When the child dies or a case runs past
its time limit, the parent records that case as a crash or a hang and starts a new child for the
cases after it.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import resource
import select
import subprocess
import sys
import tempfile
import time
import traceback
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

# Run as a script (by path, so it needs nothing of tests/): from the repository root.
ROOT = Path(__file__).resolve().parents[3]

# A zeros batch is fed to a model that loads, unless its input is bigger than this.
_RUN_LIMIT = 10_000_000


def _zeros(specs: list[dict]) -> list | None:
    import numpy as np

    inputs = []
    for spec in specs:
        shape = [max(1, d) for d in spec["shape"]]
        if int(np.prod(shape, dtype=np.float64)) > _RUN_LIMIT:
            return None
        inputs.append(np.zeros(shape, spec["dtype"]))
    return inputs


def _engine_case(engine) -> dict:
    """A loaded engine is run once on zeros; that must not crash either."""
    inputs = _zeros(engine.input_specs())
    detail = {"inputs": len(engine.input_specs()), "outputs": len(engine.output_specs())}
    if inputs is None:
        return {**detail, "ran": "skipped: input too large"}
    try:
        outputs = engine.run(inputs)
    except Exception as exc:  # the pipeline turns these into EngineError; only a crash matters here
        return {**detail, "ran": f"{type(exc).__name__}: {str(exc)[:200]}"}
    return {**detail, "ran": f"{len(outputs)} outputs"}


def _litert(case: dict) -> dict:
    from edge_sdk.backends.litert import LiteRTEngine

    return _engine_case(LiteRTEngine(case["path"], isolate=case.get("isolate", False)))


def _openvino(case: dict) -> dict:
    from edge_sdk.backends.openvino import OpenVINOEngine

    return _engine_case(OpenVINOEngine(case["path"], device="CPU"))


def _image(case: dict) -> dict:
    from edge_sdk.imagefolder import read_image

    image = read_image(case["path"])
    return {"shape": list(image.shape), "dtype": str(image.dtype)}


def _source(case: dict) -> dict:
    """Every image of a folder through the frame source the runtime uses."""
    from edge_sdk.sources import open_source

    events: list[tuple[str, str]] = []
    source = open_source(case["path"], on_event=lambda e: events.append((str(e.state.value), e.detail)))
    try:
        delivered = sum(1 for _ in source.frames())
    finally:
        source.close()
    return {"delivered": delivered, "events": events, "stats": dataclasses.asdict(source.stats())}


def _cli(case: dict) -> dict:
    from edge_sdk.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(case["argv"])
    return {"code": code, "stderr": err.getvalue(), "stdout": out.getvalue()[-2000:]}


def _selftest(case: dict) -> dict:
    """Cases that crash or hang on purpose, to show the parent notices and carries on."""
    import signal

    if case["do"] == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    if case["do"] == "hang":
        time.sleep(3600)
    return {}


KINDS = {"litert": _litert, "openvino": _openvino, "image": _image, "source": _source, "cli": _cli, "selftest": _selftest}


def _child() -> None:
    job = json.loads(sys.stdin.read())
    report = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # native libraries print to fd 1; keep the report channel clean
    from edge_sdk.errors import EdgeSDKError

    action = KINDS[job["kind"]]
    if job["kind"] in ("litert", "cli"):
        import edge_sdk.backends.litert  # noqa: F401 - imports are not part of any case's time
    if job["kind"] == "openvino":
        import openvino  # noqa: F401
    if job["kind"] == "cli":
        import edge_sdk.cli  # noqa: F401
    report.write(json.dumps({"ready": True}) + "\n")
    for i, case in enumerate(job["cases"]):
        report.write(json.dumps({"start": i}) + "\n")
        t0 = time.monotonic()
        try:
            result = {"outcome": "ok", **action(case)}
        except EdgeSDKError as exc:
            result = {"outcome": "error", "type": type(exc).__name__, "message": str(exc)}
        except BaseException as exc:  # noqa: BLE001 - reported: any other exception is a finding
            result = {"outcome": "exception", "type": type(exc).__name__, "message": str(exc)[:500],
                      "traceback": traceback.format_exc()[-3000:]}
        result.update(i=i, seconds=time.monotonic() - t0, rss_mb=_peak_rss_mb())
        report.write(json.dumps(result, default=str) + "\n")


def _peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM).

    Not getrusage's ru_maxrss: Linux carries the pre-exec high-water mark over execve, so a child
    forked from a big pytest process would report the parent's size.
    """
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- parent side ------------------------------------------------------------------------------------

def run_batch(kind: str, cases: list[dict], *, case_timeout: float = 10.0, start_timeout: float = 60.0,
              env: dict | None = None) -> list[dict]:
    """One result per case, in order; a crash or hang of the child is recorded against its case."""
    results: list[dict | None] = [None] * len(cases)
    first = 0
    while first < len(cases):
        first = _run_from(kind, cases, first, results, case_timeout, start_timeout, env)
    return results  # type: ignore[return-value]


def _run_from(kind, cases, first, results, case_timeout, start_timeout, env) -> int:
    """Run cases[first:] in one child; returns where the next child has to start."""
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(
            [sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})},
            cwd=str(ROOT),
        )
        proc.stdin.write(json.dumps({"kind": kind, "cases": cases[first:]}).encode())
        proc.stdin.close()
        buffer = b""
        current: int | None = None
        deadline = time.monotonic() + start_timeout
        started = 0.0
        try:
            while True:
                ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
                if not ready:  # the case (or the start-up) ran past its limit
                    proc.kill()
                    proc.wait()
                    if current is None:
                        raise RuntimeError(f"fuzz child ({kind}) did not start: {_tail(stderr)}")
                    results[current] = {"outcome": "hang", "i": current, "seconds": time.monotonic() - started,
                                        "message": f"no answer within {case_timeout} s"}
                    return current + 1
                chunk = os.read(proc.stdout.fileno(), 1 << 16)
                if not chunk:  # the child is gone
                    code = proc.wait()
                    if current is None:
                        if all(r is not None for r in results[first:]):
                            return len(cases)
                        raise RuntimeError(f"fuzz child ({kind}) exited with {code} before a case: {_tail(stderr)}")
                    results[current] = {"outcome": "crash", "i": current, "seconds": time.monotonic() - started,
                                        "message": f"child exited with {code}: {_tail(stderr)}"}
                    return current + 1
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    event = json.loads(line)
                    if "ready" in event:
                        deadline = time.monotonic() + start_timeout
                    elif "start" in event:
                        current = first + event["start"]
                        started = time.monotonic()
                        deadline = started + case_timeout
                    else:
                        event["i"] = first + event["i"]
                        results[event["i"]] = event
                        current = None
                        deadline = time.monotonic() + start_timeout
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()


def _tail(handle) -> str:
    handle.seek(0)
    return handle.read().decode("utf-8", "replace")[-1500:].strip()


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    _child()
