"""Issue #7's combined delivery gate (tests/support/reliability/combined.py): network cuts, blackholes, graceful
broker restarts and SIGKILLs of the runtime during broker outages, in one run, lose no QoS 1
detection; duplicates ≤ 1 %, each a resend of the same event.

The fast tier runs by default at a tenth of the size; the long tier runs the gate's full size and
records its section in the reliability report::

    EDGE_SDK_LONG=1 python -m pytest -q tests/test_reliability_combined.py -k long
"""

from __future__ import annotations

import pytest

from support.reliability.combined import CombinedSize, combined_gate
from support.reliability.report import record

FAST = CombinedSize(events=500, cuts=2, blackholes=1, restarts=2, kills=2, rate=20.0, outage_s=1.0)
LONG = CombinedSize(events=5000, cuts=5, blackholes=2, restarts=5, kills=5, rate=10.0, outage_s=3.0)


@pytest.mark.timeout(240)
def test_no_detection_is_lost_across_cuts_blackholes_broker_restarts_and_runtime_kills(mosquitto, tmp_path):
    record(combined_gate(mosquitto, tmp_path, FAST), long_tier=False)


@pytest.mark.long
@pytest.mark.timeout(1800)
def test_long_no_detection_is_lost_across_cuts_blackholes_broker_restarts_and_runtime_kills(mosquitto, tmp_path):
    record(combined_gate(mosquitto, tmp_path, LONG), long_tier=True)
