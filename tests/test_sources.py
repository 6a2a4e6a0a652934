"""Frame sources on real media: video files, image folders, and live RTSP/HTTP streams on loopback
that the tests freeze, kill and restart. Needs ffmpeg on PATH (Debian: apt-get install ffmpeg)."""

from __future__ import annotations

import os
import sys
import threading
import time
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_sdk.errors import ConfigError, SourceError
from edge_sdk.sources import Frame, Source, SourceEvent, SourceKind, SourceState, SourceStats, open_source, parse_spec
from edge_sdk.sources.backoff import Backoff
from edge_sdk.sources.capture import complete_pipeline, has_backend
from support import free_port, wait
from support.media import FFMPEG, HttpTsServer, RtspStream, ffmpeg_testsrc, frame_level, level_frame, write_video

needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is not installed (apt-get install ffmpeg)")

# A frozen or killed stream must be noticed and recovered within these (seconds).
STALL_TARGET_S = 5.0
RECOVERY_TARGET_S = 10.0


# -- helpers -------------------------------------------------------------------------------------
class Recorder:
    """Collects events with the monotonic time they arrived."""

    def __init__(self) -> None:
        self.events: list[tuple[float, SourceEvent]] = []

    def __call__(self, event: SourceEvent) -> None:
        self.events.append((time.monotonic(), event))

    def states(self) -> list[str]:
        return [event.state.value for _, event in self.events]

    def first(self, state: SourceState, *, after: float = 0.0) -> float | None:
        return next((t for t, event in self.events if event.state == state and t >= after), None)


class Consumer:
    """Iterates a source's frames on a thread, as the pipeline does, recording arrival times."""

    def __init__(self, source: Source, *, work_s: float = 0.0) -> None:
        self.source = source
        self.arrivals: list[tuple[float, Frame]] = []
        self.error: BaseException | None = None
        self._work_s = work_s
        self._thread = threading.Thread(target=self._run, name="test-consumer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for frame in self.source.frames():
                self.arrivals.append((time.monotonic(), frame))
                if self._work_s:
                    time.sleep(self._work_s)
        except BaseException as exc:
            self.error = exc

    def count_after(self, t: float) -> int:
        return sum(1 for arrived, _ in self.arrivals if arrived > t)

    def first_after(self, t: float) -> float | None:
        return next((arrived for arrived, _ in self.arrivals if arrived > t), None)

    def stop(self) -> None:
        self.source.close()
        self._thread.join(10)
        assert not self._thread.is_alive(), "frames() did not end after close()"


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def source_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("source-")]


@pytest.fixture
def baseline():
    """Asserts the test leaves no extra threads or file descriptors behind once sources are closed."""
    threads, fds = threading.active_count(), open_fds()
    yield
    assert source_threads() == []
    assert threading.active_count() == threads
    assert open_fds() == fds


# -- specs and options ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "kind", "target"),
    [
        ("0", SourceKind.CAMERA, 0),
        ("/dev/video2", SourceKind.CAMERA, "/dev/video2"),
        ("rtsp://10.0.0.5:554/stream1", SourceKind.STREAM, "rtsp://10.0.0.5:554/stream1"),
        ("https://cam.local/mjpeg", SourceKind.STREAM, "https://cam.local/mjpeg"),
        ("gst:libcamerasrc ! appsink", SourceKind.GSTREAMER, "libcamerasrc ! appsink"),
        ("nvarguscamerasrc ! nvvidconv ! video/x-raw,format=BGRx", SourceKind.GSTREAMER,
         "nvarguscamerasrc ! nvvidconv ! video/x-raw,format=BGRx"),
        ("picamera2", SourceKind.PICAMERA2, 0),
        ("picamera2:1", SourceKind.PICAMERA2, 1),
    ],
)
def test_spec_kinds(spec, kind, target):
    parsed = parse_spec(spec)
    assert (parsed.kind, parsed.target) == (kind, target)


def test_spec_paths(tmp_path):
    write_video(tmp_path / "clip.avi", 2)
    cv2.imwrite(str(tmp_path / "a.png"), level_frame(0))
    assert parse_spec(str(tmp_path)).kind == SourceKind.IMAGES
    assert parse_spec(str(tmp_path / "*.png")).kind == SourceKind.IMAGES
    assert parse_spec(str(tmp_path / "a.png")).kind == SourceKind.IMAGES
    assert parse_spec(str(tmp_path / "clip.avi")).kind == SourceKind.VIDEO
    with pytest.raises(SourceError, match="nope.mp4 does not exist"):
        open_source(str(tmp_path / "nope.mp4"))


