"""Fleet back-end: store every detection your devices publish in SQLite, once each, losing none.

Runs on: any server that reaches the broker. It needs no edge-sdk, only paho-mqtt 2:

    pip install "paho-mqtt>=2,<3"

Run:

    python fleet_subscriber.py --broker mqtt://broker.lan --db detections.sqlite3
    python fleet_subscriber.py --db detections.sqlite3 --summary        # counts per device and label

How nothing is lost, and nothing is stored twice:
* A persistent MQTT 5 session: a fixed client id, clean_start=False and a session expiry. While
  this script is stopped or crashed, the broker queues the devices' QoS 1 messages for it (up to
  Mosquitto's max_queued_messages, 1000 by default: raise it in mosquitto.conf for long outages).
* Manual acknowledgement: a message is committed to SQLite first and acknowledged (PUBACK) after.
  A crash in between means the broker sends it again on the next connect.
* Devices stamp every message with (device_id, seq); seq grows per device and survives restarts.
  That pair is the table's primary key and rows go in with INSERT OR IGNORE, so redeliveries and
  duplicates are counted and dropped.
Run one process per client id (a second one with the same id takes the session over). To spread
the load over several, give each its own id and subscribe them to a shared subscription
($share/<group>/edge/+/+/detections). `edge-sdk ingest --share GROUP` does all of this for every
kind of message (events, counts, status, metrics, alerts too), into SQLite or PostgreSQL.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import NoReturn
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    device_id   TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    topic       TEXT    NOT NULL,
    camera      TEXT,               -- the camera of the device the frame came from
    frame       INTEGER,
    frame_ts    REAL,               -- when the device captured the frame (seconds since the epoch)
    received_ts REAL    NOT NULL,
    width       INTEGER,
    height      INTEGER,
    payload     TEXT    NOT NULL,   -- the message as received, for anything not broken out below
    PRIMARY KEY (device_id, seq)    -- the de-duplication key every edge-sdk payload carries
);
CREATE TABLE IF NOT EXISTS detections (
    device_id TEXT    NOT NULL,
    seq       INTEGER NOT NULL,
    idx       INTEGER NOT NULL,     -- position in the frame's list
    class_id  INTEGER,
    label     TEXT    NOT NULL,
    score     REAL    NOT NULL,
    x1 REAL, y1 REAL, x2 REAL, y2 REAL,   -- normalised box; NULL for a classifier's result
    PRIMARY KEY (device_id, seq, idx),
    FOREIGN KEY (device_id, seq) REFERENCES messages (device_id, seq)
);
CREATE INDEX IF NOT EXISTS detections_by_label ON detections (label);
"""


