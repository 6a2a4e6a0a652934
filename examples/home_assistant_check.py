"""Check a device's Home Assistant MQTT discovery, without Home Assistant: what HA would create, and what is wrong.

Runs on: any machine that reaches the broker; needs paho-mqtt 2, and Jinja2 to show live states
(Home Assistant renders the same templates with Jinja2):

    pip install "paho-mqtt>=2,<3" jinja2

Run, with the device running `edge-sdk run ... --config run.yaml` (home_assistant: true):

    python home_assistant_check.py --broker mqtt://homeassistant.local --device-id porch
    python home_assistant_check.py --broker mqtt://homeassistant.local --device-id porch --label person --live 15

It reads the retained discovery configs (homeassistant/<component>/<node>/<object>/config),
checks each as Home Assistant's MQTT integration would (topic shape, unique ids, device block,
state and availability topics, templates), and lists the entities HA would create. --label
checks that a watched label got its binary sensor; --live waits for the device's messages and
shows each entity's state as HA would render it. Exit code 0: all good; 1: problems (listed);
2: bad options or no broker. See home_assistant.md for the whole walk-through.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
import time
import uuid
from typing import NoReturn
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt

COMPONENTS = {"sensor", "binary_sensor", "button", "camera", "image", "switch", "text", "select", "number", "event"}
STATE_CLASSES = {"measurement", "total", "total_increasing"}
SAFE_ID = re.compile(r"^[a-zA-Z0-9_-]+$")  # what HA accepts for node and object ids in discovery topics


class Parser(argparse.ArgumentParser):
    """argparse whose mistakes are one line on stderr and exit code 2, like the edge-sdk CLI."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


class BadInput(Exception):
    """Bad options or an unreachable broker: one line, exit code 2."""


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def slug(text: str) -> str:
    """Home Assistant's entity-id slug: lower case, runs of anything else become one '_'."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "unknown"


class Listener:
    """A throw-away MQTT 5 client that keeps the last message per topic."""

    def __init__(self, args: argparse.Namespace) -> None:
        url = urlsplit(args.broker)
        if url.scheme not in ("mqtt", "mqtts") or not url.hostname:
            raise BadInput(f"--broker {args.broker!r} must look like mqtt://host[:port] or mqtts://host[:port]")
        self.messages: dict[str, mqtt.MQTTMessage] = {}
        self.last_at = 0.0
        self.lock = threading.Lock()
        self.acked = threading.Event()
        self.refused: str | None = None
        # A clean, random session: the retained messages are all this needs, and it leaves no session behind.
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"ha-check-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5
        )
        if url.scheme == "mqtts":
            try:
                self.client.tls_set(ca_certs=args.ca_file)
            except (OSError, ValueError) as exc:
                raise BadInput(f"--ca-file {args.ca_file} cannot be used: {exc}") from exc
        username = args.username or (unquote(url.username) if url.username else None)
        if username is not None:
            password = unquote(url.password) if url.password else os.environ.get("MQTT_PASSWORD")
            self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self.acked.set()
        try:
            self.client.connect(url.hostname, url.port or (8883 if url.scheme == "mqtts" else 1883))
        except (OSError, ValueError) as exc:
            raise BadInput(f"cannot connect to {url.hostname}:{url.port or ''}: {exc}") from exc
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        if reason.is_failure:
            self.refused = str(reason)
            self.acked.set()

    def _on_message(self, client, userdata, message) -> None:
        with self.lock:
            self.messages[message.topic] = message
            self.last_at = time.monotonic()

    def subscribe(self, patterns: list[str], timeout: float) -> None:
        self.acked.clear()
        self.client.subscribe([(p, 1) for p in patterns])
        answered = self.acked.wait(timeout)
        if self.refused:
            raise BadInput(f"the broker refused the connection: {self.refused}")
        if not answered:
            raise BadInput("no answer from the broker")

    def wait_quiet(self, timeout: float) -> None:
        """Until half a second without a message once one came (retained ones come in a burst), or the timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if self.last_at and time.monotonic() - self.last_at > 0.5:
                    return
            time.sleep(0.05)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def parse_topic(topic: str, prefix: str) -> tuple[str, str | None, str] | None:
    """(component, node id or None, object id) of a discovery config topic, else None."""
    if not topic.startswith(prefix + "/"):
        return None
    parts = topic[len(prefix) + 1:].split("/")
    if parts[-1] != "config" or len(parts) not in (3, 4):
        return None
    return (parts[0], parts[1], parts[2]) if len(parts) == 4 else (parts[0], None, parts[1])