def test_stream_names_hide_passwords():
    assert parse_spec("rtsp://admin:hunter2@10.0.0.5/live").name == "rtsp://admin:***@10.0.0.5/live"


@pytest.mark.parametrize(
    ("spec", "options", "message"),
    [
        ("0", {"fps": 0}, "fps must be a positive"),
        ("0", {"stall_after_s": -1}, "stall_after_s must be a positive"),
        ("0", {"open_timeout_s": float("nan")}, "open_timeout_s must be a positive"),
        ("0", {"retries": -1}, "retries must be None"),
        ("0", {"backoff_initial_s": 5.0, "backoff_max_s": 1.0}, "backoff_max_s"),
        ("0", {"loop": True}, "loop applies to video files"),
        ("ftp://example.com/x.mp4", {}, "unsupported URL scheme 'ftp'"),
        ("  ", {}, "spec must name a source"),
    ],
)
def test_bad_arguments_name_the_argument(spec, options, message):
    with pytest.raises(ConfigError, match=message):
        open_source(spec, **options)


def test_backoff_doubles_up_to_the_cap_with_jitter():
    backoff = Backoff(0.5, 4.0)
    for attempt, cap in enumerate([0.5, 1.0, 2.0, 4.0, 4.0, 4.0]):
        delays = [backoff.delay(attempt) for _ in range(50)]
        assert all(cap * 0.5 <= d <= cap for d in delays)
        assert len(set(delays)) > 1


# -- files and folders ---------------------------------------------------------------------------
def test_video_file_every_frame_in_order(tmp_path, baseline):
    events = Recorder()
    with open_source(str(write_video(tmp_path / "clip.avi", 12)), on_event=events) as source:
        assert isinstance(source, Source) and not source.live
        frames = list(source.frames())
        stats = source.stats()
    assert [frame_level(f.image) for f in frames] == list(range(12))
    assert [f.index for f in frames] == list(range(12))
    assert frames[0].image.shape == (48, 64, 3) and frames[0].image.dtype == np.uint8
    assert frames[0].source_size == (64, 48)
    assert stats == SourceStats(frames_read=12, frames_delivered=12, frames_dropped=0, reconnects=0, stalls=0, errors=0)
    assert events.states() == ["connected", "ended"]


@needs_ffmpeg
def test_ffmpeg_testsrc_video(tmp_path):
    path = ffmpeg_testsrc(tmp_path / "testsrc.mp4", seconds=1, size="160x120", rate=25)
    with open_source(str(path)) as source:
        frames = list(source.frames())
    assert len(frames) == 25
    assert {f.image.shape for f in frames} == {(120, 160, 3)}
    assert frames[0].image.std() > 20  # testsrc's colour bars, not a blank frame


def test_video_loop(tmp_path):
    with open_source(str(write_video(tmp_path / "clip.avi", 5)), loop=True) as source:
        frames = []
        for frame in source.frames():
            frames.append(frame)
            if len(frames) == 13:
                break
    assert [frame_level(f.image) for f in frames] == [0, 1, 2, 3, 4] * 2 + [0, 1, 2]
    assert [f.index for f in frames] == list(range(13))


@pytest.fixture
def image_folder(tmp_path) -> Path:
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    cv2.imwrite(str(folder / "a.png"), level_frame(1))
    cv2.imwrite(str(folder / "b_gray.png"), level_frame(2, gray=True))
    cv2.imwrite(str(folder / "c_odd.png"), level_frame(3, size=(33, 17)))
    (folder / "d_broken.jpg").write_bytes(b"not a jpeg at all")
    cv2.imwrite(str(folder / "e.jpg"), level_frame(5))
    cv2.imwrite(str(folder / "sub" / "f.png"), level_frame(6))
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_image_folder_as_is_and_skips_unreadable(image_folder, baseline):
    events = Recorder()
    with open_source(str(image_folder), on_event=events) as source:
        frames = list(source.frames())
        stats = source.stats()
    assert [frame_level(f.image) for f in frames] == [1, 2, 3, 5, 6]
    assert [f.index for f in frames] == [0, 1, 2, 4, 5]
    assert frames[1].is_gray and frames[1].image.shape == (48, 64)
    assert frames[2].image.shape == (17, 33, 3) and frames[2].source_size == (33, 17)
    assert stats.errors == 1 and stats.frames_delivered == 5 and stats.frames_read == 6
    assert events.states() == ["connected", "skipped", "ended"]
    assert "d_broken.jpg" in events.events[1][1].detail


