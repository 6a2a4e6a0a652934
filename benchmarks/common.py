"""What the benchmark scripts share: importing a sibling script, and a converted bundle cached between runs."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from edge_sdk.bundle import open_bundle

HERE = Path(__file__).resolve().parent


def sibling(name: str):
    """Another script of this folder, imported as a module (the folder is not a package)."""
    sys.path.insert(0, str(HERE))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(HERE))


def cached_bundle(folder: Path, convert: list[str], *, log: Callable[[str], None], what: str = "bundle") -> Path:
    """``folder`` when it holds a readable bundle; else one converted now by ``python <convert...>``.

    The conversion imports TensorFlow: a child process keeps it, and its gigabytes, out of the
    measuring process. A stale or half-written cache is rebuilt.
    """
    if folder.is_dir():
        try:
            open_bundle(folder)
            log(f"reusing {what} {folder.name}")
            return folder
        except Exception as exc:  # noqa: BLE001 - any unreadable cache is rebuilt
            log(f"cached {what} {folder.name} unusable ({exc}); rebuilding")
            shutil.rmtree(folder)
    log(f"no cached {what}: converting it in a child process (needs the [convert] extra, about a minute)")
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    started = time.perf_counter()
    subprocess.run([sys.executable, *convert], check=True, env=env, stdout=sys.stderr)
    open_bundle(folder)
    log(f"converted {what} in {time.perf_counter() - started:.0f} s")
    return folder


def write_results(path: Path, text: str, *, log: Callable[[str], None]) -> None:
    """The Markdown a benchmark printed, kept under benchmarks/results/ for the README's tables."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    log(f"written to {path}")


def cpu_flags() -> str:
    """The CPU features that change what the engines do (int8 dot products, bf16), as 'flags: ...'."""
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile")
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return "flags: " + (" ".join(f for f in wanted if f in have) or "none of " + " ".join(wanted))
    except OSError:
        pass
    return "flags: unknown"


def vnni() -> bool | None:
    """Whether this CPU has int8 dot products (avx512_vnni or avx_vnni in /proc/cpuinfo); None when unknown."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return bool(set(line.split(":", 1)[1].split()) & {"avx512_vnni", "avx_vnni"})
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name, as /proc/cpuinfo gives it (the machine a table came from)."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
