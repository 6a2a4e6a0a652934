"""MQTT settings: the ``mqtt:`` section of a run config, or ``--broker``/``--device-id`` flags."""

from __future__ import annotations

import enum
import os
import socket
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from edge_sdk.errors import ConfigError
from edge_sdk.masks import DEFAULT_VERTICES, MaskFormat
from edge_sdk.mqtt.topics import DEFAULT_PREFIX, check_device_id

PASSWORD_ENV = "EDGE_SDK_MQTT_PASSWORD"
_SCHEMES = {"mqtt": (1883, False, "tcp"), "mqtts": (8883, True, "tcp"), "ws": (80, False, "websockets"), "wss": (443, True, "websockets")}


class PublishMode(str, enum.Enum):
    EVERY_FRAME = "every_frame"  # one message per processed frame, empty or not
    ON_DETECTION = "on_detection"  # frames with at least one detection
    ON_CHANGE = "on_change"  # when the set of labels seen changes (an empty set included)
    EVENTS = "events"  # no detections messages: track, zone and line events, and counts, only


class Protocol(str, enum.Enum):
    MQTT5 = "5"
    MQTT311 = "3.1.1"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TLSSettings(_Section):
    ca_file: Path | None = Field(default=None, description="CA certificate(s) that signed the broker's certificate (default: the system's).")
    cert_file: Path | None = Field(default=None, description="Client certificate, for brokers that require one.")
    key_file: Path | None = Field(default=None, description="Private key of the client certificate.")
    insecure: bool = Field(default=False, description="Skip server certificate and host name checks. Testing only; warns at every start.")

    @model_validator(mode="after")
    def _pair(self):
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class QoSSettings(_Section):
    """QoS per topic, 0 or 1.

    Not 2: when a broker's ACL refuses a QoS 2 publish, Mosquitto says so in the PUBREC, but
    paho 2.2 ignores that reason and reports the PUBCOMP's success, so the outbox would delete a
    message nobody received. At QoS 1 the refusal arrives in the PUBACK and is acted on.
    """

    detections: int = Field(default=1, ge=0, le=1, description="QoS of detection messages.")
    events: int = Field(default=1, ge=0, le=1, description="QoS of track, zone and line events (1: kept in the outbox through outages).")
    metrics: int = Field(default=0, ge=0, le=1, description="QoS of metrics messages.")
    status: int = Field(default=1, ge=0, le=1, description="QoS of the retained status and info messages.")
    snapshot: int = Field(default=0, ge=0, le=1, description="QoS of snapshot images.")
    results: int = Field(default=1, ge=0, le=1, description="QoS of command results.")


class OutboxSettings(_Section):
    path: Path | None = Field(default=None, description="SQLite file (default: ~/.local/state/edge-sdk/<device id>/outbox.sqlite3).")
    max_messages: int = Field(default=100_000, ge=1, description="Most unacknowledged messages kept; the oldest are dropped beyond it.")
    max_bytes: int = Field(default=64 * 2**20, ge=1024, description="Most payload bytes kept; the oldest are dropped beyond it.")
    ttl_s: float | None = Field(default=None, gt=0, description="Drop messages older than this many seconds instead of sending them.")
    inflight: int = Field(default=64, ge=1, le=65535, description="Most messages sent and not yet acknowledged (the broker's Receive Maximum caps it too).")
    fsync: bool = Field(default=False, description="fsync every message: survives a power cut too, at a cost of one disk flush per message.")