def entity_id(component: str, config: dict) -> str:
    if isinstance(config.get("default_entity_id"), str):
        return config["default_entity_id"]
    if isinstance(config.get("object_id"), str):
        return f"{component}.{slug(config['object_id'])}"
    # Without either, HA names the entity after its device and its own name.
    device = config.get("device") if isinstance(config.get("device"), dict) else {}
    return f"{component}.{slug(str(device.get('name', '')) + ' ' + str(config.get('name') or ''))}"


def check_config(topic: str, component: str, ids: list[str], config: object) -> tuple[list[str], list[str]]:
    """Problems (HA would refuse or misbehave) and warnings (works today, fix soon) for one config."""
    problems: list[str] = []
    warnings: list[str] = []
    if component not in COMPONENTS:
        problems.append(f"unknown component '{component}'")
    problems += [f"id '{i}' has characters HA does not accept (use letters, digits, '_', '-')"
                 for i in ids if i and not SAFE_ID.match(i)]
    if not isinstance(config, dict):
        return problems + ["payload is not a JSON object"], warnings
    if not isinstance(config.get("unique_id"), str) or not config["unique_id"]:
        problems.append("no unique_id: HA cannot attach the entity to a device or let you edit it")
    device = config.get("device")
    if not isinstance(device, dict) or not (device.get("identifiers") or device.get("connections")):
        problems.append("no device block with identifiers: the entity would not belong to a device")
    problems += topic_problems(component, config)
    if "state_class" in config and config["state_class"] not in STATE_CLASSES:
        problems.append(f"state_class {config['state_class']!r} is not one of {sorted(STATE_CLASSES)}")
    if component == "binary_sensor":
        if not isinstance(config.get("off_delay", 0), (int, float)) or config.get("off_delay", 0) < 0:
            problems.append("off_delay must be a number of seconds >= 0")
        for key in ("payload_on", "payload_off"):
            if key in config and not isinstance(config[key], str):
                problems.append(f"{key} must be a string")
    template = config.get("value_template")
    if template is not None:
        problems += template_problems(template)
    if "object_id" in config and "default_entity_id" not in config:
        warnings.append("object_id is deprecated since Home Assistant 2025.10 and stops working in 2026.4; "
                        f"add \"default_entity_id\": \"{entity_id(component, config)}\"")
    return problems, warnings


def topic_problems(component: str, config: dict) -> list[str]:
    """The state topic and every availability topic: present, and plain topics HA can subscribe to."""
    topics = {"state_topic": config.get("state_topic")}
    topics.update({f"availability[{i}].topic": a.get("topic") if isinstance(a, dict) else None
                   for i, a in enumerate(config.get("availability") or [])})
    problems = []
    if component in ("sensor", "binary_sensor") and topics["state_topic"] is None:
        problems.append("no state_topic")
    for key, value in topics.items():
        if value is not None and (not isinstance(value, str) or not value or "+" in value or "#" in value):
            problems.append(f"{key} {value!r} is not a plain topic (no wildcards)")
        elif value is None and key != "state_topic":
            problems.append(f"{key} is missing")
    return problems


