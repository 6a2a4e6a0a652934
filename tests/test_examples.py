"""The README's main job, run as a user runs it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edge_sdk.bundle import open_bundle
from support import ROOT

pytestmark = pytest.mark.slow


def test_convert_digits_example_writes_a_verified_pruned_int8_bundle(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "convert_digits.py"), "--workdir", str(tmp_path), "--epochs", "4"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Conversion report" in proc.stdout
    manifest = open_bundle(tmp_path / "bundle").manifest
    assert manifest.precision.value == "int8" and manifest.profile.name == "rpi4"
    assert manifest.report.sparsity.prunable >= 0.49
    assert manifest.report.accuracy.within_budget
    assert manifest.report.accuracy.converted.top1 > 0.9
