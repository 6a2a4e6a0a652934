"""Every topic the runtime uses, built by one function from one prefix."""

from __future__ import annotations

import re

from edge_sdk.errors import ConfigError

DEFAULT_PREFIX = "edge/{device_id}/"

# Names a device publishes under its prefix; commands arrive on cmd/{name} and answer on cmd/{name}/result.
STATUS, INFO, DETECTIONS, METRICS, SNAPSHOT, ALERT = "status", "info", "detections", "metrics", "snapshot", "alert"
EVENTS, COUNTS = "events", "counts"  # per camera: track, zone and line events; retained counts

# A wildcard or separator in a device id would widen every ACL pattern written with %c or %u
# (edge/%c/# for "a/b" covers another device's tree); control characters break log lines and URLs.
_BAD_ID = re.compile(r"[+#/\x00-\x1f\x7f]")


def check_device_id(device_id: str) -> str:
    """``device_id`` unchanged, or a ConfigError naming what makes it unsafe in a topic."""
    if not isinstance(device_id, str) or not device_id.strip():
        raise ConfigError("device id must be a non-empty string")
    bad = _BAD_ID.search(device_id)
    if bad:
        raise ConfigError(f"device id {device_id!r} contains {bad.group()!r}: '+', '#', '/' and control characters are not allowed")
    if device_id.startswith("$") or len(device_id.encode()) > 128:
        raise ConfigError(f"device id {device_id!r} must not start with '$' and must be at most 128 bytes")
    return device_id


def prefix_for(device_id: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The topic prefix of one device, always ending in '/'."""
    check_device_id(device_id)
    if "+" in prefix or "#" in prefix:
        raise ConfigError(f"topic prefix {prefix!r} must not contain MQTT wildcards")
    built = prefix.replace("{device_id}", device_id)
    return built if built.endswith("/") else built + "/"


def topic(device_id: str, name: str, *, prefix: str = DEFAULT_PREFIX) -> str:
    """The full topic of ``name`` ('status', 'detections', 'cmd/config', 'cmd/config/result', ...)."""
    return prefix_for(device_id, prefix) + name


def camera_name(camera: str, name: str) -> str:
    """The name of a message about one camera, under the device's prefix: ``{camera}/{name}``."""
    return f"{camera}/{name}"


def command_topic(device_id: str, command: str, *, prefix: str = DEFAULT_PREFIX) -> str:
    return topic(device_id, f"cmd/{command}", prefix=prefix)


def result_topic(device_id: str, command: str, *, prefix: str = DEFAULT_PREFIX) -> str:
    return topic(device_id, f"cmd/{command}/result", prefix=prefix)


def command_name(full_topic: str, device_id: str, *, prefix: str = DEFAULT_PREFIX) -> str | None:
    """The command in a topic under this device's ``cmd/``, or None for anything else."""
    head = topic(device_id, "cmd/", prefix=prefix)
    if not full_topic.startswith(head):
        return None
    rest = full_topic[len(head):]
    return rest if rest and "/" not in rest else None
