"""Events against frames on the demo's video: MQTT messages per minute, line counts, and how well the
whole chain (the shipped detector, then the tracker) tracks the video's true objects.

The demo's bundle (the shipped shapes detector, pruned and int8 for x86-cpu, converted by
``edge-sdk demo`` and cached in ``~/.cache/edge-sdk/demo``; converted now in a child process if
missing, so TensorFlow never enters this one) runs on the demo's video (``moving_video``, seed 7,
four shapes, 640x480, 15 fps) made ``--seconds`` long, played in real time, with the demo's line
``gate`` (vertical, through the middle, rightwards = in). The same run is made twice, with the
publish mode ``every_frame`` and ``events``, against a Mosquitto on loopback; a subscriber to the
device's whole tree counts every message that arrives (detections, events, counts, metrics,
status, info) and the line totals of the last retained counts are compared with the video's true
crossings (``shapes.line_crossings``).

The tracked detections of the ``events`` run (taken from ``Runtime.results()``) are scored
against the video's true tracks with ``edge_sdk.samples.tracks.score``: MOTA, IDF1, HOTA, ID
switches (needs the dev extra, for motmetrics).

    .venv/bin/python benchmarks/events_bench.py               # ~2.5 minutes (+2 for a first conversion)
    .venv/bin/python benchmarks/events_bench.py --seconds 20  # smoke run
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import common

from edge_sdk.config import RunConfig
from edge_sdk.demo import run as demo
from edge_sdk.demo.broker import demo_broker
from edge_sdk.mqtt.settings import MQTTSettings, OutboxSettings, PublishMode
from edge_sdk.runtime import Runtime
from edge_sdk.samples import shapes

FPS = 15.0
RESULTS = common.HERE / "results" / "events_bench.md"


def log(message: str) -> None:
    print(f"[events_bench] {message}", file=sys.stderr, flush=True)


def demo_bundle() -> Path:
    """The demo's cached bundle, converted in a child process when there is none."""
    workdir = demo.default_workdir()
    code = ("import sys; from pathlib import Path; from rich.console import Console; from edge_sdk.demo.run import prepared_bundle; "
            "print(prepared_bundle(Path(sys.argv[1]), Console(stderr=True)))")
    found = subprocess.run([sys.executable, "-c", code, str(workdir)], check=True, capture_output=True, text=True)
    return Path(found.stdout.strip().splitlines()[-1])


class Tally:
    """Every message under the device's prefix, counted by kind; the newest counts kept."""

    def __init__(self, broker, device_id: str) -> None:
        import paho.mqtt.client as mqtt

        self.by_kind: Counter[str] = Counter()
        self.counts: dict | None = None
        self.events: list[dict] = []
        self.lock = threading.Lock()
        self.prefix = f"edge/{device_id}/"
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"events-bench-{device_id}", protocol=mqtt.MQTTv5)
        self.client.on_message = self._message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        host, port = broker.url.removeprefix("mqtt://").rsplit(":", 1)
        self.client.connect(host, int(port))
        self.client.loop_start()
        self.client.subscribe(self.prefix + "#", qos=1)
        if not subscribed.wait(10):
            raise RuntimeError("no SUBACK")

    def _message(self, client, userdata, message) -> None:
        kind = message.topic.removeprefix(self.prefix).rsplit("/", 1)[-1]
        with self.lock:
            self.by_kind[kind] += 1
            if kind in ("counts", "events"):
                body = json.loads(message.payload)
                if kind == "counts":
                    self.counts = body
                else:
                    self.events.append(body)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def run_mode(bundle: Path, video: Path, broker, folder: Path, mode: PublishMode) -> dict:
    device = f"bench-{mode.value.replace('_', '-')}"
    tally = Tally(broker, device)
    settings = MQTTSettings(broker=broker.url, device_id=device, publish=mode,
                            outbox=OutboxSettings(path=folder / f"outbox-{mode.value}.sqlite3"))
    config = RunConfig(cameras=[{"id": demo.CAMERA_ID, "source": str(video), "fps": FPS}], threshold=demo.THRESHOLD,
                       mqtt=settings, lines={demo.LINE: {"points": [[demo.LINE_X, 0.0], [demo.LINE_X, 1.0]], "in": "right"}})
    tracked: dict[int, list] = {}
    started = time.monotonic()
    with Runtime(bundle, config) as runtime:
        for result in runtime.results():
            tracked[result.index] = list(result.detections)
        runtime.link.publisher.flush(10)
    seconds = time.monotonic() - started
    time.sleep(1.0)  # the last messages reach the subscriber
    tally.stop()
    return {"mode": mode.value, "seconds": seconds, "by_kind": dict(tally.by_kind), "counts": tally.counts,
            "events": tally.events, "tracked": tracked}


