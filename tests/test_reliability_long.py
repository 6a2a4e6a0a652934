"""The runtime's reliability gates, long tier (about 100 minutes): the fast tier's scenarios at full size.

Skipped unless asked for (tests/conftest.py)::

    EDGE_SDK_LONG=1 python -m pytest -q tests/test_reliability_long.py

It writes reliability-report.md (or ``$EDGE_SDK_REPORT``) with a PNG per plot next to it. Smaller
sizes, to try the tier out: ``EDGE_SDK_LONG_CYCLES`` (freezes and drops each, default 20),
``EDGE_SDK_LONG_OFFLINE_S`` (default 1800) and ``EDGE_SDK_LONG_SOAK_S`` (default 3600).
"""

from __future__ import annotations

import os

import pytest

from support.broker import Mosquitto
from support.media import FFMPEG
from support.reliability.report import record
from support.reliability.scenarios import (
    CameraSize, OfflineSize, Soak, SoakSize, camera_gate, offline_gate, small_bundle, soak_slope_bound,
)

CYCLES = int(os.environ.get("EDGE_SDK_LONG_CYCLES", "20"))
OFFLINE_S = float(os.environ.get("EDGE_SDK_LONG_OFFLINE_S", "1800"))
SOAK_S = float(os.environ.get("EDGE_SDK_LONG_SOAK_S", "3600"))

# Outages are held from "until it is seen" to 20 s, so recovery starts at every stage of the backoff.
CAMERA = CameraSize(freezes=CYCLES, drops=CYCLES, late_s=20.0, holds_s=(0.0, 6.0, 12.0, 20.0))
# 20 events/s; the product's reconnect delays (0.5 s doubling to 30 s); a cap of a quarter of the events.
OFFLINE = OfflineSize(seconds=OFFLINE_S, rate=20.0, cap=max(10, min(5000, round(OFFLINE_S * 20.0) // 4)), reconnect_max_s=30.0)
SOAK_WARMUP_S = min(300.0, SOAK_S / 4)
SOAK = SoakSize(seconds=SOAK_S, warmup_s=SOAK_WARMUP_S, fps=25.0, slope_bound_mb_h=soak_slope_bound(SOAK_S - SOAK_WARMUP_S))

pytestmark = [pytest.mark.long, pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is not installed (apt-get install ffmpeg)")]


@pytest.fixture(scope="module")
def bundle(digits, tmp_path_factory):
    return small_bundle(digits, tmp_path_factory.mktemp("reliability-bundle"))


@pytest.mark.timeout(120 + 2 * CYCLES * 60)
def test_camera_freezes_drops_and_a_late_start_are_seen_told_and_recovered(bundle, mosquitto, tmp_path):
    record(camera_gate(bundle, mosquitto, tmp_path, CAMERA), long_tier=True)


@pytest.mark.timeout(OFFLINE_S + 300)
def test_an_offline_backlog_is_capped_counted_and_drained_on_one_connection(mosquitto, tmp_path):
    record(offline_gate(mosquitto, tmp_path, OFFLINE), long_tier=True)


@pytest.mark.timeout(SOAK_S * 3 + 300)
def test_soak_keeps_memory_descriptors_and_threads_flat_and_loses_nothing(bundle, tmp_path):
    with Mosquitto(tmp_path / "mosquitto") as broker:
        run = Soak(bundle, broker, tmp_path, SOAK)
        try:
            section = run.finish()
        finally:
            run.kill()
    record(section, long_tier=True)
