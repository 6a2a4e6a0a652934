"""Run configuration: CLI flags or a YAML file, validated with field-level errors; flags win."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edge_sdk.errors import ConfigError
from edge_sdk.httpsettings import LiveViewSettings, parse_address
from edge_sdk.mqtt.settings import MQTTSettings, PublishMode
from edge_sdk.tracking.settings import LineSettings, TrackingSettings, ZoneSettings, check_names, check_points, parse_zones


class WatchdogSettings(BaseModel):
    """How a hung or failed inference engine is noticed, restarted, and given up on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    isolate: bool = Field(
        default=False,
        description="Run the engine in a child process: a hang is ended by killing it, and a crash (a segfault in a "
        "delegate) is survived. Costs a copy of each input and output; advised for USB accelerators.",
    )
    hang_s: float = Field(
        default=10.0, gt=0, le=3600,
        description="An inference (engine and decoder) running longer than this is a hang: the engine is restarted.",
    )
    max_restarts: int = Field(
        default=5, ge=0, le=1000,
        description="Restarts allowed within window_s; one more failure stops the run with an error, for the service manager to restart.",
    )
    window_s: float = Field(default=600.0, gt=0, description="The restart limiter's window in seconds.")
    start_s: float = Field(default=120.0, gt=0, description="Time allowed to open a fresh engine (an NPU compiles the model first).")


# A camera id is one MQTT topic level under the device's prefix: no wildcard or separator (which
# would widen ACL patterns), and none of the device-level names (cmd would even read as a command).
CAMERA_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
RESERVED_CAMERA_IDS = frozenset({"cmd", "status", "info", "metrics", "alert", "detections", "snapshot", "events", "counts"})


def check_camera_id(value: str) -> str:
    if not isinstance(value, str) or not CAMERA_ID.match(value):
        raise ValueError(f"camera id {value!r} is not a safe topic level: use 1-64 letters, digits, '_' or '-', "
                         "starting with a letter or digit")
    if value in RESERVED_CAMERA_IDS:
        raise ValueError(f"camera id {value!r} is reserved for a device-level topic; choose another")
    return value


def _check_zones(zones):
    if isinstance(zones, dict):
        return zones
    for i, polygon in enumerate(zones or []):
        if len(polygon) < 3:
            raise ValueError(f"zone {i} needs at least 3 points")
        check_points(polygon, what=f"zone {i}")
    return zones


Polygon = list[tuple[float, float]]
ZONES_HELP = ("Named zones for events, {name: [[x, y], ...]} or {name: {points, loiter_s?, labels?, anchor?}}; or, "
              "as a list of polygons without names, a filter: only boxes whose centre is inside one are reported.")
LINES_HELP = "Named lines counted in and out, {name: {points: [[x, y], [x, y]], in: left|right|up|down, labels?, anchor?}}."


class _Regions:
    """What a camera's zones and lines mean: a list of polygons filters, a mapping names event zones."""

    @property
    def polygons(self) -> list[Polygon] | None:
        """The zones that filter detections (the list form), or None."""
        return self.zones if isinstance(self.zones, list) else None

    @property
    def named_zones(self) -> dict[str, ZoneSettings]:
        return self.zones if isinstance(self.zones, dict) else {}

    @property
    def named_lines(self) -> dict[str, LineSettings]:
        return dict(self.lines or {})


