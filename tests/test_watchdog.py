"""The inference watchdog: a hung or failed engine is noticed, restarted within the limiter, and the
fleet is told; an engine in a child process (``watchdog.isolate``) is killed when it hangs and
survived when it crashes.

Faults are real: the engine's child process is stopped with SIGSTOP (a hang in native code, as an
Edge TPU on a flaky USB port does) and killed with SIGKILL (a segfault's effect); a plugin decoder,
which runs inside the stage the watchdog times, hangs or raises on cue (tests/support/decoders/misbehaving.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import jsonschema
import numpy as np
import psutil
import pytest
import yaml

from edge_sdk.backends import open_engine
from edge_sdk.backends.worker import EngineCrashed, EngineProcess
from edge_sdk.bundle import open_bundle
from edge_sdk.config import RunConfig
from edge_sdk.errors import EngineError
from edge_sdk.mqtt import payloads
from edge_sdk.pipeline import RestartLimiter, open_pipeline
from edge_sdk.sources import open_source
from support import child_env, wait
from support.decoders import misbehaving as misbehaving_decoder
from support.media import FFMPEG, ffmpeg_testsrc
from support.reliability.scenarios import small_bundle
from support.subscriber import Subscriber

pytestmark = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is not installed (apt-get install ffmpeg)")


@pytest.fixture(scope="module")
def bundle(digits, tmp_path_factory) -> Path:
    return small_bundle(digits, tmp_path_factory.mktemp("watchdog-bundle"))


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return ffmpeg_testsrc(tmp_path_factory.mktemp("watchdog-video") / "testsrc.mp4", seconds=4.0, size="64x64")


@pytest.fixture
def plugin_bundle(bundle, tmp_path) -> Path:
    """The bundle with tests/support/decoders/misbehaving.py as its decoder."""
    copy = tmp_path / "plugin-bundle"
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / "edge-bundle.json").read_text())
    manifest["decoder"] = {"kind": "plugin:support.decoders.misbehaving:decode", "options": {}}
    (copy / "edge-bundle.json").write_text(json.dumps(manifest))
    yield copy
    misbehaving_decoder.release.set()  # a call still hung in a stage the watchdog left ends now
    misbehaving_decoder.reset()


def engine_children(pid: int | None = None) -> list[psutil.Process]:
    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if "edge_sdk.backends.worker" in child.cmdline() and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


class Run:
    """``pipeline.run`` on its own thread, keeping when each result arrived and every health change."""

    def __init__(self, pipeline, source) -> None:
        self.pipeline, self.arrivals, self.health, self.error = pipeline, [], [], None
        pipeline.health_listeners.append(lambda h: self.health.append((time.monotonic(), h.state, h.detail)))
        self.thread = threading.Thread(target=self._run, args=(source,), daemon=True)
        self.thread.start()

    def _run(self, source) -> None:
        try:
            for _ in self.pipeline.run(source):
                self.arrivals.append(time.monotonic())
        except EngineError as exc:
            self.error = exc

    def results_after(self, t: float) -> int:
        return sum(1 for a in list(self.arrivals) if a > t)

    def first_result_after(self, t: float) -> float | None:
        return next((a for a in list(self.arrivals) if a > t), None)


def config(**watchdog) -> RunConfig:
    return RunConfig.model_validate({"fps": 20, "threshold": 0.0, "watchdog": watchdog})


def live(video: Path):
    return open_source(str(video), fps=20, loop=True)


# -- the restart limiter ------------------------------------------------------------------------


def test_the_limiter_pauses_longer_each_time_gives_up_at_its_limit_and_forgets_old_restarts():
    limiter = RestartLimiter(limit=3, window_s=60)
    assert [limiter.next(t) for t in (0, 1, 2)] == [0.0, 1.0, 2.0]
    assert limiter.next(3) is None  # a fourth within the window: give up
    assert limiter.next(61.5) == 1.0  # the first two have left the window: this is its second restart
    assert RestartLimiter(limit=0, window_s=60).next(0) is None


# -- the engine in a child process ----------------------------------------------------------------


def test_an_engine_process_answers_exactly_as_the_engine_in_this_process(bundle, digits):
    local = open_engine(open_bundle(bundle))
    remote = EngineProcess(bundle, threads=1)
    try:
        assert [(s["shape"], s["dtype"], s["quantization"]) for s in remote.input_specs()] == \
               [(s["shape"], s["dtype"], s["quantization"]) for s in local.input_specs()]
        spec = local.input_specs()[0]
        for image in digits["images"][:20]:
            x = image[None].astype(spec["dtype"])
            (want,), (got,) = local.run([x]), remote.run([x])
            assert got.dtype == want.dtype and np.array_equal(got, want)
    finally:
        remote.close()
    assert not engine_children()


def test_a_killed_engine_process_fails_its_call_at_once_naming_the_signal(bundle):
    engine = EngineProcess(bundle, threads=1)
    x = np.zeros(engine.input_specs()[0]["shape"], engine.input_specs()[0]["dtype"])
    engine.run([x])
    os.kill(engine.pid, signal.SIGKILL)
    with pytest.raises(EngineCrashed, match="died during an inference \\(killed by SIGKILL\\)"):
        engine.run([x])
    engine.close()


def test_a_stopped_engine_process_is_killed_by_abort_which_wakes_the_waiting_call(bundle):
    engine = EngineProcess(bundle, threads=1)
    x = np.zeros(engine.input_specs()[0]["shape"], engine.input_specs()[0]["dtype"])
    pid = engine.pid
    os.kill(pid, signal.SIGSTOP)
    timer = threading.Timer(0.5, engine.abort, args=("hung for 0.5 s",))
    timer.start()
    start = time.monotonic()
    with pytest.raises(EngineCrashed, match="hung for 0.5 s"):
        engine.run([x])
    assert time.monotonic() - start < 5
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    fds = len(os.listdir("/proc/self/fd"))
    engine.close()
    assert len(os.listdir("/proc/self/fd")) < fds  # its socket is freed


def test_an_engine_process_that_cannot_open_the_bundle_says_why_in_one_line(bundle, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    (broken / "model.tflite").write_bytes(b"not a model")
    with pytest.raises(EngineError) as caught:
        EngineProcess(broken, threads=1)
    assert "model.tflite" in str(caught.value) and "\n" not in str(caught.value)
    assert not engine_children()


# -- the pipeline's watchdog ----------------------------------------------------------------------


def test_a_hung_inference_is_given_up_on_and_a_fresh_engine_takes_over(plugin_bundle, video):
    misbehaving_decoder.reset(hang_at={10})
    pipeline = open_pipeline(plugin_bundle, config=config(hang_s=1.5))
    run = Run(pipeline, live(video))
    try:
        assert wait(lambda: misbehaving_decoder.calls >= 10, 20)
        hung = time.monotonic()
        assert wait(lambda: run.results_after(hung) >= 10, 20), run.health
        back = run.first_result_after(hung) - hung
        assert back <= 1.5 + 0.5 + 5, f"results came back {back:.1f} s after the hang"
        states = [state for _, state, _ in run.health]
        assert states == ["degraded", "ok"], run.health
        assert "took over 1.5 s (hung)" in run.health[0][2]
        health = pipeline.health
        assert (health.hangs, health.restarts, health.lost_frames) == (1, 1, 1)
    finally:
        pipeline.config = pipeline.config.model_copy(update={"max_frames": 1})
        run.thread.join(15)
    assert not run.thread.is_alive() and run.error is None


def test_a_stopped_then_killed_engine_process_is_replaced_and_frames_keep_coming(bundle, video):
    pipeline = open_pipeline(bundle, config=config(isolate=True, hang_s=2))
    run = Run(pipeline, live(video))
    try:
        assert wait(lambda: len(run.arrivals) >= 10, 30)
        stopped = pipeline.engine.pid
        os.kill(stopped, signal.SIGSTOP)
        t_stop = time.monotonic()
        assert wait(lambda: run.results_after(t_stop + 2) >= 5, 20), run.health
        assert run.first_result_after(t_stop + 2) - t_stop <= 2 + 0.5 + 10
        assert not psutil.pid_exists(stopped) or psutil.Process(stopped).status() == psutil.STATUS_ZOMBIE
        killed = pipeline.engine.pid
        assert killed != stopped
        os.kill(killed, signal.SIGKILL)
        t_kill = time.monotonic()
        assert wait(lambda: run.results_after(t_kill + 0.1) >= 5, 20), run.health
        assert [state for _, state, _ in run.health] == ["degraded", "ok", "degraded", "ok"], run.health
        assert "killed by SIGKILL" in run.health[2][2]
        assert (pipeline.health.hangs, pipeline.health.restarts) == (1, 2)
        assert [p.pid for p in engine_children()] == [pipeline.engine.pid]  # one engine, the current one
    finally:
        pipeline.config = pipeline.config.model_copy(update={"max_frames": 1})
        run.thread.join(15)
        pipeline.close()
    assert run.error is None
    assert wait(lambda: not engine_children(), 10)


def test_a_failure_that_a_fresh_engine_repeats_stops_the_run_after_one_restart(plugin_bundle, video):
    from edge_sdk.runtime import Runtime

    misbehaving_decoder.reset(fail="same")
    settings = RunConfig.model_validate({**config().model_dump(), "source": str(video), "loop": True, "http": "127.0.0.1:0"})
    with Runtime(plugin_bundle, settings) as runtime:
        view, pipeline = runtime.view, runtime.pipeline
        runtime.start()
        with pytest.raises(EngineError) as stopped:
            runtime.wait(30)
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{view.port}/healthz", timeout=5)
            raise AssertionError("/healthz answered 200 after the engine was given up on")
        except urllib.error.HTTPError as exc:
            assert exc.code == 503
            health = json.loads(exc.read())
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{view.port}/metrics", timeout=5).read().decode()
    assert str(stopped.value) == "the inference engine failed again after a restart: RuntimeError: the decoder's device went away"
    assert pipeline.health.restarts == 1 and pipeline.health.state == "failed"
    assert health["status"] == "engine failed" and "a fresh engine failed the same way" in health["reason"], health
    assert "edge_sdk_engine_healthy 0.0" in metrics and "edge_sdk_engine_restarts_total 1.0" in metrics


def test_failures_past_the_limit_stop_the_run_with_the_reason(plugin_bundle, video):
    misbehaving_decoder.reset(fail="new")
    pipeline = open_pipeline(plugin_bundle, config=config(max_restarts=2, window_s=60))
    run = Run(pipeline, live(video))
    run.thread.join(30)
    assert not run.thread.is_alive()
    assert isinstance(run.error, EngineError)
    assert "keeps failing" in str(run.error) and "2 restarts within 60 s, giving up" in str(run.error)
    assert pipeline.health.restarts == 2 and [s for _, s, _ in run.health][-1] == "failed"


# -- end to end: `edge-sdk run` and the fleet -----------------------------------------------------


def _status(collector: Subscriber, device: str) -> list[dict]:
    return collector.payloads(f"{device}/status")


def test_run_restarts_a_hung_engine_within_20_s_and_the_fleet_sees_degraded_then_online(bundle, video, mosquitto, tmp_path):
    """The gate, with the default watchdog (hang_s 10): engine hung -> degraded on MQTT -> detections
    again within 20 s -> online; then a crash of the fresh engine, recovered the same way."""
    device = "wd-1"
    settings = {
        "source": str(video), "loop": True, "fps": 10, "threshold": 0.0, "watchdog": {"isolate": True},
        "mqtt": {"broker": mosquitto.url, "device_id": device, "publish": "every_frame", "outbox": {"path": str(tmp_path / "outbox.sqlite3")}},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(settings))
    fleet = Subscriber(mosquitto.port, f"edge/{device}/#")
    log = open(tmp_path / "device.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "edge_sdk.cli", "run", str(bundle), "--config", str(tmp_path / "run.yaml")],
                               stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        assert fleet.wait_for(lambda c: len(c.payloads("/detections")) >= 5, 60), (tmp_path / "device.log").read_text()
        (engine,) = engine_children(process.pid)
        engine.send_signal(signal.SIGSTOP)
        t_stop = time.time()

        def recovered(after: float):
            return lambda c: any(s["state"] == "online" and s["ts"] > after for s in _status(c, device)) and \
                any(d["ts"] > after for d in c.payloads("/detections") if d["ts"] > max(
                    [s["ts"] for s in _status(c, device) if s["state"] == "degraded"] or [float("inf")]))

        assert fleet.wait_for(recovered(t_stop), 30), (tmp_path / "device.log").read_text()
        degraded = next(s for s in _status(fleet, device) if s["state"] == "degraded")
        jsonschema.validate(degraded, payloads.schema("status"))
        assert "inference engine degraded: an inference took over 10 s (hung)" in degraded["detail"]
        first_back = min(d["ts"] for d in fleet.payloads("/detections") if d["ts"] > degraded["ts"])
        assert first_back - t_stop <= 20, f"detections came back {first_back - t_stop:.1f} s after the hang"
        assert not psutil.pid_exists(engine.pid) or engine.status() == psutil.STATUS_ZOMBIE

        (fresh,) = engine_children(process.pid)
        fresh.kill()
        t_kill = time.time()
        assert fleet.wait_for(recovered(t_kill), 30), (tmp_path / "device.log").read_text()
        metrics = [m for m in fleet.payloads("/metrics") if m["ts"] > t_kill]
        assert metrics and max(m["engine_restarts"] for m in metrics) == 2
        for m in metrics:
            jsonschema.validate(m, payloads.schema("metrics"))
        alerts = fleet.payloads("/alert")
        for alert in alerts:
            jsonschema.validate(alert, payloads.schema("alert"))
        assert [a["kind"] for a in alerts] == ["engine-restarted", "engine-restarted"], alerts
        assert "(hung)" in alerts[0]["detail"] and "killed by SIGKILL" in alerts[1]["detail"]
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGUSR1)  # the run prints every thread's stack: what it was stuck in
            time.sleep(1.0)
            raise AssertionError("edge-sdk run did not end within 20 s of Ctrl-C:\n"
                                 + (tmp_path / "device.log").read_text()[-6000:]) from None
        finally:
            if process.poll() is None:
                process.kill()
            log.close()
            fleet.close()
    output = (tmp_path / "device.log").read_text()
    assert "Traceback" not in output
    assert "engine ok, 2 restarts (1 hangs)" in output, output[-2000:]


def test_run_that_gives_up_on_the_engine_exits_2_with_one_line_and_keeps_the_outbox(plugin_bundle, video, mosquitto, tmp_path):
    device = "wd-2"
    outbox = tmp_path / "outbox.sqlite3"
    settings = {"source": str(video), "loop": True, "fps": 10, "threshold": 0.0,
                "mqtt": {"broker": mosquitto.url, "device_id": device, "outbox": {"path": str(outbox)}}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(settings))
    fleet = Subscriber(mosquitto.port, f"edge/{device}/#")
    env = child_env(EDGE_SDK_TEST_DECODER="fail-same")
    done = subprocess.run([sys.executable, "-m", "edge_sdk.cli", "run", str(plugin_bundle), "--config", str(tmp_path / "run.yaml")],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert errors == ["edge-sdk: error: the inference engine failed again after a restart: RuntimeError: the decoder's device went away"], done.stderr
    assert "Traceback" not in done.stderr
    assert fleet.wait_for(lambda c: any(s["state"] == "degraded" and "failed" in s.get("detail", "") for s in _status(c, device)), 10)
    assert fleet.wait_for(lambda c: _status(c, device)[-1]["state"] == "offline", 10)  # and then it said goodbye
    assert [a["kind"] for a in fleet.payloads("/alert")] == ["engine-restarted", "engine-failed"]
    assert outbox.exists()
