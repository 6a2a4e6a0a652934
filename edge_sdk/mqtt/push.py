"""``edge-sdk push``: send a signed bundle to one device over MQTT and wait for its answer."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

from edge_sdk.errors import PublishError, UpdateError
from edge_sdk.mqtt import topics
from edge_sdk.mqtt.settings import MQTTSettings


def connect(settings: MQTTSettings, *, client_id: str):
    """A connected paho MQTT 5 client for a fleet tool (not a device), or PublishError in one line."""
    import ssl

    import paho.mqtt.client as mqtt

    from edge_sdk.mqtt.client import secure

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, transport=settings.transport)
    secure(client, settings, credentials=settings.credentials())
    connected = threading.Event()
    refused: list = []

    def on_connect(c, userdata, flags, reason, props):
        if reason.is_failure:
            refused.append(reason)
        connected.set()

    client.on_connect = on_connect
    try:
        client.connect(settings.host, settings.port, keepalive=settings.keepalive)
    except (OSError, ssl.SSLError) as exc:
        raise PublishError(f"cannot reach broker {settings.redacted_broker()}: {exc.strerror or exc}") from None
    client.loop_start()
    if not connected.wait(10) or refused:
        client.loop_stop()
        why = f"refused: {refused[0]}" if refused else "no CONNACK within 10 s"
        raise PublishError(f"broker {settings.redacted_broker()} {why}")
    return client


def push_bundle(folder: Path, *, settings: MQTTSettings, timeout: float = 120.0) -> dict:
    """Publish ``folder`` (a signed bundle) to ``settings.device_id``'s ``cmd/model``; return its answer."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from edge_sdk.ota.archive import pack_bundle
    from edge_sdk.ota.keys import SIGNATURE_NAME

    folder = Path(folder)
    if not (folder / SIGNATURE_NAME).is_file():
        raise UpdateError(f"{folder} is not signed: run 'edge-sdk sign {folder} --key KEY' first")
    archive = pack_bundle(folder)
    device = settings.device_id
    reply = topics.topic(device, f"cmd/model/result/{uuid.uuid4().hex[:12]}", prefix=settings.prefix)
    correlation = uuid.uuid4().bytes
    answers: list[dict] = []
    status: list[str] = []
    ready = threading.Event()

    def on_message(client, userdata, message):
        if message.topic == reply and getattr(message.properties, "CorrelationData", None) == correlation:
            try:
                answers.append(json.loads(message.payload))
            except ValueError:
                answers.append({"ok": False, "error": "the device's answer is not JSON"})
        elif message.topic.endswith("/status"):
            try:
                status.append(json.loads(message.payload).get("state", "?"))
            except (ValueError, AttributeError):
                pass

    client = connect(settings, client_id=f"edge-sdk-push-{uuid.uuid4().hex[:8]}")
    try:
        client.on_message = on_message
        client.on_subscribe = lambda *a: ready.set()
        client.subscribe([(reply, 1), (topics.topic(device, topics.STATUS, prefix=settings.prefix), 1)])
        if not ready.wait(10):
            raise PublishError("the broker did not confirm the subscription for the answer")
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = reply
        props.CorrelationData = correlation
        info = client.publish(topics.command_topic(device, "model", prefix=settings.prefix), archive, qos=1, properties=props)
        info.wait_for_publish(timeout=30)
        deadline = time.monotonic() + timeout
        while not answers and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        client.loop_stop()
        client.disconnect()
    if not answers:
        state = status[-1] if status else "unknown (no retained status)"
        raise PublishError(f"no answer from device {device} within {timeout:g} s — is it online? its status is {state}")
    return answers[0]