def test_glob_and_single_image(image_folder):
    with open_source(str(image_folder / "*.png")) as source:
        assert [frame_level(f.image) for f in source.frames()] == [1, 2, 3]
    with open_source(str(image_folder / "**" / "*.png")) as source:
        assert [frame_level(f.image) for f in source.frames()] == [1, 2, 3, 6]
    with open_source(str(image_folder / "e.jpg")) as source:
        assert [frame_level(f.image) for f in source.frames()] == [5]
    with pytest.raises(SourceError, match="matches no images"):
        open_source(str(image_folder / "*.webp"))


def test_empty_folder_and_undecodable_video(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="holds no images"):
        open_source(str(tmp_path / "empty"))
    (tmp_path / "junk.mp4").write_bytes(b"\x00" * 1000)
    with pytest.raises(SourceError, match="cannot decode video"):
        open_source(str(tmp_path / "junk.mp4"))


def test_fps_paces_playback_to_the_wall_clock(image_folder):
    started = time.monotonic()
    with open_source(str(image_folder / "*.png"), fps=10, loop=True) as source:
        frames = []
        for frame in source.frames():
            frames.append(frame)
            if len(frames) == 8:
                break
        stats = source.stats()
    elapsed = time.monotonic() - started
    assert 0.65 <= elapsed < 2.0, elapsed
    assert stats.frames_dropped == 0


def test_fps_drops_frames_to_keep_up_with_a_slow_consumer(tmp_path):
    video = write_video(tmp_path / "clip.avi", 20)
    started = time.monotonic()
    with open_source(str(video), fps=50) as source:
        frames = []
        for frame in source.frames():
            frames.append(frame)
            time.sleep(0.06)  # a consumer slower than 50 fps
        stats = source.stats()
    elapsed = time.monotonic() - started
    assert elapsed < 1.0, "real-time playback of 20 frames at 50 fps must not take 20 x 60 ms"
    assert stats.frames_read == 20
    assert stats.frames_dropped > 5
    assert stats.frames_delivered + stats.frames_dropped == 20
    levels = [frame_level(f.image) for f in frames]
    assert levels == sorted(levels) and levels == [f.index for f in frames]


def test_close_from_another_thread_ends_frames(image_folder, baseline):
    source = open_source(str(image_folder), fps=5, loop=True)
    consumer = Consumer(source)
    wait(lambda: len(consumer.arrivals) >= 2, 5, what="two frames")
    started = time.monotonic()
    consumer.stop()
    assert time.monotonic() - started < 1.0
    assert consumer.error is None


# -- live streams --------------------------------------------------------------------------------
@pytest.fixture
def rtsp():
    with RtspStream() as stream:
        yield stream.publish()


@needs_ffmpeg
@pytest.mark.timeout(60)
def test_rtsp_freeze_is_detected_and_recovered(rtsp, baseline):
    """SIGSTOP the camera: the connection stays up and data stops, the case that hangs 30 s by default."""
    events = Recorder()
    source = open_source(rtsp.url, on_event=events)
    assert source.live
    consumer = Consumer(source, work_s=0.1)  # slower than the stream's 25 fps
    wait(lambda: len(consumer.arrivals) >= 10, 10, what="the first frames")

    rtsp.freeze()
    frozen_at = time.monotonic()
    wait(lambda: events.first(SourceState.STALLED, after=frozen_at), 8, what="a stalled event")
    stalled_after = events.first(SourceState.STALLED, after=frozen_at) - frozen_at
    # Stay frozen through a reopen that gets no frames, so recovery starts from the backoff.
    wait(lambda: events.states().count("reconnecting") >= 2, 12, what="two reconnect attempts")
    assert consumer.count_after(frozen_at + 0.5) == 0, "stale frames delivered while frozen"

    rtsp.thaw()
    thawed_at = time.monotonic()
    wait(lambda: consumer.count_after(thawed_at) >= 5, RECOVERY_TARGET_S + 2, what="frames after the thaw")
    recovered_after = consumer.first_after(thawed_at) - thawed_at
    print(f"\nRTSP freeze: stalled event {stalled_after:.2f} s after SIGSTOP, "
          f"frames back {recovered_after:.2f} s after SIGCONT; events {events.states()}")
    consumer.stop()

    assert consumer.error is None
    assert stalled_after <= STALL_TARGET_S
    assert recovered_after <= RECOVERY_TARGET_S
    assert events.first(SourceState.RESUMED, after=thawed_at) is not None
    stats = source.stats()
    assert stats.stalls >= 1 and stats.reconnects >= 1
    assert stats.frames_dropped > 0, "a slow consumer must see only the newest frames"
    assert stats.frames_delivered + stats.frames_dropped <= stats.frames_read
    indices = [frame.index for _, frame in consumer.arrivals]
    assert indices == sorted(indices) and len(set(indices)) == len(indices)
    assert consumer.arrivals[-1][1].image.shape == (120, 160, 3)


