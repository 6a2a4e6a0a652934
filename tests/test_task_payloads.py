"""Masks, keypoints and semantic maps over MQTT: a real Mosquitto that, like AWS IoT Core, takes no
message over 128 KB receives what the fleet link publishes; every payload validates against its
schema, decodes back to the pixels it came from, and an oversize frame arrives degraded, never lost
and never over the limit."""

from __future__ import annotations

import json
import time

import cv2
import jsonschema
import numpy as np
import pytest
from pycocotools import mask as coco
from support.broker import Mosquitto
from support.subscriber import Subscriber

from edge_sdk.masks import polygons_to_bitmap
from edge_sdk.mqtt import payloads
from edge_sdk.mqtt.link import FleetLink
from edge_sdk.mqtt.settings import MQTTSettings
from edge_sdk.results import BBox, Detection, FrameResult, Keypoint, Keypoints, Mask, Segmentation
from edge_sdk.samples import shapes
from edge_sdk.tracking.settings import TrackingSettings
from edge_sdk.tracking.tracker import Tracker

W, H = 640, 480
LIMIT = payloads.MAX_PAYLOAD_BYTES
NAMES = ("nose", "left_eye", "right_eye", "left_shoulder", "right_shoulder", "left_hip", "right_hip")
BONES = ((0, 1), (0, 2), (3, 4), (3, 5), (4, 6), (5, 6))


class Run:
    """What the link reads of a run: one camera whose newest frame is ``frame``."""

    def __init__(self, frame: np.ndarray | None = None) -> None:
        self.frame = frame

    def info(self) -> dict:
        return {"model": {"name": "payload-test"}, "cameras": [{"camera": "main"}]}

    def status(self) -> dict:
        engine = {"state": "ok", "detail": None, "restarts": 0, "hangs": 0, "failures": 0, "lost_frames": 0}
        return {"cameras": [], "engine": engine}

    def latest(self, camera: str):
        return None if self.frame is None else (self.frame, (), None)

    def camera_ids(self) -> list[str]:
        return ["main"]

    def watched_labels(self) -> list[str]:
        return []


@pytest.fixture
def broker(tmp_path):
    # The limit AWS IoT Core enforces, enforced by the broker: an oversize message would not arrive.
    with Mosquitto(tmp_path / "broker", extra=f"message_size_limit {LIMIT}") as running:
        yield running


def publish(broker, tmp_path, results, *, device: str, frame: np.ndarray | None = None, snapshot: bool = False,
            expected: int | None = None, **options) -> tuple[list, FleetLink]:
    """Publish ``results`` through a fleet link (default publish mode: on_detection); every message
    the broker delivered on its detections topic (and snapshot topic), raw, once ``expected`` (default:
    one per result) have arrived and the link has closed (so any extra one would be there too)."""
    settings = MQTTSettings(broker=broker.url, device_id=device, outbox={"path": str(tmp_path / f"{device}.sqlite3")},
                            reconnect_min_s=0.1, reconnect_max_s=0.5, **options)
    subscriber = Subscriber(broker.port, f"edge/{device}/#")
    link = FleetLink(settings, Run(frame)).start()
    try:
        assert link.publisher.wait_online(20)
        for result in results:
            link.on_result(result.for_camera("main"))  # as the runtime hands them over
        if snapshot:
            assert link.publish_snapshot("main", force=True)
        expected = (len(results) if expected is None else expected) + int(snapshot)
        kinds = ("/detections", "/snapshot")
        assert subscriber.wait_for(lambda s: sum(m.topic.endswith(kinds) for m in s.messages) >= expected, 30), \
            broker.log()[-3000:]
    finally:
        link.close()
        subscriber.close()
    return [m for m in subscriber.messages if m.topic.endswith(kinds)], link


def validated(message) -> dict:
    assert len(message.payload) <= LIMIT
    body = json.loads(message.payload)
    jsonschema.validate(body, payloads.schema("detections"))
    return body


def shape_mask(rng, class_id: int, size: float) -> np.ndarray:
    shape = shapes.Shape(class_id, rng.uniform(80, W - 80), rng.uniform(80, H - 80), size, rng.uniform(0, 360), (0, 0, 0))
    return shapes._mask(shape, H, W) > 127


