"""The ``tracking:``, ``zones:`` and ``lines:`` sections: bad input is one line and exit code 2 through
the real CLI; good input reads as named zones and lines, and a list of polygons still filters."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from edge_sdk.config import load_config
from edge_sdk.pipeline import keep
from edge_sdk.results import BBox, Detection
from edge_sdk.tracking.settings import Anchor, Side, TrackingSettings

GATE = "gate: {points: [[0.5, 0.1], [0.5, 0.9]], in: right}"
PAD = "pad: [[0.1, 0.1], [0.4, 0.1], [0.4, 0.4]]"

BAD = {
    "a line with 1 point": ("lines:\n  gate: {points: [[0.5, 0.1]], in: right}", "'lines.gate.points': a line needs exactly 2 points, got 1"),
    "a line with 3 points": ("lines:\n  gate: {points: [[0.5, 0.1], [0.5, 0.5], [0.5, 0.9]], in: right}",
                             "'lines.gate.points': a line needs exactly 2 points, got 3"),
    "a line of one point twice": ("lines:\n  gate: {points: [[0.5, 0.5], [0.5, 0.5]], in: right}", "the same point"),
    "a zone with 2 points": ("zones:\n  pad: [[0.1, 0.1], [0.4, 0.4]]", "zone 'pad' points: a zone needs at least 3 points, got 2"),
    "a zone point outside 0-1": ("zones:\n  pad: [[0.1, 0.1], [1.4, 0.1], [0.4, 0.4]]", "zone 'pad' points: the zone has a point (1.4, 0.1) outside the frame"),
    "a line point outside 0-1": ("lines:\n  gate: {points: [[0.5, -0.1], [0.5, 0.9]], in: right}", "the line has a point (0.5, -0.1) outside the frame"),
    "a zone and a line of one name": (f"zones:\n  gate: [[0.1, 0.1], [0.4, 0.1], [0.4, 0.4]]\nlines:\n  {GATE}",
                                      "'gate' names both a zone and a line"),
    "a camera's line named like the run's zone": (
        f"zones:\n  gate: [[0.1, 0.1], [0.4, 0.1], [0.4, 0.4]]\ncameras:\n  - id: door\n    source: a.mp4\n    lines:\n      {GATE}",
        "camera 'door': 'gate' names both a zone and a line"),
    "one zone name twice": (f"zones:\n  {PAD}\n  {PAD}", "key 'pad' is given twice in one mapping (line 4)"),
    "an unknown tracking option": ("tracking:\n  max_age: 30", "'tracking.max_age': unknown field"),
    "a tracking option out of range": ("tracking:\n  zone_inertia: 0", "'tracking.zone_inertia'"),
    "an unknown zone option": ("zones:\n  pad: {points: [[0.1, 0.1], [0.4, 0.1], [0.4, 0.4]], loiter: 5}", "zone 'pad': unknown field 'loiter'"),
    "a horizontal line counted going right": ("lines:\n  gate: {points: [[0.1, 0.5], [0.9, 0.5]], in: right}",
                                              "the line runs rightwards, so nothing crosses it going right; use up or down"),
    "a direction that is not one": ("lines:\n  gate: {points: [[0.5, 0.1], [0.5, 0.9]], in: north}", "'lines.gate.in'"),
    "a zone name with a space": ("zones:\n  my zone: [[0.1, 0.1], [0.4, 0.1], [0.4, 0.4]]", "zone name 'my zone' must be"),
    "zones that are neither": ("zones: 5", "expected a mapping of named zones, or a list of polygons"),
    "a polygon of the list with 2 points": ("zones:\n  - [[0.1, 0.1], [0.4, 0.4]]", "zone 0 needs at least 3 points"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_tracking_input_is_one_line_and_exit_2(case, tmp_path):
    body, expected = BAD[case]
    config = tmp_path / "bad.yaml"
    if "cameras:" not in body:
        body = "source: a.mp4\n" + body
    config.write_text(body + "\n")
    # Config errors come before the bundle is opened: a bundle that does not exist is never reached.
    proc = subprocess.run([sys.executable, "-m", "edge_sdk.cli", "run", str(tmp_path / "no-bundle"), "--config", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("edge-sdk: error: config file "), proc.stderr
    assert expected in lines[0], lines[0]


def test_a_good_config_gets_to_the_bundle(tmp_path):
    config = tmp_path / "good.yaml"
    config.write_text(f"source: a.mp4\nzones:\n  {PAD}\nlines:\n  {GATE}\ntracking: {{zone_inertia: 2}}\n")
    proc = subprocess.run([sys.executable, "-m", "edge_sdk.cli", "run", str(tmp_path / "no-bundle"), "--config", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "no-bundle does not exist" in proc.stderr, proc.stderr


def test_named_zones_and_lines_read_with_their_options(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(textwrap.dedent("""\
        source: a.mp4
        zones:
          pad: [[0.1, 0.1], [0.4, 0.1], [0.4, 0.4]]
          dock: {points: [[0.5, 0.5], [0.9, 0.5], [0.9, 0.9]], loiter_s: 300, labels: [box], anchor: bottom}
        lines:
          gate: {points: [[0.5, 0.1], [0.5, 0.9]], in: left}
          road: {points: [[0.2, 0.8], [0.8, 0.2]], in: down, labels: [car]}
        """))
    settings = load_config(config)
    (camera,) = settings.camera_list()
    assert camera.polygons is None and list(camera.named_zones) == ["pad", "dock"]
    dock = camera.named_zones["dock"]
    assert (dock.loiter_s, dock.labels, dock.anchor) == (300, ["box"], Anchor.BOTTOM)
    assert camera.named_zones["pad"].anchor is Anchor.CENTER and camera.named_zones["pad"].loiter_s is None
    gate, road = camera.named_lines["gate"], camera.named_lines["road"]
    assert gate.in_ is Side.LEFT and gate.in_normal() == pytest.approx((-1.0, 0.0))
    assert road.in_normal() == pytest.approx((2 ** -0.5, 2 ** -0.5)) and road.labels == ["car"]
    # named zones or lines turn tracking on with the defaults
    assert settings.tracking_settings() == TrackingSettings()


def test_tracking_is_off_without_zones_lines_or_the_section(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("source: a.mp4\nzones: [[[0.1, 0.1], [0.4, 0.1], [0.4, 0.4]]]\n")
    assert load_config(config).tracking_settings() is None
    config.write_text("source: a.mp4\ntracking: {min_hits: 5, update_s: 30}\n")
    tracking = load_config(config).tracking_settings()
    assert (tracking.min_hits, tracking.update_s, tracking.zone_inertia) == (5, 30, 3)


def test_a_list_of_polygons_still_filters_detections_by_their_centre(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("source: a.mp4\nzones:\n  - [[0, 0], [0.5, 0], [0.5, 0.5], [0, 0.5]]\n  - [[0.6, 0.6], [1, 0.6], [1, 1]]\n")
    settings = load_config(config)
    (camera,) = settings.camera_list()
    assert camera.named_zones == {} and len(camera.polygons) == 2
    assert keep(Detection(0, "car", 0.9, BBox(0.1, 0.1, 0.3, 0.3)), camera)
    assert keep(Detection(0, "car", 0.9, BBox(0.85, 0.7, 0.95, 0.8)), camera)  # inside the second triangle
    assert not keep(Detection(0, "car", 0.9, BBox(0.6, 0.1, 0.9, 0.3)), camera)
    assert not keep(Detection(0, "car", 0.9, BBox(0.65, 0.8, 0.75, 0.9)), camera)  # in the box of the triangle, not in it


def test_named_zones_do_not_filter_detections(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(f"source: a.mp4\nzones:\n  {PAD}\n")
    (camera,) = load_config(config).camera_list()
    assert keep(Detection(0, "car", 0.9, BBox(0.6, 0.6, 0.9, 0.9)), camera)