@needs_ffmpeg
@pytest.mark.timeout(60)
def test_rtsp_camera_killed_and_restarted(rtsp, baseline):
    events = Recorder()
    source = open_source(rtsp.url, on_event=events, backoff_initial_s=0.25, backoff_max_s=2.0)
    consumer = Consumer(source)
    wait(lambda: len(consumer.arrivals) >= 5, 10, what="the first frames")

    rtsp.kill()
    killed_at = time.monotonic()
    wait(lambda: events.first(SourceState.STALLED, after=killed_at), 8, what="a stalled event")
    rtsp.publish()
    back_at = time.monotonic()
    wait(lambda: consumer.count_after(back_at) >= 3, RECOVERY_TARGET_S + 2, what="frames after the restart")
    recovered_after = consumer.first_after(back_at) - back_at
    print(f"\nRTSP kill: stalled {events.first(SourceState.STALLED, after=killed_at) - killed_at:.2f} s after "
          f"SIGKILL, frames back {recovered_after:.2f} s after restart")
    consumer.stop()
    assert consumer.error is None
    assert recovered_after <= RECOVERY_TARGET_S
    assert source.stats().reconnects >= 1


@needs_ffmpeg
@pytest.mark.timeout(60)
def test_http_stream_server_killed_and_restarted(baseline):
    server = HttpTsServer().start()
    try:
        events = Recorder()
        source = open_source(server.url, on_event=events)
        consumer = Consumer(source)
        wait(lambda: len(consumer.arrivals) >= 5, 10, what="the first frames")

        server.stop()
        killed_at = time.monotonic()
        wait(lambda: events.first(SourceState.STALLED, after=killed_at), 8, what="a stalled event")
        stalled_after = events.first(SourceState.STALLED, after=killed_at) - killed_at
        assert events.first(SourceState.RECONNECTING, after=killed_at) is not None
        server.start()
        back_at = time.monotonic()
        wait(lambda: consumer.count_after(back_at) >= 3, RECOVERY_TARGET_S + 2, what="frames after the restart")
        recovered_after = consumer.first_after(back_at) - back_at
        print(f"\nHTTP kill: stalled event {stalled_after:.2f} s after SIGKILL, "
              f"frames back {recovered_after:.2f} s after restart")
        consumer.stop()
    finally:
        server.stop()
    assert consumer.error is None
    assert stalled_after <= STALL_TARGET_S
    assert recovered_after <= RECOVERY_TARGET_S


@needs_ffmpeg
@pytest.mark.timeout(30)
def test_live_fps_does_not_pace_delivery(rtsp, baseline):
    # The pipeline's RunConfig.fps is the one cap on a live source (cmd/config changes it while it
    # runs): the source itself hands out every newest frame of the 25 fps stream.
    with open_source(rtsp.url, fps=5) as source:
        frames = source.frames()
        next(frames)
        count, started = 0, time.monotonic()
        while time.monotonic() - started < 3.0:
            next(frames)
            count += 1
    assert count > 1.6 * 5 * 3.0, count  # paced to 5 fps it would be about 15


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["rtsp", "http", "camera"])
def test_source_that_never_exists_fails_after_retries(kind, baseline):
    spec = {
        "rtsp": f"rtsp://127.0.0.1:{free_port()}/nothing",
        "http": f"http://127.0.0.1:{free_port()}/nothing.ts",
        "camera": "/dev/video99",
    }[kind]
    events = Recorder()
    started = time.monotonic()
    with open_source(spec, retries=2, backoff_initial_s=0.1, backoff_max_s=0.2, on_event=events) as source:
        with pytest.raises(SourceError, match=f"gave up on {spec} after 3 failed attempts"):
            next(source.frames())
    assert time.monotonic() - started < 3.0
    assert events.states() == ["reconnecting", "reconnecting", "failed"]


