"""``edge-sdk push``, ``listen`` and ``ingest``: the fleet side of MQTT."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Optional

import typer

# The options every fleet command shares, defined once.
BROKER = typer.Option(..., "--broker", help="mqtt://, mqtts://, ws:// or wss:// URL of the fleet's broker.")
ROOT = typer.Option("edge", "--root", help="First level of the devices' topics.")
CA_FILE = typer.Option(None, "--ca-file", help="CA certificate of the broker.")
CERT_FILE = typer.Option(None, "--cert-file", help="Client certificate.")
KEY_FILE = typer.Option(None, "--key-file", help="Client certificate's key.")
USERNAME = typer.Option(None, "--username", help="Broker user name.")
PASSWORD_FILE = typer.Option(None, "--password-file", help="File holding the broker password (or set EDGE_SDK_MQTT_PASSWORD).")


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
    broker: str = BROKER,
    timeout: float = typer.Option(120.0, help="Seconds to wait for the device's answer."),
    prefix: str = typer.Option("edge/{device_id}/", help="Topic prefix the devices use."),
    ca_file: Optional[Path] = CA_FILE,
    cert_file: Optional[Path] = CERT_FILE,
    key_file: Optional[Path] = KEY_FILE,
    username: Optional[str] = USERNAME,
    password_file: Optional[Path] = PASSWORD_FILE,
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
    broker: str = BROKER,
    device: Optional[str] = typer.Option(None, "--device", help="Only this device (default: every device)."),
    json_output: bool = typer.Option(False, "--json", help="One JSON line per message instead of the live table."),
    count: Optional[int] = typer.Option(None, "--count", help="Stop after N messages."),
    duration: Optional[float] = typer.Option(None, "--duration", help="Stop after this many seconds."),
    root: str = ROOT,
    ca_file: Optional[Path] = CA_FILE,
    cert_file: Optional[Path] = CERT_FILE,
    key_file: Optional[Path] = KEY_FILE,
    username: Optional[str] = USERNAME,
    password_file: Optional[Path] = PASSWORD_FILE,
    share: Optional[str] = typer.Option(None, "--share", help="Join this shared-subscription group: N listeners split the fleet's messages, each resuming its own session."),
    name: Optional[str] = typer.Option(None, "--name", help="This member's name in the group (default: the host name); the same name resumes the same session."),
) -> None:
    """Watch a fleet live: status, model, fps, latency, outbox depth and detections of every device.

    With --share, this is one member of a shared group: messages are de-duplicated on
    (device_id, seq), acknowledged only once printed, and queued by the broker while it is stopped."""
    if share is not None:
        if device is not None:
            from edge_sdk.errors import ConfigError

            raise ConfigError("--device and --share do not go together: a shared group splits every device's messages")
        settings = _settings(broker, "listener", f"{root}/{{device_id}}/", ca_file, cert_file, key_file, username, password_file)
        _listen_shared(settings, share=share, name=name, root=root, json_output=json_output, count=count, duration=duration)
        return
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


@contextlib.contextmanager
def _stopping_on_signals(consumer):
    """SIGINT and SIGTERM stop the consumer the clean way: what it holds is written and acknowledged."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield  # called from a thread (a Python caller's): its owner stops it
        return
    before = {sig: signal.signal(sig, lambda *_: consumer.stop()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _listen_shared(settings, *, share: str, name: Optional[str], root: str, json_output: bool, count, duration) -> None:
    import json
    import sys

    from rich.console import Console
    from rich.live import Live

    from edge_sdk.fleet.consumer import Consumer
    from edge_sdk.fleet.sink import CallbackSink
    from edge_sdk.mqtt.fleetview import FleetView

    if count is not None and count < 1:
        from edge_sdk.errors import ConfigError

        raise ConfigError(f"--count must be at least 1, not {count}")
    view = FleetView(prefix=f"{root}/")
    live = None if json_output else Live(view.table(), console=Console(), refresh_per_second=4)

    def show(record) -> None:
        view.feed(record.topic, record.payload)
        if live is not None:
            live.update(view.table())
        else:
            typer.echo(json.dumps({"topic": record.topic, "payload": record.body}))
            sys.stdout.flush()  # printed is what "stored" means here: acknowledged after this

    consumer = Consumer(settings, CallbackSink(show), group=share, name=name, root=root).start()
    try:
        if live is not None:
            live.start()
        with _stopping_on_signals(consumer):
            consumer.run(duration=duration, count=count)
    finally:
        if live is not None:
            live.stop()
        consumer.close()


def ingest(
    broker: str = BROKER,
    db: str = typer.Option("fleet.sqlite3", "--db", help="A SQLite file (default fleet.sqlite3), or postgresql://user@host:port/database (password: EDGE_SDK_DB_PASSWORD or PGPASSWORD)."),
    share: Optional[str] = typer.Option(None, "--share", help="Join this shared-subscription group: N ingest processes split the fleet's messages."),
    name: Optional[str] = typer.Option(None, "--name", help="This member's name (default: the host name); the same name resumes the same session."),
    root: str = ROOT,
    batch: int = typer.Option(500, "--batch", min=1, max=10000, help="Most messages per database transaction."),
    count: Optional[int] = typer.Option(None, "--count", min=1, help="Stop after N messages."),
    duration: Optional[float] = typer.Option(None, "--duration", help="Stop after this many seconds."),
    session_expiry: int = typer.Option(7 * 24 * 3600, "--session-expiry", min=0, help="Seconds the broker keeps queueing for a stopped ingest."),
    ca_file: Optional[Path] = CA_FILE,
    cert_file: Optional[Path] = CERT_FILE,
    key_file: Optional[Path] = KEY_FILE,
    username: Optional[str] = USERNAME,
    password_file: Optional[Path] = PASSWORD_FILE,
) -> None:
    """Store the fleet's detections, events, counts, status, info, metrics and alerts in a database, once each.

    Each message is committed before it is acknowledged, and (device_id, seq) is the key, so a
    restart, a replay or a redelivery stores nothing twice. While the database is down nothing is
    acknowledged: the broker keeps the messages in this ingest's session until it is back."""
    import time

    from edge_sdk.fleet.consumer import Consumer, read_retained
    from edge_sdk.fleet.store import open_store

    settings = _settings(broker, "ingest", f"{root}/{{device_id}}/", ca_file, cert_file, key_file, username, password_file)
    store = open_store(db)
    progress = {"at": time.monotonic()}

    def report(records, result) -> None:
        now = time.monotonic()
        if now - progress["at"] >= 10:
            progress["at"] = now
            typer.echo(f"ingest: {consumer.stats.line()}", err=True)

    try:
        consumer = Consumer(settings, store, group=share, name=name, root=root, batch_size=batch,
                            session_expiry_s=session_expiry, on_stored=report).start()
        known = read_retained(settings, root=root)  # devices that connected before this ingest's session existed
        if known:
            store.write(known)
        try:
            with _stopping_on_signals(consumer):
                stats = consumer.run(duration=duration, count=count)
        finally:
            consumer.close()
    finally:
        store.close()
    typer.echo(f"ingest {consumer.client_id}: {stats.line()}")