def template_problems(template: object) -> list[str]:
    if not isinstance(template, str):
        return ["value_template is not a string"]
    try:
        import jinja2
    except ImportError:
        return []  # checked when jinja2 is there; --live says how to install it
    try:
        jinja2.Environment().parse(template)
    except jinja2.TemplateSyntaxError as exc:
        return [f"value_template does not parse: {exc}"]
    return []


def render(template: str | None, message: mqtt.MQTTMessage | None) -> str:
    """The state Home Assistant would show for ``message``, through ``template`` as HA renders it."""
    if message is None:
        return "(no message yet)"
    raw = message.payload.decode("utf-8", "replace")
    if template is None:
        return raw
    try:
        import jinja2
        import jinja2.sandbox
    except ImportError:
        return "(pip install jinja2 to render)"
    try:
        value_json = json.loads(raw)
    except ValueError:
        value_json = None
    try:
        # HA renders in an immutable sandbox: a template that mutates its input fails there too.
        return jinja2.sandbox.ImmutableSandboxedEnvironment().from_string(template).render(value=raw, value_json=value_json).strip()
    except jinja2.TemplateError as exc:
        return f"(template error: {exc})"


def collect(listener: Listener, args: argparse.Namespace) -> dict[str, tuple[str, tuple, object]]:
    """Discovery configs of the device(s) asked for: topic -> (component, ids, parsed payload)."""
    listener.subscribe([f"{args.discovery_prefix}/#"], args.timeout)
    listener.wait_quiet(args.timeout)
    wanted = slug(args.device_id) if args.device_id else None
    found = {}
    with listener.lock:
        messages = list(listener.messages.values())
    for message in messages:
        parsed = parse_topic(message.topic, args.discovery_prefix)
        if parsed is None or not message.payload:  # an empty retained payload is a removed entity
            continue
        component, node, obj = parsed
        try:
            config = json.loads(message.payload)
        except ValueError:
            config = None
        device = config.get("device") if isinstance(config, dict) and isinstance(config.get("device"), dict) else {}
        if wanted is not None:
            if slug(str(device.get("name", ""))) != wanted and slug(node or "") != wanted:
                continue
        elif device.get("manufacturer") != "edge-sdk":
            continue
        found[message.topic] = (component, (node, obj), config)
    return found


def check_all(found: dict, labels: list[str]) -> tuple[list[str], list[str]]:
    """Problems and warnings over every config: each one alone, unique ids across them, watched labels."""
    problems, warnings = [], []
    unique_ids: dict[str, str] = {}
    for topic, (component, ids, config) in sorted(found.items()):
        bad, warn = check_config(topic, component, list(ids), config)
        problems += [f"{topic}: {p}" for p in bad]
        warnings += [f"{topic}: {w}" for w in warn]
        uid = config.get("unique_id") if isinstance(config, dict) else None
        if isinstance(uid, str) and uid in unique_ids:
            problems.append(f"{topic}: unique_id {uid!r} is also used by {unique_ids[uid]}: HA keeps only one")
        elif isinstance(uid, str):
            unique_ids[uid] = topic
    templates = [str(cfg.get("value_template", "")) for component, _, cfg in found.values()
                 if component == "binary_sensor" and isinstance(cfg, dict)]
    for label in labels:
        if not any(f"'{label}'" in t or f'"{label}"' in t for t in templates):
            problems.append(f"no binary sensor for label '{label}': add it to watch_labels in run.yaml's mqtt section")
    return problems, warnings


def live_states(listener: Listener, entities: list[tuple[str, dict]], *, seconds: float, timeout: float) -> dict:
    """The newest message on every state and availability topic, waiting up to ``seconds`` for all of them."""
    wanted = {cfg.get("state_topic") for _, cfg in entities}
    wanted |= {a.get("topic") for _, cfg in entities for a in cfg.get("availability") or [] if isinstance(a, dict)}
    topics = sorted(t for t in wanted if isinstance(t, str) and t and "+" not in t and "#" not in t)
    listener.subscribe(topics, timeout)

    def every_topic_heard() -> bool:
        with listener.lock:
            return all(t in listener.messages for t in topics)

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not every_topic_heard():
        time.sleep(0.05)
    with listener.lock:
        return dict(listener.messages)