class CameraConfig(_Regions, BaseModel):
    """One camera of a run: where its frames come from, and its own pacing and filters. A field
    left out takes the run's value (the top-level ``fps``, ``threshold``... of the config)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="Names the camera in results, topics ({prefix}{id}/detections) and the live view.")
    source: str = Field(description="Camera index, /dev/videoN, file, URL, folder, glob or GStreamer pipeline.")
    fps: float | None = Field(default=None, gt=0, description="Live: process at most this many frames/s. Files: real-time playback.")
    stride: int | None = Field(default=None, ge=1, description="Process every Nth frame.")
    threshold: float | None = Field(default=None, ge=0, le=1, description="Minimum score of a reported detection.")
    labels: list[str] | None = Field(default=None, description="Report only these labels.")
    zones: list[Polygon] | dict[str, ZoneSettings] | None = Field(default=None, description=ZONES_HELP)
    lines: dict[str, LineSettings] | None = Field(default=None, description=LINES_HELP)
    min_area: float | None = Field(default=None, ge=0, le=1, description="Minimum box area as a share of the frame.")
    loop: bool | None = Field(default=None, description="Restart a video file or folder at its end.")

    _id = field_validator("id")(classmethod(lambda cls, v: check_camera_id(v)))
    _zones = field_validator("zones")(classmethod(lambda cls, v: _check_zones(v)))
    _parse = field_validator("zones", mode="before")(classmethod(lambda cls, v: parse_zones(v)))

    @model_validator(mode="after")
    def _names(self):
        check_names(self.named_zones, self.lines)
        return self

    @field_validator("source", mode="before")
    @classmethod
    def _source(cls, value):
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class RunConfig(_Regions, BaseModel):
    """How ``edge-sdk run`` turns a source into results."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str | None = Field(default=None, description="Camera index, /dev/videoN, file, URL, folder, glob or GStreamer pipeline.")
    cameras: list[CameraConfig] | None = Field(
        default=None, description="Several cameras on one engine, each {id, source, fps?, stride?, threshold?, labels?, zones?, "
        "lines?, min_area?, loop?}; instead of 'source'.",
    )
    max_frames: int | None = Field(default=None, ge=1, description="Stop after this many processed frames.")
    fps: float | None = Field(
        default=None, gt=0,
        description="Live sources: process at most this many frames per second. Files: play back in real time at this rate.",
    )
    stride: int = Field(default=1, ge=1, description="Process every Nth frame the source delivers.")
    threshold: float = Field(default=0.25, ge=0, le=1, description="Minimum score of a reported detection.")
    labels: list[str] | None = Field(default=None, description="Report only these labels (allow-list).")
    zones: list[Polygon] | dict[str, ZoneSettings] | None = Field(default=None, description=ZONES_HELP)
    lines: dict[str, LineSettings] | None = Field(default=None, description=LINES_HELP)
    tracking: TrackingSettings | None = Field(
        default=None,
        description="Track objects (ids that persist across frames) and turn tracks into events; on by itself when a "
        "camera has named zones or lines, or MQTT publishes 'events'. {} turns it on with the defaults.",
    )
    min_area: float = Field(default=0.0, ge=0, le=1, description="Minimum box area as a share of the frame.")
    loop: bool = Field(default=False, description="Restart a video file or folder at its end.")
    jsonl: Path | None = Field(default=None, description="Append one JSON line per frame result to this file.")
    threads: int | None = Field(default=None, ge=1, description="Inference threads (default: the profile's).")
    device: str | None = Field(default=None, description="OpenVINO device override (CPU, GPU, NPU, AUTO).")
    cpu_fallback: bool = Field(default=False, description="Edge TPU bundles: run on the CPU when no Edge TPU is found; onnx bundles: on ONNX Runtime's CPU provider when the profile's GPU providers are missing.")
    retries: int | None = Field(default=None, ge=0, description="Source reconnect attempts before giving up (default: forever for live sources).")
    mqtt: MQTTSettings | None = Field(default=None, description="Publish results to an MQTT broker (see the README's MQTT section).")
    watchdog: WatchdogSettings = Field(default_factory=WatchdogSettings, description="Inference watchdog: hang detection, restarts, isolation.")
    http: LiveViewSettings | None = Field(
        default=None,
        description="Serve the live view, /metrics and /healthz: '[HOST]:PORT' alone (':8080' on every IPv4 interface, "
        "'127.0.0.1:8080' on this machine only, port 0 on a free port), or a mapping with listen, a token or password, "
        "and HTTPS. Without a token or password it listens on loopback only.",
    )

    @field_validator("source", mode="before")
    @classmethod
    def _source(cls, value):
        # YAML reads `source: 0` (the first camera) as an integer.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("http", mode="before")
    @classmethod
    def _http(cls, value):
        # `--http :8080` and `http: ":8080"` are the address alone; checked here so the error names 'http'.
        if isinstance(value, str):
            parse_address(value)
            return {"listen": value}
        return value

    _zones = field_validator("zones")(classmethod(lambda cls, v: _check_zones(v)))
    _parse = field_validator("zones", mode="before")(classmethod(lambda cls, v: parse_zones(v)))

    @field_validator("cameras")
    @classmethod
    def _cameras(cls, cameras):
        if cameras is not None and not cameras:
            raise ValueError("the list is empty; give at least one camera, or use 'source'")
        seen = set()
        for camera in cameras or []:
            if camera.id in seen:
                raise ValueError(f"camera id {camera.id!r} is given twice")
            seen.add(camera.id)
        return cameras

    @model_validator(mode="after")
    def _one_way_to_name_sources(self):
        if self.cameras is not None and self.source is not None:
            raise ValueError("'cameras' and 'source' (--source) are both given; list every camera under 'cameras', or give one 'source'")
        check_names(self.named_zones, self.lines)
        for camera in self.camera_list() if self.cameras is not None else []:
            try:  # a camera's own lines next to the zones it takes from the run (or the other way round)
                check_names(camera.named_zones, camera.lines)
            except ValueError as exc:
                raise ValueError(f"camera {camera.id!r}: {exc}") from None
        return self

    def tracking_settings(self) -> TrackingSettings | None:
        """The tracker's settings when this run tracks: asked for, or needed by named zones, lines or
        the 'events' publish mode; None when it does not."""
        if self.tracking is not None:
            return self.tracking
        events = self.mqtt is not None and self.mqtt.publish is PublishMode.EVENTS
        if events or any(c.named_zones or c.named_lines for c in self.camera_list()):
            return TrackingSettings()
        return None

    def camera_list(self, *, default_id: str = "main") -> list[CameraConfig]:
        """Every camera of the run with each field it leaves out taken from the run's; [] without a source."""
        shared = {k: getattr(self, k) for k in ("fps", "stride", "threshold", "labels", "zones", "lines", "min_area", "loop")}
        if self.cameras is None:
            return [] if self.source is None else [CameraConfig(id=default_id, source=self.source, **shared)]
        return [camera.model_copy(update={k: v for k, v in shared.items() if getattr(camera, k) is None}) for camera in self.cameras]


