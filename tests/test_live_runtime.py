"""The runtime on a live stream: the metrics carry the source's dropped frames, and cmd/config's fps
is the only pacing a live source gets. Real ffmpeg RTSP stream, real bundle, real Mosquitto."""

from __future__ import annotations

import time

import jsonschema
import pytest
from test_mqtt_runtime import command, device_settings

from edge_sdk.config import RunConfig
from edge_sdk.mqtt import payloads
from edge_sdk.runtime import Runtime
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
    """The runtime with its fleet link on a live stream, in a background thread; ``consumer_s`` slows the consumer."""

    def __init__(self, bundle, broker, tmp_path, url: str, *, fps: float | None, consumer_s: float = 0.0) -> None:
        settings = device_settings(broker, tmp_path, metrics_interval_s=3600)
        self.runtime = Runtime(bundle, RunConfig(source=url, threshold=0, fps=fps, mqtt=settings)).open()
        self.link = self.runtime.link
        assert self.link.publisher.wait_online(30)
        self.arrivals: list[float] = []
        self._consumer_s = consumer_s
        self.runtime.start(on_result=self._arrived)
        camera = self.runtime.cameras[0]
        deadline = time.monotonic() + 10
        while camera.source is None and time.monotonic() < deadline:  # opened in the camera's own thread
            time.sleep(0.01)
        self.source = camera.source

    def _arrived(self, result) -> None:
        self.arrivals.append(time.monotonic())
        if self._consumer_s:
            time.sleep(self._consumer_s)

    def rate(self, seconds: float) -> float:
        """Results per second over the next ``seconds``."""
        before = len(self.arrivals)
        time.sleep(seconds)
        return (len(self.arrivals) - before) / seconds

    def stop(self) -> None:
        self.runtime.stop()
        assert self.runtime.wait(15)


@pytest.mark.timeout(120)
def test_metrics_report_the_frames_the_live_source_dropped(bundle, mosquitto, rtsp, tmp_path):
    collector = Subscriber(mosquitto.port, "edge/cam-1/metrics")
    # A consumer slower than the 25 fps stream: the source keeps the newest frame and drops the rest.
    device = LiveDevice(bundle, mosquitto, tmp_path, rtsp.url, fps=None, consumer_s=0.2)
    try:
        wait(lambda: device.source.stats().frames_dropped >= 20, 30, step=0.1)
        device.stop()
        dropped = device.source.stats().frames_dropped
        assert dropped >= 20, device.source.stats()
        device.link.publish_metrics()
        assert collector.wait_for(lambda c: any(p["frames_dropped"] == dropped for p in c.payloads("/metrics"))), \
            (dropped, [p["frames_dropped"] for p in collector.payloads("/metrics")])
        for body in collector.payloads("/metrics"):
            jsonschema.validate(body, payloads.schema("metrics"))
    finally:
        device.runtime.close()
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
        device.runtime.close()