def instances(seed: int = 1) -> tuple[FrameResult, list[np.ndarray]]:
    """A frame with a mask for each of the four shapes and a posed person with named keypoints."""
    rng = np.random.default_rng(seed)
    fulls = [shape_mask(rng, class_id, rng.uniform(40, 160)) for class_id in range(4)]
    detections = [Detection(c, shapes.CLASSES[c], 0.9, BBox(0, 0, 1, 1), mask=Mask.from_full(full)) for c, full in enumerate(fulls)]
    points = tuple(Keypoint(0.3 + 0.05 * i, 0.2 + 0.08 * i, 0.3 if i == 6 else 0.9, name) for i, name in enumerate(NAMES))
    detections.append(Detection(4, "person", 0.8, BBox(0.25, 0.15, 0.7, 0.8), keypoints=Keypoints(points, BONES)))
    return FrameResult(7, time.time(), (W, H), tuple(detections)), fulls


def test_instance_masks_and_keypoints_arrive_valid_and_decode_to_their_pixels(broker, tmp_path):
    result, fulls = instances()
    (poly,), _ = publish(broker, tmp_path, [result], device="poly")
    (rle,), _ = publish(broker, tmp_path, [result], device="rle", masks="rle")
    for message in (poly, rle):
        body = validated(message)
        assert "truncated" not in body
        assert body["keypoint_names"] == list(NAMES) and body["skeleton"] == [list(b) for b in BONES]
        person = body["detections"][4]
        assert "mask" not in person and len(person["keypoints"]) == len(NAMES)
        assert person["keypoints"][6] == [0.6, 0.68, 0.3]
    for full, detection in zip(fulls, validated(rle)["detections"]):
        rle_mask = detection["mask"]["rle"]
        decoded = coco.decode({"size": rle_mask["size"], "counts": rle_mask["counts"].encode()}).astype(bool)
        assert np.array_equal(decoded, full)  # exact, read by the reference COCO tools
    for full, detection in zip(fulls, validated(poly)["detections"]):
        drawn = polygons_to_bitmap(detection["mask"]["polygons"], (W, H))
        assert np.count_nonzero(drawn & full) / np.count_nonzero(drawn | full) >= 0.95
        assert sum(len(p) // 2 for p in detection["mask"]["polygons"]) <= 100


def test_a_semantic_frame_carries_its_class_areas_and_masks(broker, tmp_path):
    rng = np.random.default_rng(2)
    class_map = np.zeros((H, W), np.uint8)
    class_map[300:, :] = 1  # road: the bottom 180 rows
    person = shape_mask(rng, 0, 90)
    class_map[person] = 2
    seg = Segmentation(class_map, ("background", "road", "person"))
    result = FrameResult(1, time.time(), (W, H), (), segmentation=seg)
    (poly,), _ = publish(broker, tmp_path, [result], device="sem")  # publish mode on_detection: a map is a sighting
    (summary,), _ = publish(broker, tmp_path, [result], device="sem-summary", masks="summary")
    body = validated(poly)["segmentation"]
    counts = np.bincount(class_map.ravel(), minlength=3) / class_map.size
    assert body["areas"] == {label: round(float(counts[i]), 4) for i, label in sorted(enumerate(seg.labels), key=lambda x: -counts[x[0]])}
    assert [m["label"] for m in body["masks"]] == ["road", "person"]  # largest first, no background
    for entry in body["masks"]:
        truth = class_map == entry["class_id"]
        drawn = polygons_to_bitmap(entry["mask"]["polygons"], (W, H))
        assert np.count_nonzero(drawn & truth) / np.count_nonzero(drawn | truth) >= 0.95
    assert validated(summary)["segmentation"] == {"areas": body["areas"]}


def ragged(rng, count: int, *, size: int) -> list[Mask]:
    """Large masks with ragged edges and holes: expensive in RLE and in polygons alike."""
    out = []
    for _ in range(count):
        noise = cv2.GaussianBlur(rng.random((size, size)).astype(np.float32), (0, 0), sigmaX=3)
        bitmap = noise > np.quantile(noise, 0.4)
        x, y = int(rng.integers(0, W - size)), int(rng.integers(0, H - size))
        out.append(Mask(x, y, bitmap, (W, H)))
    return out


def test_an_oversize_frame_arrives_degraded_and_under_the_limit(broker, tmp_path):
    rng = np.random.default_rng(3)
    big = FrameResult(1, time.time(), (W, H), tuple(
        Detection(i % 4, shapes.CLASSES[i % 4], float(rng.uniform(0.3, 1)), BBox(0, 0, 0.5, 0.5), mask=mask)
        for i, mask in enumerate(ragged(rng, 150, size=200))))
    points = tuple(Keypoint(float(x), float(y), 0.9, name) for (x, y), name in zip(rng.random((len(NAMES), 2)), NAMES))
    huge = FrameResult(2, time.time(), (W, H), tuple(
        Detection(0, "person", float(s), BBox(0, 0, 0.1, 0.1), mask=mask, keypoints=Keypoints(points, BONES))
        for s, mask in zip(rng.uniform(0.2, 1, 1600), ragged(rng, 1600, size=24))))
    for result in (big, huge):  # truly over the limit as they stand
        assert payloads.size(result.to_json(masks="rle")) > LIMIT
    started = time.perf_counter()
    messages, link = publish(broker, tmp_path, [big, huge], device="big", masks="rle")
    assert time.perf_counter() - started < 30
    by_frame = {b["frame"]: b for b in map(validated, messages)}
    assert len(messages) == 2 and link.truncated == 2 and link.oversize == 0
    fewer = by_frame[1]
    assert fewer["truncated"] == ["rle", "vertices"]  # polygons instead of RLE, then fewer vertices
    assert all("polygons" in d["mask"] for d in fewer["detections"]) and len(fewer["detections"]) == 150
    assert max(sum(len(p) // 2 for p in d["mask"]["polygons"]) for d in fewer["detections"]) < 100
    least = by_frame[2]
    assert least["truncated"] == ["masks", "keypoints", "detections"]
    kept = least["detections"]
    assert least["detections_dropped"] == 1600 - len(kept) and 0 < len(kept) < 1600
    assert all("mask" not in d and "keypoints" not in d for d in kept) and "keypoint_names" not in least
    threshold = min(d["score"] for d in kept)  # the best-scoring detections were kept
    assert sum(d.score > threshold + 1e-5 for d in huge.detections) <= len(kept)


def test_a_snapshot_of_a_large_frame_is_fitted_under_the_limit(broker, tmp_path):
    frame = np.random.default_rng(4).integers(0, 256, (1080, 1920, 3), dtype=np.uint8)  # noise: JPEG's worst case
    assert len(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 80])[1]) > LIMIT
    (snapshot,), _ = publish(broker, tmp_path, [], device="snap", frame=frame, snapshot=True)
    assert len(snapshot.payload) <= LIMIT
    assert cv2.imdecode(np.frombuffer(snapshot.payload, np.uint8), cv2.IMREAD_COLOR) is not None


def test_tracked_instances_keep_their_mask_and_keypoints_and_coasting_ones_have_none(broker, tmp_path):
    tracker = Tracker(TrackingSettings(min_hits=2))
    points = Keypoints(tuple(Keypoint(0.5, 0.5, 0.9, name) for name in NAMES), BONES)
    results, masks = [], []
    for i in range(4):
        full = np.zeros((H, W), bool)
        full[100:220, 100 + 10 * i : 180 + 10 * i] = True
        full[130:150, 120 + 10 * i : 140 + 10 * i] = False  # a hole
        mask = Mask.from_full(full)
        masks.append(mask)
        box = BBox((100 + 10 * i) / W, 100 / H, (180 + 10 * i) / W, 220 / H)
        step = tracker.update([Detection(0, "circle", 0.9, box, mask=mask, keypoints=points)], float(i), threshold=0.5)
        results.append(FrameResult(i, time.time(), (W, H), step.tracked))
    step = tracker.update([], 4.0, threshold=0.5)  # missed: the track coasts
    assert step.coasting and all(d.mask is None and d.keypoints is None for d in step.coasting)
    tracked = [r for r in results if r.detections]
    assert len(tracked) == 3  # confirmed from the second frame on
    for result in tracked:
        (detection,) = result.detections
        assert detection.track_id is not None and detection.mask == masks[result.index] and detection.keypoints == points
    changes, _ = publish(broker, tmp_path, tracked, device="changes", publish="on_change", expected=1)
    assert len(changes) == 1 and validated(changes[0])["frame"] == tracked[0].index  # the same label: one message
    messages, _ = publish(broker, tmp_path, tracked, device="tracks", masks="rle", publish="every_frame")
    assert len(messages) == 3
    for message in messages:
        body = validated(message)
        (detection,) = body["detections"]
        assert detection["track_id"] == tracked[0].detections[0].track_id
        rle = detection["mask"]["rle"]
        decoded = coco.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)
        assert np.array_equal(decoded, masks[body["frame"]].full())
