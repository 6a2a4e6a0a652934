"""The runtime on a live stream: the metrics carry the source's dropped frames, and cmd/config's fps
is the only pacing a live source gets. Real ffmpeg RTSP stream, real bundle, real Mosquitto."""

from __future__ import annotations

import threading
import time

import jsonschema
import pytest
from test_mqtt_runtime import command, device_settings

from edge_sdk.config import RunConfig
from edge_sdk.mqtt import payloads
from edge_sdk.mqtt.link import FleetLink
from edge_sdk.pipeline import open_pipeline
from edge_sdk.sources import open_source
from support import wait
from support.media import FFMPEG, RtspStream
from support.reliability.scenarios import small_bundle
from support.subscriber import Subscriber

pytestmark = [pytest.mark.slow, pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is not installed (apt-get install ffmpeg)")]


@pytest.fixture(scope="module")
def bundle(digits, tmp_path_factory):
    return small_bundle(digits, tmp_path_factory.mktemp("live-bundle"))


@pytest.fixture
def rtsp():
    with RtspStream() as stream:
        yield stream.publish(rate=25)


class LiveDevice:
    """Pipeline + fleet link on a live stream in a background thread; ``consumer_s`` slows the consumer."""

    def __init__(self, bundle, broker, tmp_path, url: str, *, fps: float | None, consumer_s: float = 0.0) -> None:
        self.pipeline = open_pipeline(bundle, config=RunConfig(threshold=0, fps=fps))
        self.link = FleetLink(self.pipeline, device_settings(broker, tmp_path, metrics_interval_s=3600), source=url).start()
        assert self.link.publisher.wait_online(30)
        # As `edge-sdk run` opens it: the same fps for the source and the pipeline.
        self.source = open_source(url, fps=fps)
        self.arrivals: list[float] = []
        self.error: list[BaseException] = []
        self._consumer_s = consumer_s
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for _ in self.pipeline.run(self.source, on_result=self.link.on_result):
                self.arrivals.append(time.monotonic())
                if self._consumer_s:
                    time.sleep(self._consumer_s)
        except BaseException as exc:
            self.error.append(exc)

    def rate(self, seconds: float) -> float:
        """Results per second over the next ``seconds``."""
        before = len(self.arrivals)
        time.sleep(seconds)
        return (len(self.arrivals) - before) / seconds

    def stop(self) -> None:
        self.source.close()
        self.thread.join(15)
        assert not self.thread.is_alive()
        assert not self.error, self.error


@pytest.mark.timeout(120)
def test_metrics_report_the_frames_the_live_source_dropped(bundle, mosquitto, rtsp, tmp_path):
    collector = Subscriber(mosquitto.port, "edge/cam-1/metrics")
    # A consumer slower than the 25 fps stream: the source keeps the newest frame and drops the rest.
    device = LiveDevice(bundle, mosquitto, tmp_path, rtsp.url, fps=None, consumer_s=0.2)
    try:
        wait(lambda: device.source.stats()["frames_dropped"] >= 20, 30, step=0.1)
        device.stop()
        dropped = device.source.stats()["frames_dropped"]
        assert dropped >= 20, device.source.stats()
        device.link.publish_metrics()
        assert collector.wait_for(lambda c: any(p["frames_dropped"] == dropped for p in c.payloads("/metrics"))), \
            (dropped, [p["frames_dropped"] for p in collector.payloads("/metrics")])
        for body in collector.payloads("/metrics"):
            jsonschema.validate(body, payloads.schema("metrics"))
    finally:
        device.link.close()
        collector.close()


@pytest.mark.timeout(120)
def test_cmd_config_raises_the_fps_of_a_live_source(bundle, mosquitto, rtsp, tmp_path):
    device = LiveDevice(bundle, mosquitto, tmp_path, rtsp.url, fps=5)
    try:
        wait(lambda: device.arrivals, 30, step=0.1, what="a result from the stream")
        before = device.rate(4.0)
        answer = command(mosquitto, "config", {"fps": 20})
        assert answer["ok"], answer
        time.sleep(0.5)
        after = device.rate(4.0)
        device.stop()
        print(f"results/s before {before:.2f}, after {after:.2f}")
        # 5 fps -> 20 fps on a 25 fps stream (the pipeline keeps one frame per 1/20 s gap: about
        # 12.5 fps): generous margins, never a timing bound.
        assert 0 < before < 8, before
        assert after > 1.6 * before, (before, after)
    finally:
        device.link.close()
