"""Engine plugins: third-party engines registered under the ``edge_sdk.engines`` entry-point group.

A vendor package (Hailo, RKNN, IMX500...) declares, in its pyproject.toml::

    [project.entry-points."edge_sdk.engines"]
    hailo = "edge_hailo:HailoEngine"

The class is constructed as ``HailoEngine(model_path, threads=..., options={...})`` and follows
the :class:`~edge_sdk.backends.Engine` protocol (``input_specs``, ``output_specs``, ``run``,
``close``). Its class attribute ``consumes`` says which of our model formats it reads ("onnx" or
"tflite"): the converter packages that format and the plugin compiles or loads it on the device.
Entry points are looked up by name only when a bundle or ``doctor`` asks: an installed plugin costs
nothing until used, and a broken one fails with one line naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from edge_sdk.errors import EngineError

GROUP = "edge_sdk.engines"
METHODS = ("input_specs", "output_specs", "run", "close")
FORMATS = ("onnx", "tflite")


@dataclass(frozen=True)
class PluginInfo:
    """An installed plugin as its entry point names it (nothing imported yet)."""

    name: str
    value: str  # "module:Class"
    distribution: str | None


def _entry_points() -> list:
    return list(metadata.entry_points(group=GROUP))


def discover() -> list[PluginInfo]:
    """Every engine plugin installed in this environment, sorted by name, without importing any."""
    found = []
    for ep in _entry_points():
        dist = getattr(ep, "dist", None)
        found.append(PluginInfo(ep.name, ep.value, f"{dist.name} {dist.version}" if dist is not None else None))
    return sorted(found, key=lambda p: p.name)


def _first_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0][:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def load(name: str) -> type:
    """The plugin class registered as ``name``, imported and checked against the Engine protocol."""
    matches = [ep for ep in _entry_points() if ep.name == name]
    if not matches:
        known = ", ".join(p.name for p in discover()) or "none installed"
        raise EngineError(f"engine plugin '{name}' is not installed (entry-point group {GROUP}: {known})")
    ep = matches[0]
    try:
        cls = ep.load()
    except Exception as exc:  # noqa: BLE001 - whatever a third-party import raises, it is one line
        raise EngineError(f"engine plugin '{name}' ({ep.value}) cannot be imported: {_first_line(exc)}") from exc
    missing = [m for m in METHODS if not callable(getattr(cls, m, None))]
    if missing:
        raise EngineError(f"engine plugin '{name}' ({ep.value}) lacks the engine method(s) {', '.join(missing)}")
    consumes = getattr(cls, "consumes", None)
    if consumes not in FORMATS:
        raise EngineError(f"engine plugin '{name}' ({ep.value}) must say which model it reads: consumes = "
                          f"{' or '.join(repr(f) for f in FORMATS)}, not {consumes!r}")
    return cls


def consumes(name: str) -> str:
    """The model format (onnx or tflite) the plugin ``name`` reads."""
    return load(name).consumes


def open_plugin(name: str, model_path: str | Path, *, threads: int | None = None, options: dict | None = None):
    """The plugin ``name`` opened on a model file; any failure is one EngineError line naming it."""
    cls = load(name)
    try:
        return cls(Path(model_path), threads=threads, options=dict(options or {}))
    except Exception as exc:  # noqa: BLE001 - a plugin's own error, translated at the boundary
        raise EngineError(f"engine plugin '{name}' failed to open {Path(model_path).name}: {_first_line(exc)}") from exc


def check(name: str) -> str | None:
    """None when the plugin imports and has every method, else the one-line reason."""
    try:
        load(name)
    except EngineError as exc:
        return str(exc)
    return None