class MQTTSettings(_Section):
    """Where and how detections are published."""

    broker: str = Field(description="mqtt://host[:port], mqtts://, ws:// or wss://; user:password@ in the URL is accepted but a file or the environment is safer.")
    device_id: str = Field(default_factory=lambda: _default_device_id(), description="This device's id; '+', '#', '/' and control characters are refused.")
    prefix: str = Field(default=DEFAULT_PREFIX, description="Topic prefix; {device_id} is replaced.")
    protocol: Protocol = Field(default=Protocol.MQTT5, description="MQTT protocol version: 5 (default) or 3.1.1.")
    client_id: str | None = Field(default=None, description="MQTT client id (default: edge-sdk-<device id>).")
    keepalive: int = Field(default=30, ge=5, le=65535, description="Keep-alive interval in seconds; a dead link is noticed within 1.5 x this.")
    username: str | None = Field(default=None, description="Broker user name.")
    password: SecretStr | None = Field(default=None, description="Broker password (prefer password_file or the environment).")
    password_file: Path | None = Field(default=None, description="File whose first line is the broker password.")
    password_env: str = Field(default=PASSWORD_ENV, description="Environment variable read for the password when none is given.")
    tls: TLSSettings | None = Field(default=None, description="TLS options; mqtts:// and wss:// turn TLS on with the system CAs.")
    qos: QoSSettings = Field(default_factory=QoSSettings, description="QoS per topic.")
    publish: PublishMode = Field(default=PublishMode.ON_DETECTION, description="Which frames produce a detections message.")
    max_rate: float | None = Field(default=None, gt=0, description="Most detections messages per second (others are skipped and counted).")
    masks: MaskFormat = Field(
        default=MaskFormat.POLYGON,
        description="How instance and semantic masks travel in detections messages: 'polygon' (simplified outlines, 0-1), "
        "'rle' (COCO run-length encoding, exact) or 'summary' (no masks; a semantic frame's class areas only).",
    )
    mask_vertices: int = Field(
        default=DEFAULT_VERTICES, ge=8, le=10_000,
        description="Most polygon vertices per mask, all its parts together; fewer are sent when a message would pass 128 KB.",
    )
    metrics_interval_s: float = Field(default=10.0, gt=0, description="Seconds between metrics messages.")
    counts_interval_s: float = Field(
        default=5.0, ge=0,
        description="A tracking camera's retained counts go out at once when a zone's occupancy changes; when only line "
        "totals change, at most this often (each crossing is an event of its own, never held back); 0: at every change.",
    )
    snapshot_interval_s: float | None = Field(default=None, gt=0, description="Publish an annotated JPEG at most this often (default: never, unless asked by command).")
    outbox: OutboxSettings = Field(default_factory=OutboxSettings, description="The durable outbox for QoS >= 1 messages.")
    reconnect_min_s: float = Field(default=0.5, gt=0, description="First reconnect delay.")
    reconnect_max_s: float = Field(default=30.0, gt=0, description="Largest reconnect delay (jittered).")
    home_assistant: bool = Field(default=False, description="Publish Home Assistant MQTT discovery messages.")
    discovery_prefix: str = Field(default="homeassistant", description="Home Assistant's discovery prefix.")
    watch_labels: list[str] | None = Field(default=None, description="Labels that get a Home Assistant binary sensor (default: the run's label allow-list, else none).")
    update_keys: list[Path] = Field(default_factory=list, description="Public keys (edge-sdk keys generate) that may sign model updates; none = updates refused.")
    update_ca_file: Path | None = Field(default=None, description="CA certificate(s) for https:// model URLs (default: the system's).")
    update_max_bytes: int = Field(default=32 * 2**20, ge=1024, description="Largest model update archive accepted.")
    command_max_bytes: int = Field(default=64 * 1024, ge=256, description="Largest command payload accepted (model updates excepted).")
    bundle_store: Path | None = Field(default=None, description="Folder holding installed model updates (default: next to the outbox).")

    @field_validator("device_id")
    @classmethod
    def _device(cls, value: str) -> str:
        try:
            return check_device_id(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("broker")
    @classmethod
    def _broker(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in _SCHEMES:
            raise ValueError(f"broker URL {_redact(value)!r} must start with mqtt://, mqtts://, ws:// or wss://")
        if not parts.hostname:
            raise ValueError(f"broker URL {_redact(value)!r} has no host")
        try:
            parts.port
        except ValueError:
            raise ValueError(f"broker URL {_redact(value)!r} has a bad port") from None
        return value

    @model_validator(mode="after")
    def _rates(self):
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be at least reconnect_min_s")
        return self

    # -- derived values, no I/O --------------------------------------------------------------

    @property
    def host(self) -> str:
        return urlsplit(self.broker).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.broker)
        return parts.port or _SCHEMES[parts.scheme][0]

    @property
    def transport(self) -> str:
        return _SCHEMES[urlsplit(self.broker).scheme][2]

    @property
    def websocket_path(self) -> str:
        return urlsplit(self.broker).path or "/mqtt"

    @property
    def uses_tls(self) -> bool:
        return _SCHEMES[urlsplit(self.broker).scheme][1] or self.tls is not None

    @property
    def effective_client_id(self) -> str:
        return self.client_id or f"edge-sdk-{self.device_id}"

    def default_state_dir(self) -> Path:
        base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
        return base / "edge-sdk" / self.device_id

    @property
    def outbox_path(self) -> Path:
        return self.outbox.path or self.default_state_dir() / "outbox.sqlite3"

    @property
    def ledger_path(self) -> Path:
        """The track ledger (open tracks, line totals) beside the outbox, one per outbox."""
        return self.outbox_path.with_name(f"{self.outbox_path.stem}-tracks.json")

    @property
    def store_path(self) -> Path:
        return self.bundle_store or self.outbox_path.parent / "bundles"

    def credentials(self) -> tuple[str | None, str | None]:
        """(username, password) from the URL, the options, the password file or the environment.

        Reads the password file: call when connecting, not while validating.
        """
        parts = urlsplit(self.broker)
        username = self.username or (unquote(parts.username) if parts.username else None)
        if self.password is not None:
            return username, self.password.get_secret_value()
        if parts.password:
            return username, unquote(parts.password)
        if self.password_file is not None:
            try:
                # One line is read, at most 4 KB: the file may be /dev/zero or a binary key by mistake.
                with open(self.password_file, "rb") as handle:
                    first = handle.readline(4096).decode("utf-8").rstrip("\r\n")
            except OSError as exc:
                raise ConfigError(f"password file {self.password_file} cannot be read: {exc.strerror or exc}") from exc
            except UnicodeDecodeError:
                raise ConfigError(f"password file {self.password_file} is not UTF-8 text") from None
            return username, first
        env = os.environ.get(self.password_env)
        return username, env

    def redacted_broker(self) -> str:
        return _redact(self.broker)

    def __repr_args__(self):
        # A password in the broker URL must not reach a log line or a traceback through repr().
        for name, value in super().__repr_args__():
            yield name, (self.redacted_broker() if name == "broker" else value)


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=f"{parts.username}:***@{netloc}").geturl()


def _default_device_id() -> str:
    # Host names are usually safe ids; fall back to a neutral one when they are not.
    name = socket.gethostname().split(".")[0] or "edge-device"
    try:
        return check_device_id(name)
    except ConfigError:
        print(f"edge-sdk: host name {name!r} is not a usable device id; using 'edge-device'", file=sys.stderr)
        return "edge-device"
