"""Home Assistant MQTT discovery (opt-in): the device, its fps and last-detection sensors, one
binary sensor per watched label, and for a tracking camera a count and an occupancy sensor per
zone and an in and an out counter per line, built from the topics the runtime already publishes.

Discovery configs go to ``<discovery_prefix>/<component>/<node_id>/<object_id>/config`` (retained);
an empty retained payload on the same topic removes the entity. The binary sensors read the
``detections`` topic and fall back to OFF after ``off_delay`` seconds, because frames without
detections are not published by default. The zone and line entities read the retained ``counts``
topic, which always holds the current state, so they need no ``off_delay``.
"""

from __future__ import annotations

import re

from edge_sdk import __version__
from edge_sdk.mqtt import topics
from edge_sdk.mqtt.settings import MQTTSettings

OFF_DELAY_S = 5
_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]+")


def object_id(text: str) -> str:
    """A discovery object id: letters, digits, '_' and '-' only ('traffic light' -> 'traffic_light')."""
    return _UNSAFE.sub("_", text).strip("_") or "label"


def _config_topic(settings: MQTTSettings, component: str, name: str) -> str:
    return f"{settings.discovery_prefix}/{component}/{object_id(settings.device_id)}/{name}/config"


Regions = dict[str, tuple[list[str], list[str]]]  # camera -> (zone names, line names)
COUNTS = "counts"


def _entities(settings: MQTTSettings, labels: list[str], cameras: list[str], regions: Regions | None = None) -> list[tuple[str, str, dict]]:
    """(component, object id, the entity's own fields) for every entity the device announces:
    the device's fps, for each camera its last detection and one binary sensor per label, and the
    zone and line entities of each camera in ``regions``."""
    def topic(name: str) -> str:
        return topics.topic(settings.device_id, name, prefix=settings.prefix)

    entities = [
        ("sensor", "fps", {
            "name": "FPS", "state_topic": topic(topics.METRICS), "value_template": "{{ value_json.fps }}",
            "unit_of_measurement": "fps", "state_class": "measurement", "icon": "mdi:speedometer",
        }),
    ]
    for camera in cameras:
        detections = topic(topics.camera_name(camera, topics.DETECTIONS))
        entities.append(("sensor", f"{camera}_last_detection", {
            "name": f"{camera} last detection", "state_topic": detections, "icon": "mdi:eye",
            "value_template": "{{ value_json.detections[0].label if value_json.detections else 'none' }}",
        }))
        used: set[str] = set()
        for label in labels:
            base = ident = object_id(label)
            count = 1
            while ident in used:  # "a b" and "a_b" must not share an entity
                count += 1
                ident = f"{base}_{count}"
            used.add(ident)
            entities.append(("binary_sensor", f"{camera}_seen_{ident}", {
                "name": f"{camera} {label} detected", "state_topic": detections, "payload_on": "ON", "payload_off": "OFF",
                "value_template": "{{ 'ON' if value_json.detections | selectattr('label', 'equalto', %r) | list | length > 0 else 'OFF' }}" % label,
                "off_delay": OFF_DELAY_S, "device_class": "occupancy",
            }))
        zones, lines = (regions or {}).get(camera, ([], []))
        entities.extend(_region_entities(topic(topics.camera_name(camera, COUNTS)), camera, zones, lines))
    return entities


def _region_entities(counts: str, camera: str, zones: list[str], lines: list[str]) -> list[tuple[str, str, dict]]:
    """A count sensor and an occupancy binary sensor per zone, an in and an out counter per line,
    all read from the retained ``counts`` message (Counts.to_json())."""
    entities = []
    for zone in zones:
        # .get keeps a counts message without this zone (a config that changed) from a template error.
        total = "value_json.zones.get(%r, {}).get('total', 0)" % zone
        ident = f"{camera}_{object_id(zone)}"
        entities.append(("sensor", f"{ident}_count", {
            "name": f"{camera} {zone} count", "state_topic": counts, "value_template": "{{ %s }}" % total,
            "state_class": "measurement", "unit_of_measurement": "objects", "icon": "mdi:account-group",
        }))
        entities.append(("binary_sensor", f"{ident}_occupied", {
            "name": f"{camera} {zone} occupied", "state_topic": counts, "payload_on": "ON", "payload_off": "OFF",
            "value_template": "{{ 'ON' if %s > 0 else 'OFF' }}" % total, "device_class": "occupancy",
        }))
    for line in lines:
        for direction in ("in", "out"):
            entities.append(("sensor", f"{camera}_{object_id(line)}_{direction}", {
                "name": f"{camera} {line} {direction}", "state_topic": counts,
                "value_template": "{{ value_json.lines.get(%r, {}).get(%r, 0) }}" % (line, direction),
                "state_class": "total_increasing", "unit_of_measurement": "objects",
                "icon": "mdi:location-enter" if direction == "in" else "mdi:location-exit",
            }))
    return entities


def discovery_messages(settings: MQTTSettings, *, model_name: str, labels: list[str], cameras: list[str],
                       regions: Regions | None = None) -> list[tuple[str, dict]]:
    """(config topic, config payload) for each entity, ready to publish retained.

    ``regions`` maps a tracking camera to its (zone names, line names)."""
    node = object_id(settings.device_id)
    device = {
        "identifiers": [f"edge-sdk-{node}"], "name": settings.device_id, "manufacturer": "edge-sdk",
        "model": model_name, "sw_version": __version__,
    }
    availability = [{
        "topic": topics.topic(settings.device_id, topics.STATUS, prefix=settings.prefix),
        "value_template": "{{ value_json.state }}", "payload_available": "online", "payload_not_available": "offline",
    }]
    messages = []
    for component, name, fields in _entities(settings, labels, cameras, regions):
        # default_entity_id replaced object_id in Home Assistant 2025.10 (object_id stops working
        # in 2026.4); both are sent so older installations name the entities the same way.
        payload = {**fields, "unique_id": f"edge-sdk-{node}-{name}", "default_entity_id": f"{component}.{node}_{name}",
                   "object_id": f"{node}_{name}", "device": device, "availability": availability}
        messages.append((_config_topic(settings, component, name), payload))
    return messages


def remove_messages(settings: MQTTSettings, *, labels: list[str], cameras: list[str],
                    regions: Regions | None = None) -> list[tuple[str, bytes]]:
    """The empty retained payloads that delete the entities ``discovery_messages`` announced."""
    return [(_config_topic(settings, component, name), b"") for component, name, _ in _entities(settings, labels, cameras, regions)]
