"""The runtime under the combined reliability gate (support/reliability/combined.py), in its own process so
the gate can SIGKILL it: the real Publisher on a persistent outbox publishes one detections message
per frame at a steady rate until SIGTERM, then drains the outbox and exits 0.

    python tests/support/reliability/combined_runtime.py FOLDER --broker mqtt://127.0.0.1:PORT --device-id cam-c --rate 20

A camera's frames after a crash are new frames, so the promise under test is that every detection
the runtime accepted into its outbox is delivered. ``FOLDER/frames.log`` records that acceptance:

    claim <frame>                before the frame is handed to the publisher
    queued <frame> <seq> <t>     after publish() returned: the detection is in the outbox (t: monotonic)

Each line is one write(2) on an O_APPEND descriptor: a SIGKILL cannot tear it and the page cache
outlives the process, which is exactly the outbox journal's own durability (it does not fsync by
default either), so the log is never behind what the outbox holds. A new life resumes after the
highest claimed frame: no frame number is used twice, and a frame claimed but never confirmed
(killed in between) may or may not have reached the outbox.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from edge_sdk.mqtt import payloads
from edge_sdk.mqtt.client import Publisher
from edge_sdk.mqtt.settings import MQTTSettings

FRAME_LOG = "frames.log"
OUTBOX = "outbox.sqlite3"
EXIT_STATS = "exit.json"
DRAIN_S = 60.0


def next_frame(log: Path) -> int:
    """One past the highest frame any earlier life claimed."""
    if not log.exists():
        return 0
    claimed = [int(line.split()[1]) for line in log.read_text().splitlines() if line.startswith("claim ")]
    return max(claimed, default=-1) + 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--broker", required=True)
    parser.add_argument("--device-id", required=True)
    parser.add_argument("--rate", type=float, required=True, help="frames a second")
    parser.add_argument("--keepalive", type=int, default=5)
    parser.add_argument("--reconnect-min-s", type=float, default=0.1)
    parser.add_argument("--reconnect-max-s", type=float, default=1.0)
    args = parser.parse_args(argv)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    settings = MQTTSettings(
        broker=args.broker, device_id=args.device_id, keepalive=args.keepalive,
        reconnect_min_s=args.reconnect_min_s, reconnect_max_s=args.reconnect_max_s,
        outbox={"path": str(args.folder / OUTBOX)},
    )
    # Printed for the gate's evidence: when this life saw the link go and come back.
    publisher = Publisher(settings, on_state=lambda state, error: print(f"{time.monotonic():.3f} {state} {error or ''}", flush=True))
    first = next_frame(args.folder / FRAME_LOG)
    print(f"{time.monotonic():.3f} life starts at frame {first}, outbox depth {publisher.outbox.depth}", flush=True)
    publisher.start()
    log = os.open(args.folder / FRAME_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    begun = time.monotonic()
    frame = first
    while not stop.wait(max(0.0, begun + (frame - first) / args.rate - time.monotonic())):
        os.write(log, f"claim {frame}\n".encode())
        body = publisher.envelope(payloads.DETECTIONS, {"camera": "main", "frame": frame, "frame_ts": time.time(), "width": 640, "height": 480, "detections": []})
        publisher.publish("detections", body)
        os.write(log, f"queued {frame} {body['seq']} {time.monotonic():.6f}\n".encode())
        frame += 1
    os.close(log)
    drained = publisher.flush(DRAIN_S)
    stats = publisher.stats().as_dict()
    publisher.close()
    (args.folder / EXIT_STATS).write_text(json.dumps({"drained": drained, "frames": frame - first, **stats}))
    print(f"{time.monotonic():.3f} stopped: {stats}", flush=True)
    return 0 if drained else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
