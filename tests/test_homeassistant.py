"""Home Assistant discovery: documented structure, and every template rendered on real payloads."""

from __future__ import annotations

import json

import jinja2
import pytest

from edge_sdk.mqtt import payloads
from edge_sdk.stats import StatsSnapshot
from edge_sdk.watchdog import Health
from edge_sdk.mqtt.homeassistant import discovery_messages, object_id, remove_messages
from edge_sdk.mqtt.settings import MQTTSettings
from edge_sdk.results import BBox, Detection, FrameResult

SETTINGS = MQTTSettings(broker="mqtt://h", device_id="porch.cam", home_assistant=True)
LABELS = ["person", "traffic light", "traffic_light"]


def render(template: str, payload: dict) -> str:
    # Home Assistant renders value templates with Jinja2 and exposes the parsed JSON as value_json.
    return jinja2.Environment().from_string(template).render(value_json=payload, value=json.dumps(payload)).strip()


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
