"""Home Assistant discovery: documented structure, and every template rendered on real payloads."""

from __future__ import annotations

import json

import jinja2.sandbox
import pytest

from edge_sdk.mqtt import payloads
from edge_sdk.stats import StatsSnapshot
from edge_sdk.watchdog import Health
from edge_sdk.mqtt.homeassistant import discovery_messages, object_id, remove_messages
from edge_sdk.mqtt.settings import MQTTSettings
from edge_sdk.results import BBox, Detection, FrameResult
from edge_sdk.tracking.values import Counts

SETTINGS = MQTTSettings(broker="mqtt://h", device_id="porch.cam", home_assistant=True)
LABELS = ["person", "traffic light", "traffic_light"]


def render(template: str, payload: dict) -> str:
    # Home Assistant renders value templates with Jinja2 in an immutable sandbox and exposes the parsed JSON as value_json.
    return jinja2.sandbox.ImmutableSandboxedEnvironment().from_string(template).render(value_json=payload, value=json.dumps(payload)).strip()


def detections_payload(labels: list[str]) -> dict:
    result = FrameResult(7, 1.0, (640, 480), tuple(Detection(i, label, 0.8, BBox(0.1, 0.1, 0.5, 0.5)) for i, label in enumerate(labels)))
    return {"schema": payloads.DETECTIONS, "device_id": "porch.cam", "seq": 1, "ts": 1.0, **payloads.detections_body(result)}


def test_discovery_configs_follow_the_documented_format():
    messages = discovery_messages(SETTINGS, model_name="ssd-shapes", labels=LABELS, cameras=["main"])
    assert len(messages) == 2 + len(LABELS)
    ids = set()
    for topic, config in messages:
        prefix, component, node, name, tail = topic.split("/")
        assert (prefix, node, tail) == ("homeassistant", "porch_cam", "config")
        assert component in ("sensor", "binary_sensor") and object_id(name) == name
        assert config["state_topic"].startswith("edge/porch.cam/")
        assert config["device"]["identifiers"] == ["edge-sdk-porch_cam"] and config["device"]["model"] == "ssd-shapes"
        assert config["availability"][0]["topic"] == "edge/porch.cam/status"
        # Home Assistant 2025.10+ reads default_entity_id; older versions read object_id.
        assert config["default_entity_id"] == f"{component}.porch_cam_{name}" == f"{component}.{config['object_id']}"
        ids.add(config["unique_id"])
    assert len(ids) == len(messages)  # 'traffic light' and 'traffic_light' stay two entities
    assert [t for t, _ in remove_messages(SETTINGS, labels=LABELS, cameras=["main"])] == [t for t, _ in messages]


def test_templates_give_the_right_states_on_real_payloads():
    configs = {topic.split("/")[3]: config for topic, config in discovery_messages(SETTINGS, model_name="m", labels=LABELS, cameras=["main"])}
    seen = detections_payload(["traffic light", "dog"])
    assert render(configs["main_seen_traffic_light"]["value_template"], seen) == "ON"
    assert render(configs["main_seen_traffic_light_2"]["value_template"], seen) == "OFF"
    assert render(configs["main_seen_person"]["value_template"], seen) == "OFF"
    assert render(configs["main_seen_person"]["value_template"], detections_payload([])) == "OFF"
    assert render(configs["main_last_detection"]["value_template"], seen) == "traffic light"
    assert render(configs["main_last_detection"]["value_template"], detections_payload([])) == "none"
    camera = payloads.camera_status("main", "running", None, StatsSnapshot(0, 10, 0, 0, 0, 3, fps=12.5))
    metrics = payloads.metrics_body(payloads.run_status([camera], Health()), None, rate_limited=0, rss_mb=80.0, cpu_temp_c=None)
    assert render(configs["fps"]["value_template"], metrics) == "12.5"
    status = {"schema": payloads.STATUS, "device_id": "porch.cam", "state": "online", "ts": 1.0}
    availability = configs["fps"]["availability"][0]
    assert render(availability["value_template"], status) == availability["payload_available"]


@pytest.mark.parametrize(("label", "expected"), [("person", "person"), ("traffic light", "traffic_light"), ("a/b#c+", "a_b_c"), ("+", "label")])
def test_object_ids_are_sanitised(label, expected):
    assert object_id(label) == expected


REGIONS = {"main": (["driveway", "front-door"], ["gate"])}


def test_zone_and_line_entities_read_the_retained_counts():
    messages = discovery_messages(SETTINGS, model_name="m", labels=["person"], cameras=["main", "back"], regions=REGIONS)
    plain = discovery_messages(SETTINGS, model_name="m", labels=["person"], cameras=["main", "back"])
    before = [t for t, _ in plain]
    added = {topic: config for topic, config in messages if topic not in before}
    assert [t for t, _ in messages if t in before] == before and len(messages) == len(before) + len(added)
    assert sorted(added) == sorted(f"homeassistant/{c}/porch_cam/main_{n}/config" for c, n in [
        ("sensor", "driveway_count"), ("binary_sensor", "driveway_occupied"), ("sensor", "front-door_count"),
        ("binary_sensor", "front-door_occupied"), ("sensor", "gate_in"), ("sensor", "gate_out")])
    for topic, config in added.items():
        component, name = topic.split("/")[1], topic.split("/")[3]
        assert object_id(name) == name and config["unique_id"] == f"edge-sdk-porch_cam-{name}"
        assert config["default_entity_id"] == f"{component}.porch_cam_{name}" == f"{component}.{config['object_id']}"
        assert config["state_topic"] == "edge/porch.cam/main/counts"
        assert config["availability"][0]["topic"] == "edge/porch.cam/status" and "off_delay" not in config
        if component == "binary_sensor":
            assert config["device_class"] == "occupancy"
        else:
            assert config["state_class"] == ("measurement" if name.endswith("_count") else "total_increasing")
    assert len({c["unique_id"] for _, c in messages}) == len(messages)
    assert [t for t, _ in remove_messages(SETTINGS, labels=["person"], cameras=["main", "back"], regions=REGIONS)] == [t for t, _ in messages]
    custom = MQTTSettings(broker="mqtt://h", device_id="porch.cam", prefix="site/{device_id}/")
    topics = {c["state_topic"] for _, c in discovery_messages(custom, model_name="m", labels=[], cameras=["main"], regions=REGIONS)}
    assert "site/porch.cam/main/counts" in topics


def test_zone_and_line_templates_give_the_counts():
    configs = {topic.split("/")[3]: config
               for topic, config in discovery_messages(SETTINGS, model_name="m", labels=[], cameras=["main"], regions=REGIONS)}
    counts = Counts(zones={"driveway": {"person": 2, "car": 1}, "front-door": {}},
                    lines={"gate": {"in": {"person": 5, "car": 2}, "out": {"person": 1}}}).to_json()
    payload = json.loads(json.dumps(counts))  # as it arrives: JSON
    assert render(configs["main_driveway_count"]["value_template"], payload) == "3"
    assert render(configs["main_driveway_occupied"]["value_template"], payload) == "ON"
    assert render(configs["main_front-door_count"]["value_template"], payload) == "0"
    assert render(configs["main_front-door_occupied"]["value_template"], payload) == "OFF"
    assert render(configs["main_gate_in"]["value_template"], payload) == "7"
    assert render(configs["main_gate_out"]["value_template"], payload) == "1"
    empty = Counts().to_json()  # a counts message from before the zone or line was configured
    assert [render(configs[n]["value_template"], empty) for n in ("main_driveway_count", "main_driveway_occupied", "main_gate_in")] == ["0", "OFF", "0"]