def roaming_scores(bundle: Path, folder: Path, frames: int):
    """The chain on the demo's older video, shapes roaming the frame and passing over each other
    (occlusions, a detector that misses more): tracked unpaced, without MQTT."""
    video = folder / "roaming.avi"
    truth = shapes.moving_video(video, frames=frames, fps=FPS, objects=demo.OBJECTS)
    config = RunConfig(source=str(video), threshold=demo.THRESHOLD, tracking={})
    with Runtime(bundle, config) as runtime:
        tracked = {result.index: list(result.detections) for result in runtime.results()}
    return chain_scores(tracked, truth)


def render(rows: list[dict], truth: dict, mot, *, seconds: float, objects: int, machine: str, roaming=None) -> str:
    every, events = rows
    minutes = seconds / 60
    lines = [
        "## Events against every frame (the demo's video)", "",
        f"{machine}", "",
        f"Video: {seconds:g} s at {FPS:g} fps, {objects} shapes, line 'gate' at x = {demo.LINE_X}; true crossings: "
        f"in {truth['right']}, out {truth['left']}.", "",
        "| publish mode | messages | per minute | detections | events | counts | metrics + status + info | line in / out | exact |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for row in rows:
        kinds = row["by_kind"]
        total = sum(kinds.values())
        line = (row["counts"] or {}).get("lines", {}).get(demo.LINE, {"in": 0, "out": 0})
        exact = line["in"] == truth["right"] and line["out"] == truth["left"]
        other = sum(v for k, v in kinds.items() if k not in ("detections", "events", "counts"))
        lines.append(f"| {row['mode']} | {total} | {total / minutes:.0f} | {kinds.get('detections', 0)} | {kinds.get('events', 0)} "
                     f"| {kinds.get('counts', 0)} | {other} | {line['in']} / {line['out']} | {'yes' if exact else 'NO'} |")
    ratio = sum(every["by_kind"].values()) / max(1, sum(events["by_kind"].values()))
    actions = Counter(e.get("action") for e in events["events"] if e.get("type") == "track")
    lines += ["", f"**every_frame / events: {ratio:.1f}x** the messages (floor: 10x). Track events of the events run: "
                  f"{actions['new']} new, {actions['update']} update, {actions['end']} end, for {objects} objects.", ""]
    if mot is not None:
        lines += ["### The whole chain against the video's true tracks", "",
                  "| video | MOTA | IDF1 | HOTA | ID switches | true tracks | precision | recall |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for name, score in (("the demo's (shapes in lanes; the events run above)", mot),
                            ("shapes roaming and passing over each other (unpaced)", roaming)):
            if score is not None:
                lines.append(f"| {name} | {score.mota:.3f} | {score.idf1:.3f} | {score.hota:.3f} | {score.id_switches} "
                             f"| {score.true_tracks} | {score.precision:.3f} | {score.recall:.3f} |")
        lines += ["", "The shipped detector (pruned, int8) at the demo's threshold 0.4, then the tracker with its defaults, "
                  "scored on the detections the run reported (no coasting boxes); a shape more than half hidden behind "
                  "another is not in the truth.", ""]
    return "\n".join(lines) + "\n"


def chain_scores(tracked: dict[int, list], truth: list[list[shapes.Box]], *, width: int = 640, height: int = 480):
    """MOTA, IDF1 and HOTA of the tracked detections the run reported, against the video's true tracks."""
    from edge_sdk.results import BBox
    from edge_sdk.samples import tracks

    frames = [[tracks.TruthBox(b.track, BBox(b.x1 / width, b.y1 / height, b.x2 / width, b.y2 / height), True) for b in boxes]
              for boxes in truth]
    return tracks.score(frames, [tracked.get(i, []) for i in range(len(truth))])


def machine_line() -> str:
    return common.sibling("pipeline_bench").machine_line(2).rsplit(";", 1)[0] + "; " + common.cpu_flags()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="Length of the video (played in real time, twice).")
    args = parser.parse_args()
    bundle = demo_bundle()
    log(f"bundle {bundle}")
    frames = int(args.seconds * FPS)
    with tempfile.TemporaryDirectory(prefix="events-bench-") as tmp:
        folder = Path(tmp)
        video = folder / "shapes.avi"
        truth = shapes.moving_video(video, frames=frames, fps=FPS, objects=demo.OBJECTS, lanes=True)
        crossings = shapes.line_crossings(truth, x=demo.LINE_X * 640, margin=demo.LINE_MARGIN * 640)
        with demo_broker(None, folder=folder / "broker", embedded=False) as broker:
            log(f"broker {broker.kind} at {broker.url}")
            rows = []
            for mode in (PublishMode.EVERY_FRAME, PublishMode.EVENTS):
                log(f"running {mode.value} for {args.seconds:g} s")
                rows.append(run_mode(bundle, video, broker, folder, mode))
        mot = chain_scores(rows[1]["tracked"], truth)
        log("the chain on the roaming video, unpaced")
        roaming = roaming_scores(bundle, folder, frames)
    text = render(rows, crossings, mot, seconds=args.seconds, objects=demo.OBJECTS, machine=machine_line(), roaming=roaming)
    print(text)
    common.write_results(RESULTS, text, log=log)


if __name__ == "__main__":
    main()
