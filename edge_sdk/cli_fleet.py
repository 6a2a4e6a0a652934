"""``edge-sdk push`` and ``edge-sdk listen``: the fleet side of MQTT."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def _settings(broker: str, device: str, prefix: str, ca_file, cert_file, key_file, username, password_file):
    from edge_sdk.config import field_error
    from edge_sdk.errors import ConfigError
    from edge_sdk.mqtt.settings import MQTTSettings
    from pydantic import ValidationError

    tls = {k: v for k, v in {"ca_file": ca_file, "cert_file": cert_file, "key_file": key_file}.items() if v is not None}
    try:
        return MQTTSettings(broker=broker, device_id=device, prefix=prefix, tls=tls or None, username=username, password_file=password_file)
    except ValidationError as exc:
        raise ConfigError(field_error(exc, noun="option")) from None


def push(
    bundle: Path = typer.Argument(..., help="Signed bundle folder (see 'edge-sdk sign')."),
    device: str = typer.Option(..., "--device", help="Device id to update."),
    broker: str = typer.Option(..., "--broker", help="mqtt://, mqtts://, ws:// or wss:// URL of the fleet's broker."),
    timeout: float = typer.Option(120.0, help="Seconds to wait for the device's answer."),
    prefix: str = typer.Option("edge/{device_id}/", help="Topic prefix the devices use."),
    ca_file: Optional[Path] = typer.Option(None, "--ca-file", help="CA certificate of the broker."),
    cert_file: Optional[Path] = typer.Option(None, "--cert-file", help="Client certificate."),
    key_file: Optional[Path] = typer.Option(None, "--key-file", help="Client certificate's key."),
    username: Optional[str] = typer.Option(None, help="Broker user name."),
    password_file: Optional[Path] = typer.Option(None, "--password-file", help="File holding the broker password (or set EDGE_SDK_MQTT_PASSWORD)."),
) -> None:
    """Send a signed bundle to a device and wait until it has verified, tried and swapped it in."""
    from edge_sdk.errors import UpdateError
    from edge_sdk.mqtt.push import push_bundle

    settings = _settings(broker, device, prefix, ca_file, cert_file, key_file, username, password_file)
    answer = push_bundle(bundle, settings=settings, timeout=timeout)
    if not answer.get("ok"):
        raise UpdateError(f"device {device} refused the update: {answer.get('error', 'no reason given')}")
    typer.echo(f"{device}: model {str(answer.get('old_sha256'))[:12]} -> {str(answer.get('new_sha256'))[:12]} (version {answer.get('version')})")


def listen(
    broker: str = typer.Option(..., "--broker", help="mqtt://, mqtts://, ws:// or wss:// URL of the fleet's broker."),
    device: Optional[str] = typer.Option(None, "--device", help="Only this device (default: every device)."),
    json_output: bool = typer.Option(False, "--json", help="One JSON line per message instead of the live table."),
    count: Optional[int] = typer.Option(None, "--count", help="Stop after N messages."),
    duration: Optional[float] = typer.Option(None, "--duration", help="Stop after this many seconds."),
    root: str = typer.Option("edge", "--root", help="First level of the devices' topics."),
    ca_file: Optional[Path] = typer.Option(None, "--ca-file", help="CA certificate of the broker."),
    cert_file: Optional[Path] = typer.Option(None, "--cert-file", help="Client certificate."),
    key_file: Optional[Path] = typer.Option(None, "--key-file", help="Client certificate's key."),
    username: Optional[str] = typer.Option(None, help="Broker user name."),
    password_file: Optional[Path] = typer.Option(None, "--password-file", help="File holding the broker password."),
) -> None:
    """Watch a fleet live: status, model, fps, latency, outbox depth and detections of every device."""
    import json
    import queue
    import time
    import uuid

    from rich.console import Console
    from rich.live import Live

    from edge_sdk.errors import ConfigError
    from edge_sdk.mqtt.fleetview import FleetView
    from edge_sdk.mqtt.push import connect
    from edge_sdk.mqtt.topics import check_device_id

    if count is not None and count < 1:
        raise ConfigError(f"--count must be at least 1, not {count}")
    if device is not None:
        check_device_id(device)
    settings = _settings(broker, device or "listener", f"{root}/{{device_id}}/", ca_file, cert_file, key_file, username, password_file)
    inbox: queue.Queue = queue.Queue()
    client = connect(settings, client_id=f"edge-sdk-listen-{uuid.uuid4().hex[:8]}")
    client.on_message = lambda c, u, m: inbox.put((m.topic, bytes(m.payload), m.retain))
    client.subscribe(f"{root}/{device or '+'}/#", qos=1)
    view = FleetView(prefix=f"{root}/")
    seen = 0
    deadline = time.monotonic() + duration if duration else None
    console = Console()
    live = None if json_output else Live(view.table(), console=console, refresh_per_second=4)
    try:
        if live is not None:
            live.start()
        while (count is None or seen < count) and (deadline is None or time.monotonic() < deadline):
            try:
                topic, payload, retained = inbox.get(timeout=0.25)
            except queue.Empty:
                continue
            seen += 1
            body = view.feed(topic, payload)
            if json_output:
                shown = body if body is not None else {"bytes": len(payload)}
                typer.echo(json.dumps({"topic": topic, "retained": retained, "payload": shown}))
            elif live is not None:
                live.update(view.table())
    except KeyboardInterrupt:
        pass
    finally:
        if live is not None:
            live.stop()
        client.loop_stop()
        client.disconnect()