def run(args: argparse.Namespace) -> int:
    listener = Listener(args)
    try:
        found = collect(listener, args)
        if not found:
            who = f"device '{args.device_id}'" if args.device_id else "any edge-sdk device"
            print(f"no discovery configs for {who} under {args.discovery_prefix}/ within {args.timeout:g} s: "
                  "is 'home_assistant: true' in the mqtt section of run.yaml, and the device connected to this broker?")
            return 1
        problems, warnings = check_all(found, args.label)
        entities = [(component, config) for component, _, config in found.values() if isinstance(config, dict)]
        states = live_states(listener, entities, seconds=args.live, timeout=args.timeout) if args.live else {}
        report(entities, states, live=bool(args.live))
        for line in warnings:
            print(f"warning: {line}")
        for line in problems:
            print(f"problem: {line}")
        print(f"{len(entities)} entities, {len(problems)} problems, {len(warnings)} warnings")
        return 1 if problems else 0
    finally:
        listener.close()


def report(entities: list[tuple[str, dict]], states: dict, *, live: bool) -> None:
    """The devices and entities Home Assistant would create, with their states when --live."""
    devices: dict[str, tuple[dict, list]] = {}
    for component, config in entities:
        device = config.get("device") if isinstance(config.get("device"), dict) else {}
        key = json.dumps(device.get("identifiers"), sort_keys=True)
        devices.setdefault(key, (device, []))[1].append((component, config))
    for device, members in devices.values():
        print(f"device {device.get('name')!r}: {device.get('manufacturer')} {device.get('model')} "
              f"(sw {device.get('sw_version')}), identifiers {device.get('identifiers')}")
        availability = next((a for _, c in members for a in c.get("availability") or [] if isinstance(a, dict)), None)
        if availability is not None:
            shown = render(availability.get("value_template"), states.get(availability.get("topic"))) if live else ""
            if live and shown == availability.get("payload_available", "online"):
                shown = "available"
            elif live and shown == availability.get("payload_not_available", "offline"):
                shown = "unavailable (device offline)"
            print(f"  availability from {availability.get('topic')}{': ' + shown if live else ''}")
        for component, config in sorted(members, key=lambda m: entity_id(*m)):
            line = f"  {entity_id(component, config):<42} {str(config.get('name')):<22} {config.get('state_topic')}"
            if live:
                state = render(config.get("value_template"), states.get(config.get("state_topic")))
                unit = config.get("unit_of_measurement")
                line += f"  -> {state}{' ' + unit if unit and not state.startswith('(') else ''}"
            print(line)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = Parser(prog="home_assistant_check", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", default="mqtt://localhost:1883", help="mqtt://host[:port] or mqtts://host[:port]")
    parser.add_argument("--username", help="broker user (password: in the URL, or the MQTT_PASSWORD variable)")
    parser.add_argument("--ca-file", help="CA certificate for mqtts:// (default: the system's)")
    parser.add_argument("--device-id", help="the device's id, as in run.yaml (default: every edge-sdk device found)")
    parser.add_argument("--discovery-prefix", default="homeassistant", help="HA's discovery prefix (homeassistant)")
    parser.add_argument("--label", action="append", default=[],
                        help="a watched label that must have a binary sensor (repeatable)")
    parser.add_argument("--timeout", type=positive_float, default=5.0,
                        help="seconds to wait for the broker's answers (5)")
    parser.add_argument("--live", type=positive_float,
                        help="also wait up to this many seconds for the device's messages, and show each state")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"[^/+#]+", args.discovery_prefix):
        parser.error(f"--discovery-prefix {args.discovery_prefix!r} must be one plain topic level (homeassistant)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except BadInput as exc:
        print(f"home_assistant_check: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