@pytest.mark.timeout(30)
def test_camera_absent_at_start_is_retried_until_closed(baseline):
    events = Recorder()
    source = open_source("/dev/video99", backoff_initial_s=0.05, backoff_max_s=0.1, stall_after_s=0.5,
                         on_event=events)
    consumer = Consumer(source)
    try:
        wait(lambda: events.states().count("reconnecting") >= 4, 5, what="repeated attempts")
        wait(lambda: events.first(SourceState.STALLED), 5, what="a stalled event")
    finally:
        consumer.stop()
    assert consumer.error is None and consumer.arrivals == []
    assert source.stats().errors >= 4


@pytest.mark.timeout(30)
def test_a_failing_event_callback_surfaces_from_frames():
    def on_event(event: SourceEvent) -> None:
        raise RuntimeError("boom")

    with open_source(f"rtsp://127.0.0.1:{free_port()}/x", on_event=on_event, backoff_initial_s=0.05) as source:
        with pytest.raises(SourceError, match="on_event callback raised RuntimeError"):
            next(source.frames())


# -- GStreamer and Picamera2 ---------------------------------------------------------------------
def test_gstreamer_pipeline_gets_an_appsink():
    assert complete_pipeline("v4l2src ! appsink") == "v4l2src ! appsink"
    completed = complete_pipeline("libcamerasrc ! video/x-raw,width=640,height=480")
    assert completed.startswith("libcamerasrc ! video/x-raw,width=640,height=480 ! videoconvert")
    assert completed.endswith("appsink drop=true max-buffers=1 sync=false")


@pytest.mark.timeout(30)
def test_gstreamer_pipeline(baseline):
    spec = "gst:videotestsrc num-buffers=50 ! video/x-raw,width=64,height=48"
    if not has_backend(cv2.CAP_GSTREAMER):
        with pytest.raises(SourceError) as info:
            open_source(spec)
        message = str(info.value)
        assert "built without GStreamer" in message and "python3-opencv" in message
        assert "\n" not in message
        return
    with open_source(spec) as source:
        frame = next(source.frames())
    assert frame.image.shape == (48, 64, 3)


def test_picamera2_missing_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # makes the import fail even on a Pi
    with pytest.raises(SourceError, match="install python3-picamera2"):
        open_source("picamera2:0")


class FakePicamera2:
    """Stands in for Picamera2 (no CSI camera here): hands out BGR frames like "RGB888" does."""

    instances: list[FakePicamera2] = []

    def __init__(self, camera_num: int = 0) -> None:
        if camera_num != 0:
            raise IndexError("list index out of range")
        self.config: dict | None = None
        self.started = self.closed = False
        self.count = 0
        FakePicamera2.instances.append(self)

    def create_video_configuration(self, main: dict, controls: dict) -> dict:
        return {"main": {**main, "size": (64, 48)}, "controls": controls}

    def configure(self, config: dict) -> None:
        self.config = config

    def start(self) -> None:
        self.started = True

    def capture_array(self, name: str = "main") -> np.ndarray:
        time.sleep(0.02)
        self.count += 1
        return level_frame(self.count % 20)

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.closed = True


@pytest.mark.timeout(30)
def test_picamera2_with_a_fake_camera(monkeypatch, baseline):
    FakePicamera2.instances = []
    monkeypatch.setitem(sys.modules, "picamera2", types.SimpleNamespace(Picamera2=FakePicamera2))
    with open_source("picamera2", fps=15) as source:
        frame = next(source.frames())
    camera = FakePicamera2.instances[0]
    assert frame.image.shape == (48, 64, 3)
    assert camera.config == {"main": {"format": "RGB888", "size": (64, 48)}, "controls": {"FrameRate": 15}}
    assert camera.closed and not camera.started

    with open_source("picamera2:3", retries=0) as source:
        with pytest.raises(SourceError, match="cannot open picamera2:3: list index out of range"):
            next(source.frames())