class Parser(argparse.ArgumentParser):
    """argparse whose mistakes are one line on stderr and exit code 2, like the edge-sdk CLI."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


class BadInput(Exception):
    """A setting or a broker answer that makes the run impossible: one line, exit code 2."""


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


class Store:
    """The SQLite file: one transaction per message, its detections included."""

    def __init__(self, path: Path) -> None:
        try:
            # Written from paho's network thread during the run, read from the main thread before
            # and after, never at the same time.
            self.db = sqlite3.connect(path, check_same_thread=False)
            # WAL lets --summary read while this writes; synchronous=FULL makes each commit reach the
            # disk before the PUBACK goes out, so even a power cut cannot lose an acknowledged message.
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise BadInput(f"database {path} cannot be used: {exc}") from exc

    def add(self, topic: str, body: dict) -> bool:
        """Store one detections message; False when (device_id, seq) is already there."""
        with self.db:  # commits, or rolls back the message and its detections together
            cursor = self.db.execute(
                "INSERT OR IGNORE INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (body["device_id"], body["seq"], topic, body.get("camera"), body.get("frame"), body.get("frame_ts"), time.time(),
                 body.get("width"), body.get("height"), json.dumps(body, separators=(",", ":"))),
            )
            if cursor.rowcount == 0:
                return False
            self.db.executemany(
                "INSERT INTO detections VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(body["device_id"], body["seq"], i, d.get("class_id"), d["label"], d["score"],
                  *(d.get("box") or (None,) * 4)) for i, d in enumerate(body["detections"])],
            )
        return True

    def summary(self) -> list[str]:
        rows = self.db.execute(
            "SELECT device_id, label, COUNT(*), AVG(score) FROM detections "
            "GROUP BY device_id, label ORDER BY device_id, COUNT(*) DESC, label"
        ).fetchall()
        frames = self.db.execute(
            "SELECT device_id, COUNT(*), MAX(frame_ts) FROM messages GROUP BY device_id ORDER BY device_id"
        ).fetchall()
        lines = [f"{'device':<20} {'label':<20} {'detections':>10} {'mean score':>10}"]
        lines += [f"{device:<20} {label:<20} {count:>10} {score:>10.3f}" for device, label, count, score in rows]
        lines.append("")
        lines += [f"{device}: {count} messages, last frame at "
                  f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(last)) if last else '?'}"
                  for device, count, last in frames]
        return lines


class Topics:
    """The subscription for a device prefix such as 'edge/{device_id}/' (every camera's
    '{camera}/detections' under it), and the device and camera a topic names."""

    def __init__(self, prefix: str) -> None:
        if "+" in prefix or "#" in prefix:
            raise BadInput(f"--prefix {prefix!r} must not contain MQTT wildcards; write {{device_id}} where the id goes")
        prefix = prefix if prefix.endswith("/") else prefix + "/"
        self.filter = prefix.replace("{device_id}", "+") + "+/detections"
        pattern = re.escape(prefix).replace(re.escape("{device_id}"), "(?P<device>[^/]+)")
        self._pattern = re.compile(f"^{pattern}(?P<camera>[^/]+)/detections$")

    def check(self, topic: str, body: dict) -> None:
        """Refuse a message whose device_id or camera is not the one in its topic: the broker's ACL
        vouches for the topic only, so this stops one device from writing rows for another."""
        match = self._pattern.match(topic)
        if match and "device" in match.groupdict() and match.group("device") != body["device_id"]:
            raise ValueError(f"device_id {body['device_id']!r} does not match the topic")
        if match and body.get("camera") != match.group("camera"):
            raise ValueError(f"camera {body.get('camera')!r} does not match the topic")


def validate(body: object) -> dict:
    """The fields this store needs, checked; ValueError says what is wrong."""
    if not isinstance(body, dict):
        raise ValueError("not a JSON object")
    if not isinstance(body.get("device_id"), str) or not body["device_id"]:
        raise ValueError("no device_id")
    if type(body.get("seq")) is not int or body["seq"] < 1:
        raise ValueError("no valid seq")
    detections = body.get("detections")
    if not isinstance(detections, list) or not all(
        isinstance(d, dict) and isinstance(d.get("label"), str) and isinstance(d.get("score"), (int, float))
        and (d.get("box") is None or (isinstance(d["box"], list) and len(d["box"]) == 4))
        for d in detections
    ):
        raise ValueError("detections is not a list of {label, score, box?}")
    return body


def describe(body: dict) -> str:
    found = ", ".join(f"{d['label']} {d['score']:.2f}" for d in body["detections"]) or "-"
    return f"{body['device_id']}/{body.get('camera')} seq {body['seq']} frame {body.get('frame')}: {found}"


def connect(args: argparse.Namespace) -> mqtt.Client:
    url = urlsplit(args.broker)
    if url.scheme not in ("mqtt", "mqtts") or not url.hostname:
        raise BadInput(f"--broker {args.broker!r} must look like mqtt://host[:port] or mqtts://host[:port]")
    # Without manual_ack paho acknowledges each message as soon as on_message returns, whatever
    # became of it; with it, the PUBACK goes out only after the commit (see on_message).
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=args.client_id, protocol=mqtt.MQTTv5, manual_ack=True
    )
    if url.scheme == "mqtts":
        try:
            client.tls_set(ca_certs=str(args.ca_file) if args.ca_file else None)
        except (OSError, ValueError) as exc:
            raise BadInput(f"--ca-file {args.ca_file} cannot be used: {exc}") from exc
    username = args.username or (unquote(url.username) if url.username else None)
    password = unquote(url.password) if url.password else os.environ.get("MQTT_PASSWORD")
    if username is not None:
        client.username_pw_set(username, password)
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = args.session_expiry
    client.reconnect_delay_set(1, 30)
    try:
        client.connect(url.hostname, url.port or (8883 if url.scheme == "mqtts" else 1883), keepalive=30,
                       clean_start=False, properties=properties)
    except (OSError, ValueError) as exc:
        raise BadInput(f"cannot connect to {url.hostname}:{url.port or ''}: {exc}") from exc
    return client


def subscribe(args: argparse.Namespace) -> int:
    """Store detections until --count, --duration or Ctrl-C; returns the exit code."""
    topics = Topics(args.prefix)
    client = connect(args)  # nothing is read before loop_start below
    store = Store(args.db)
    # Callbacks run in paho's network thread; they only set these, the main thread acts on them.
    state = {"handled": 0, "stopping": False, "error": None, "code": 0, "last_message": 0.0}
    stop_requested = threading.Event()

    def stop(error: str | None = None, code: int = 0) -> None:
        if not state["stopping"]:
            state.update(stopping=True, error=error, code=code)
            stop_requested.set()

    def on_connect(client, userdata, flags, reason, properties) -> None:
        if reason.is_failure:
            stop(f"the broker refused the connection: {reason}", 2)
            return
        resumed = "resumed the session: messages queued while away come now" if flags.session_present else "new session"
        print(f"connected to {args.broker} as {args.client_id} ({resumed})", file=sys.stderr, flush=True)
        client.subscribe(topics.filter, qos=1)

    def on_subscribe(client, userdata, mid, reason_codes, properties) -> None:
        if reason_codes[0].is_failure:
            stop(f"the broker refused the subscription to {topics.filter}: {reason_codes[0]}", 2)
            return
        print(f"subscribed to {topics.filter} (QoS 1)", file=sys.stderr, flush=True)

    def on_message(client, userdata, message) -> None:
        state["last_message"] = time.monotonic()
        if state["stopping"]:
            return  # not acknowledged: the broker sends it again to the next session
        try:
            body = validate(json.loads(message.payload))
            topics.check(message.topic, body)
        except ValueError as exc:
            # Acknowledged all the same: a malformed message would come back forever otherwise.
            print(f"skipped a message on {message.topic}: {exc}", file=sys.stderr, flush=True)
            client.ack(message.mid, message.qos)
            return
        try:
            stored = store.add(message.topic, body)
        except Exception as exc:  # a full disk, a locked file, a bug: stop rather than acknowledge unstored
            stop(f"cannot store a message, left unacknowledged for redelivery: {type(exc).__name__}: {exc}", 1)
            return
        client.ack(message.mid, message.qos)  # only now: the row is on disk
        print(f"{'stored' if stored else 'duplicate, already stored:'} {describe(body)}", flush=True)
        state["handled"] += 1
        if args.count is not None and state["handled"] >= args.count:
            stop()

    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    client.loop_start()
    try:
        stop_requested.wait(args.duration)
    except KeyboardInterrupt:
        pass
    stop()
    # Closing a socket that still has unread data makes the kernel reset the connection, and the
    # broker then drops the acknowledgements still in flight (each would come back as a duplicate).
    # Unacknowledged messages fill the broker's send window, so waiting for a quiet moment works.
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and time.monotonic() - state["last_message"] < 0.3:
        time.sleep(0.05)
    client.disconnect()
    client.loop_stop()
    if state["code"] != 2:
        print(f"{state['handled']} messages handled", file=sys.stderr)
    if state["error"]:
        print(f"fleet_subscriber: error: {state['error']}", file=sys.stderr)
    return state["code"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = Parser(prog="fleet_subscriber", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", default="mqtt://localhost:1883", help="mqtt://host[:port] or mqtts://host[:port]")
    parser.add_argument("--username", help="broker user (password: in the URL, or the MQTT_PASSWORD variable)")
    parser.add_argument("--ca-file", type=Path, help="CA certificate for mqtts:// (default: the system's)")
    parser.add_argument("--prefix", default="edge/{device_id}/", help="the devices' topic prefix (edge/{device_id}/)")
    parser.add_argument("--db", type=Path, default=Path("detections.sqlite3"), help="SQLite file (detections.sqlite3)")
    parser.add_argument("--client-id", default="edge-sdk-fleet-subscriber", help="fixed MQTT client id: names the session")
    parser.add_argument("--session-expiry", type=positive_int, default=7 * 24 * 3600,
                        help="seconds the broker keeps the session and its queue while this is not connected (7 days)")
    parser.add_argument("--count", type=positive_int, help="stop after this many messages (duplicates included)")
    parser.add_argument("--duration", type=positive_float, help="stop after this many seconds")
    parser.add_argument("--summary", action="store_true", help="print counts per device and label from --db, then exit")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a service stop is a clean stop
    try:
        if args.summary and not args.db.is_file():
            raise BadInput(f"database {args.db} does not exist")
        if args.summary:
            print("\n".join(Store(args.db).summary()))
            return 0
        return subscribe(args)
    except BadInput as exc:
        print(f"fleet_subscriber: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
