"""The runtime's reliability gates, fast tier (runs by default): camera outages under the real pipeline,
a long outage of the broker under the real publisher, and a 6-minute soak of ``edge-sdk run`` that
starts with the session and runs beside the other tests (tests/conftest.py); see
tests/support/reliability/scenarios.py. The long tier (tests/test_reliability_long.py) runs the same scenarios
at full size. With ``EDGE_SDK_REPORT=path.md`` these figures are written as that report too.
"""

from __future__ import annotations

import pytest

from support.media import FFMPEG
from support.reliability.report import record
from support.reliability.scenarios import CI_SOAK, CameraSize, OfflineSize, camera_gate, offline_gate, small_bundle

pytestmark = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is not installed (apt-get install ffmpeg)")

CAMERA = CameraSize(freezes=3, drops=3, late_s=4.0)
# 2,000 events: what 100 s offline at 20 events/s would queue, four times the outbox's cap.
OFFLINE = OfflineSize(seconds=10.0, rate=200.0, cap=500, reconnect_max_s=1.0)


@pytest.fixture(scope="module")
def bundle(digits, tmp_path_factory):
    return small_bundle(digits, tmp_path_factory.mktemp("reliability-bundle"))


@pytest.mark.timeout(150)
def test_camera_freezes_drops_and_a_late_start_are_seen_told_and_recovered(bundle, mosquitto, tmp_path):
    record(camera_gate(bundle, mosquitto, tmp_path, CAMERA), long_tier=False)


@pytest.mark.timeout(90)
def test_an_offline_backlog_is_capped_counted_and_drained_on_one_connection(mosquitto, tmp_path):
    record(offline_gate(mosquitto, tmp_path, OFFLINE), long_tier=False)


@pytest.mark.background_soak
@pytest.mark.timeout(CI_SOAK.seconds * 3 + 180)
def test_soak_keeps_memory_descriptors_and_threads_flat_and_loses_nothing(background_soak):
    """Gate C at 5 minutes: the run started with the session (tests/conftest.py); this waits for its end."""
    record(background_soak.finish(), long_tier=False)