def field_error(exc: ValidationError, *, noun: str = "field") -> str:
    """The first error of a pydantic validation as one line: "field 'a.b': what is wrong"."""
    first = exc.errors()[0]
    message = "unknown field" if first["type"] == "extra_forbidden" else first["msg"].removeprefix("Value error, ")
    if not first["loc"]:
        return message  # a rule across fields: the message names them
    field = ".".join(str(p) for p in first["loc"])
    # Keys come from the user: a newline or control character would break the one-line error.
    field = "".join(c if c.isprintable() else repr(c)[1:-1] for c in field[:64]) + ("..." if len(field) > 64 else "")
    return f"{noun} '{field}': {message}"


def _describe(exc: ValidationError, source: str) -> str:
    return f"{source}: {field_error(exc)}"


# A run config is a few hundred bytes. Aliases cost nothing to parse but are expanded by validation:
# 26 KB of `zones: [*polygon, *polygon, ...]` took 2.3 s and 300 MB, and it grows quadratically.
MAX_CONFIG_BYTES = 256 * 1024
MAX_CONFIG_VALUES = 100_000


def _read_yaml(path: Path):
    """The YAML document in ``path``, refused before construction when it is too big or its aliases
    expand to more than MAX_CONFIG_VALUES values."""
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path} is {size:,} bytes; the limit is {MAX_CONFIG_BYTES:,}")
    loader = yaml.SafeLoader(path.read_text(encoding="utf-8"))
    try:
        node = loader.get_single_node()
        if node is not None and _expanded_size(node, {}) > MAX_CONFIG_VALUES:
            raise ConfigError(f"config file {path} holds more than {MAX_CONFIG_VALUES:,} values (aliases expanded)")
        twice = _repeated_key(node, set()) if node is not None else None
        if twice is not None:
            # PyYAML keeps the last of two equal keys: a second zone named like the first would replace it unseen.
            raise ConfigError(f"config file {path}: key {twice.value[:64]!r} is given twice in one mapping "
                              f"(line {twice.start_mark.line + 1})")
        return loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()


def _yaml_problem(exc: yaml.YAMLError) -> str:
    # PyYAML's first line is the context ("while parsing a flow sequence"); the problem says what is wrong.
    problem, mark = getattr(exc, "problem", None), getattr(exc, "problem_mark", None)
    if problem and mark is not None:
        return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
    return str(exc).strip().splitlines()[0]


def _repeated_key(node: yaml.Node, seen: set[int]) -> yaml.ScalarNode | None:
    """The first key that appears twice in one mapping of the document, or None."""
    if id(node) in seen:
        return None
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        keys: set[str] = set()
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in keys and key.value != "<<":
                    return key
                keys.add(key.value)
    children = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else (
        node.value if isinstance(node, yaml.SequenceNode) else [])
    for child in children:
        found = _repeated_key(child, seen)
        if found is not None:
            return found
    return None


def _expanded_size(node: yaml.Node, seen: dict[int, int]) -> int:
    """How many values ``node`` stands for once every alias is expanded (each shared node counted
    once per reference, computed once)."""
    if id(node) in seen:
        return seen[id(node)]
    seen[id(node)] = 1  # a node that contains itself counts once
    if isinstance(node, yaml.SequenceNode):
        total = 1 + sum(_expanded_size(child, seen) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        total = 1 + sum(_expanded_size(key, seen) + _expanded_size(value, seen) for key, value in node.value)
    else:
        total = 1
    seen[id(node)] = total
    return total


def load_config(path: str | Path | None, **overrides) -> RunConfig:
    """The YAML file's settings (if any) with every override that is not None applied on top."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        try:
            loaded = _read_yaml(path)
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path} does not exist") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path} cannot be read: {exc}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {_yaml_problem(exc)}") from exc
        except RecursionError:  # PyYAML composes nested collections recursively
            raise ConfigError(f"config file {path} is nested too deeply") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path}: expected a mapping of settings")
        data = dict(loaded or {})
    isolate = overrides.pop("isolate_engine", None)
    if isolate is not None:
        section = data.get("watchdog")
        data["watchdog"] = {**(section if isinstance(section, dict) else {}), "isolate": isolate}
    mqtt = {k: overrides.pop(k) for k in ("broker", "device_id") if overrides.get(k) is not None}
    overrides.pop("broker", None), overrides.pop("device_id", None)
    listen = overrides.pop("http", None)
    if isinstance(listen, str) and isinstance(data.get("http"), dict):
        data["http"] = {**data["http"], "listen": listen}  # --http moves the file's live view, keeping its credential
    elif listen is not None:
        data["http"] = listen
    data.update({k: v for k, v in overrides.items() if v is not None})
    if mqtt:
        section = data.get("mqtt")
        data["mqtt"] = {**(section if isinstance(section, dict) else {}), **mqtt}
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, f"config file {path}" if path else "options")) from exc
