"""The device runtime on real bundles made by the converter: pipeline, config, CLI, bench, doctor."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest

from edge_sdk.cli import main
from edge_sdk.config import RunConfig, load_config
from edge_sdk.converters import convert
from edge_sdk.errors import ConfigError
from edge_sdk.pipeline import keep, open_pipeline
from edge_sdk.results import BBox, Detection

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bundles(keras3_model, digits, tmp_path_factory) -> dict:
    """Real bundles of the digits classifier for three engines."""
    root = tmp_path_factory.mktemp("bundles")
    out = {}
    for name, profile in (("tflite", "rpi4"), ("openvino", "intel-cpu"), ("edgetpu", "coral-usb")):
        convert(keras3_model, profile=profile, out=root / name, calib=digits["calib"], compile=False)
        out[name] = root / name
    return out


def _digit_frame(digits, i: int, size=(240, 180)) -> tuple[np.ndarray, int]:
    """A validation digit blown up into an odd-sized camera-like frame."""
    idx = digits["val_idx"][i]
    return cv2.resize(digits["images"][idx], size, interpolation=cv2.INTER_NEAREST), int(digits["labels"][idx])


@pytest.mark.parametrize("engine", ["tflite", "openvino", "edgetpu"])
def test_pipeline_classifies_frames_with_each_engine(bundles, digits, engine):
    config = RunConfig(threshold=0.0, cpu_fallback=True)
    pipeline = open_pipeline(bundles[engine], config=config)
    hits = 0
    for i in range(60):
        frame, label = _digit_frame(digits, i)
        result = pipeline.infer(frame, index=i)
        top = result.detections[0]
        assert top.box is None and 0 <= top.score <= 1
        hits += top.class_id == label
    assert hits >= 55
    assert result.frame_size == (240, 180)


def test_uint8_models_take_pixels_without_a_float_copy(bundles):
    pipeline = open_pipeline(bundles["tflite"], config=RunConfig())
    adapter = pipeline.adapter
    assert adapter.direct
    frame = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    tensor, _ = adapter(frame)
    assert tensor.dtype == np.uint8
    np.testing.assert_array_equal(tensor[0], cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))


def test_grayscale_and_odd_frames_are_handled_and_empty_ones_refused(bundles, digits):
    pipeline = open_pipeline(bundles["tflite"], config=RunConfig(threshold=0.0))
    frame, label = _digit_frame(digits, 0, size=(97, 61))
    gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    assert pipeline.infer(gray).detections
    with pytest.raises(ValueError):
        pipeline.adapter(np.zeros((0, 0, 3), np.uint8))


def test_filters_threshold_labels_zones_and_area():
    config = RunConfig(threshold=0.5, labels=["car"], zones=[[(0, 0), (0.5, 0), (0.5, 0.5), (0, 0.5)]], min_area=0.01)
    inside = BBox(0.1, 0.1, 0.3, 0.3)
    assert keep(Detection(0, "car", 0.9, inside), config)
    assert not keep(Detection(0, "car", 0.4, inside), config)
    assert not keep(Detection(1, "bus", 0.9, inside), config)
    assert not keep(Detection(0, "car", 0.9, BBox(0.6, 0.6, 0.9, 0.9)), config)  # centre outside the zone
    assert not keep(Detection(0, "car", 0.9, BBox(0.1, 0.1, 0.105, 0.105)), config)  # too small


def test_config_file_with_field_errors_and_flag_overrides(tmp_path):
    good = tmp_path / "run.yaml"
    good.write_text("source: video.mp4\nthreshold: 0.4\nfps: 5\n")
    config = load_config(good, threshold=0.7)
    assert (config.source, config.threshold, config.fps) == ("video.mp4", 0.7, 5)
    bad = tmp_path / "bad.yaml"
    bad.write_text("source: 0\nthreshhold: 0.4\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: field 'threshhold': unknown field"):
        load_config(bad)
    bad.write_text("zones: [[[0, 0], [2, 0], [0, 1]]]\n")
    with pytest.raises(ConfigError, match="zones"):
        load_config(bad)


def test_bench_reports_percentiles_memory_and_a_histogram(bundles, tmp_path, capsys):
    plot = tmp_path / "latency.png"
    rc = main(["bench", str(bundles["tflite"]), "--frames", "50", "--json", "--plot", str(plot)])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result["engine"] == "LiteRTEngine" and result["frames"] == 50
    assert 0 < result["p50_ms"] <= result["p90_ms"] <= result["p99_ms"]
    assert result["peak_rss_mb"] > 10 and result["fps"] > 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_doctor_checks_a_bundle(bundles, capsys):
    rc = main(["doctor", str(bundles["openvino"])])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "can run bundle" in out and "ai_edge_litert" in out and "openvino devices" in out


def test_run_errors_are_one_line_exit_2(bundles, tmp_path, capsys):
    cases = [
        (["run", str(tmp_path / "missing"), "--source", "x.mp4"], "does not exist"),
        (["run", str(bundles["tflite"])], "--source is required"),
        (["run", str(bundles["tflite"]), "--source", "x.mp4", "--threshold", "2"], "threshold"),
    ]
    for args, expected in cases:
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], err


def test_running_bundles_never_imports_tensorflow(bundles):
    """Frames through every engine in a fresh process: no TensorFlow, Keras or tfmot gets loaded."""
    code = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        from edge_sdk.config import RunConfig
        from edge_sdk.pipeline import open_pipeline
        for path in {[str(p) for p in bundles.values()]!r}:
            pipeline = open_pipeline(path, config=RunConfig(cpu_fallback=True))
            result = pipeline.infer(np.zeros((48, 64, 3), np.uint8))
        # The whole runtime too: cameras, publisher, outbox, commands, updates, Home Assistant, live view (broker absent).
        import cv2
        from edge_sdk import Runtime
        from edge_sdk.mqtt.settings import MQTTSettings
        import edge_sdk.mqtt.commands, edge_sdk.mqtt.homeassistant, edge_sdk.ota.store, edge_sdk.cli_fleet
        frame = {str(bundles["tflite"].parent / "notf-frame.png")!r}
        cv2.imwrite(frame, np.zeros((48, 64, 3), np.uint8))
        settings = MQTTSettings(broker="mqtt://127.0.0.1:9", device_id="t", home_assistant=True,
                                outbox={{"path": {str(bundles["tflite"].parent / "notf-outbox.sqlite3")!r}}})
        config = RunConfig(cameras=[{{"id": "a", "source": frame}}, {{"id": "b", "source": frame}}], mqtt=settings,
                           http="127.0.0.1:0", max_frames=2)
        with Runtime({str(bundles["tflite"])!r}, config) as runtime:
            assert len(list(runtime.results())) == 2
        heavy = [m for m in ("tensorflow", "tf_keras", "keras", "tensorflow_model_optimization", "nncf") if m in sys.modules]
        print("heavy:", heavy)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "heavy: []" in proc.stdout


def _digit_video(path, digits, count: int = 40):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (240, 180))
    labels = []
    for i in range(count):
        frame, label = _digit_frame(digits, i)
        writer.write(frame)
        labels.append(label)
    writer.release()
    return path, labels


def test_run_cli_on_a_video_file_writes_every_frame_as_jsonl(bundles, digits, tmp_path, capsys):
    video, labels = _digit_video(tmp_path / "digits.avi", digits)
    out = tmp_path / "results.jsonl"
    rc = main(["run", str(bundles["tflite"]), "--source", str(video), "--jsonl", str(out), "--threshold", "0"])
    assert rc == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(len(labels)))  # a file never drops a frame
    hits = sum(line["detections"][0]["class_id"] == label for line, label in zip(lines, labels))
    assert hits >= 0.9 * len(labels)  # MJPG noise on 32 px digits costs a little
    assert "frames 40" in capsys.readouterr().err


def test_pipeline_callback_stride_and_max_frames(bundles, digits, tmp_path):
    from edge_sdk.sources import open_source

    video, _ = _digit_video(tmp_path / "digits.avi", digits)
    pipeline = open_pipeline(bundles["tflite"], config=RunConfig(stride=2, max_frames=10, threshold=0))
    seen = []
    results = list(pipeline.run(open_source(str(video)), on_result=seen.append))
    assert [r.index for r in results] == list(range(0, 20, 2))
    assert seen == results
    stats = pipeline.stats.snapshot()
    assert stats.frames_done == 10 and stats.frames_skipped >= 9
    assert stats.infer_ms_p50 > 0 and stats.latency_ms_p99 >= stats.infer_ms_p50


@pytest.mark.timeout(90)
def test_pipeline_resumes_by_itself_when_the_rtsp_camera_restarts(bundles):
    """An RTSP stream served on loopback by the test, killed mid-run and restarted."""
    import threading
    import time

    from support import wait
    from support.media import FFMPEG, RtspStream
    from edge_sdk.sources import open_source

    if FFMPEG is None:
        pytest.fail("ffmpeg is needed for the RTSP test (.ci/run installs Debian's ffmpeg)")
    pipeline = open_pipeline(bundles["tflite"], config=RunConfig(threshold=0))
    arrivals: list[float] = []
    with RtspStream() as stream:
        stream.publish()
        source = open_source(stream.url, backoff_initial_s=0.25, backoff_max_s=2.0)
        consumer = threading.Thread(
            target=lambda: [arrivals.append(time.monotonic()) for _ in pipeline.run(source)], daemon=True
        )
        consumer.start()
        wait(lambda: len(arrivals) >= 10, 15, step=0.05, what="results from the stream")
        stream.kill()
        killed = time.monotonic()
        time.sleep(4)
        stream.publish()
        back = time.monotonic()
        wait(lambda: sum(t > back for t in arrivals) >= 10, 12, step=0.05)
        source.close()
        consumer.join(10)
    after = [t for t in arrivals if t > back]
    assert len(after) >= 10, "the pipeline did not resume after the camera came back"
    assert after[0] - back <= 10
    assert not [t for t in arrivals if killed + 1.0 < t < back], "results while the camera was down"
    assert not consumer.is_alive()


@pytest.mark.parametrize("isolate", [False, True])
def test_malformed_models_are_refused_without_crashing(tmp_path, isolate):
    """Garbage after a valid-looking header: a clean error in process, and from the child-process probe
    that guards tflite-runtime boards (where such files have segfaulted the interpreter)."""
    from edge_sdk.backends.litert import LiteRTEngine
    from edge_sdk.errors import EngineError

    rng = np.random.default_rng(0)
    for i in range(4):
        content = b"\x1c\x00\x00\x00TFL3" + rng.integers(0, 256, 200 + 100 * i, dtype=np.uint8).tobytes()
        with pytest.raises(EngineError):
            LiteRTEngine(content, isolate=isolate)


def test_run_refuses_a_bundle_whose_model_was_swapped(bundles, tmp_path, capsys):
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(bundles["tflite"], copy)
    (copy / "model.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 64)
    assert main(["run", str(copy), "--source", "x.mp4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.tflite" in err[0]
