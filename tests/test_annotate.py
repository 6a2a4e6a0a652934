"""Drawing on frames: boxes as before, and a tracking camera's zones, lines, trails and track colours, checked on real pixels."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge_sdk.annotate import Overlay, annotate, track_colour
from edge_sdk.results import BBox, Detection

W, H = 640, 480
GREY = 100


def grey() -> np.ndarray:
    return np.full((H, W, 3), GREY, np.uint8)


def at(image: np.ndarray, x: float, y: float) -> np.ndarray:
    """The pixel at normalised (x, y), as ints."""
    return image[min(H - 1, round(y * H)), min(W - 1, round(x * W))].astype(int)


def changed(image: np.ndarray, x: float, y: float) -> bool:
    return bool((at(image, x, y) != GREY).any())


def drawn_before(frame: np.ndarray, detections) -> np.ndarray:
    """What annotate drew before tracking existed (its code as it was), to hold untracked frames to it."""
    palette = ((0, 255, 0), (255, 128, 0), (0, 128, 255), (255, 0, 255), (0, 255, 255), (128, 0, 255), (255, 255, 0))
    image = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR) if frame.ndim == 2 else frame.copy()
    line = 0
    for d in detections:
        colour, caption = palette[d.class_id % len(palette)], f"{d.label} {d.score:.2f}"
        if d.box is None:
            line += 1
            cv2.putText(image, caption, (4, 14 * line), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
            continue
        x1, y1, x2, y2 = d.box.to_pixels(W, H)
        cv2.rectangle(image, (x1, y1), (x2, y2), colour, 2)
        cv2.putText(image, caption, (x1, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
    return image


DETECTIONS = [Detection(0, "person", 0.91, BBox(0.1, 0.2, 0.3, 0.6)), Detection(8, "traffic light", 0.5, BBox(0.5, 0.0, 0.7, 0.1)),
              Detection(2, "cat", 0.33)]


@pytest.mark.parametrize("gray", [False, True])
def test_untracked_frames_without_an_overlay_are_drawn_exactly_as_before(gray):
    frame = np.random.default_rng(3).integers(0, 256, (H, W) if gray else (H, W, 3), dtype=np.uint8)
    before = drawn_before(frame, DETECTIONS).tobytes()
    assert annotate(frame, DETECTIONS).tobytes() == before
    assert annotate(frame, DETECTIONS, None).tobytes() == before
    assert annotate(frame, DETECTIONS, Overlay()).tobytes() == before  # an empty overlay draws nothing
    if not gray:
        assert annotate(frame, []).tobytes() == frame.tobytes()


ZONE = [(0.2, 0.3), (0.6, 0.3), (0.6, 0.8), (0.2, 0.8)]


def test_a_zone_is_tinted_inside_and_not_outside():
    image = annotate(grey(), [], Overlay(zones={"driveway": ZONE}))
    inside = at(image, 0.4, 0.6)
    assert (inside != GREY).any()
    assert inside.max() - inside.min() > 0  # tinted towards a colour, not just lighter or darker
    for x, y in ((0.05, 0.05), (0.9, 0.9), (0.1, 0.55), (0.7, 0.55), (0.4, 0.9)):
        assert not changed(image, x, y), (x, y)
    # An occupied zone is tinted more strongly than an empty one.
    empty = annotate(grey(), [], Overlay(zones={"driveway": ZONE}, counts={"zones": {"driveway": {"total": 0}}}))
    occupied = annotate(grey(), [], Overlay(zones={"driveway": ZONE}, counts={"zones": {"driveway": {"total": 3}}}))
    assert np.abs(at(occupied, 0.4, 0.6) - GREY).sum() > np.abs(at(empty, 0.4, 0.6) - GREY).sum() > 0


def caption_area_differs(a: np.ndarray, b: np.ndarray) -> tuple[int, int, int, int] | None:
    """The bounding box (x1, y1, x2, y2) in pixels of where two pictures differ, or None."""
    ys, xs = np.nonzero((a != b).any(axis=2))
    return None if len(xs) == 0 else (xs.min(), ys.min(), xs.max(), ys.max())


def test_a_zone_caption_shows_its_occupancy():
    def draw(total):
        return annotate(grey(), [], Overlay(zones={"driveway": ZONE}, counts={"zones": {"driveway": {"total": total}}}))

    one, two = draw(1), draw(2)
    box = caption_area_differs(one, two)
    assert box is not None
    x1, y1, x2, y2 = box  # only the digit changed: near the zone's top left corner, a few pixels tall
    assert 0.2 * W <= x1 <= x2 < 0.45 * W and 0.3 * H <= y1 <= y2 < 0.3 * H + 24
    named = annotate(grey(), [], Overlay(zones={"driveway": ZONE}))
    assert caption_area_differs(named, annotate(grey(), [], Overlay(zones={"porch": ZONE}))) is not None


GATE = [(0.5, 0.1), (0.5, 0.9)]


def test_a_line_is_drawn_along_its_segment_with_its_counts():
    image = annotate(grey(), [], Overlay(lines={"gate": GATE}))
    for y in np.linspace(0.12, 0.88, 20):
        assert changed(image, 0.5, y), y
    for x, y in ((0.5, 0.02), (0.5, 0.98), (0.3, 0.5), (0.7, 0.5), (0.1, 0.1)):
        assert not changed(image, x, y), (x, y)

    def draw(crossed_in):
        counts = {"lines": {"gate": {"in": crossed_in, "out": 4, "in_by_label": {}, "out_by_label": {}}}}
        return annotate(grey(), [], Overlay(lines={"gate": GATE}, counts=counts))

    x1, y1, x2, y2 = caption_area_differs(draw(3), draw(8))
    assert x1 > 0.5 * W and x2 < 0.8 * W and 0.2 * H < y1 <= y2 < 0.4 * H  # by the line, a quarter along it


@pytest.mark.parametrize(("normal", "side"), [((1.0, 0.0), 1), ((-1.0, 0.0), -1)])
def test_the_in_arrow_points_to_the_side_an_in_crossing_ends_on(normal, side):
    plain = annotate(grey(), [], Overlay(lines={"gate": GATE}))
    arrowed = annotate(grey(), [], Overlay(lines={"gate": GATE}, line_in={"gate": normal}))
    x1, _, x2, _ = caption_area_differs(plain, arrowed)
    middle = W // 2
    assert (x1 >= middle - 2 and x2 > middle + 15) if side > 0 else (x2 <= middle + 2 and x1 < middle - 15)


def test_a_trail_follows_its_points_in_its_track_colour():
    points = [(0.1 + 0.02 * k, 0.2 + 0.01 * k) for k in range(30)]
    image = annotate(grey(), [], Overlay(trails={7: points}))
    for x, y in points[1:]:
        assert changed(image, x, y), (x, y)
    newest = at(image, *points[-3])
    assert np.abs(newest - np.array(track_colour(7))).max() < 40
    for x, y in ((0.1, 0.6), (0.8, 0.2), (0.5, 0.9)):
        assert not changed(image, x, y)
    assert annotate(grey(), [], Overlay(trails={7: points[:1]})).tobytes() == grey().tobytes()  # one point is no path


def box_edge(image: np.ndarray, box: BBox) -> np.ndarray:
    x1, y1, _, y2 = box.to_pixels(W, H)
    return image[(y1 + y2) // 2, x1].astype(int)


def test_a_track_keeps_its_colour_and_is_captioned_with_its_id():
    first, second = BBox(0.1, 0.3, 0.3, 0.7), BBox(0.5, 0.2, 0.7, 0.6)
    a = annotate(grey(), [Detection(0, "person", 0.9, first, track_id=5)])
    b = annotate(grey(), [Detection(3, "person", 0.4, second, track_id=5), Detection(0, "person", 0.9, first, track_id=6)])
    assert tuple(box_edge(a, first)) == tuple(box_edge(b, second)) == track_colour(5)
    assert tuple(box_edge(b, first)) == track_colour(6) != track_colour(5)
    assert len({track_colour(i) for i in range(1, 21)}) == 20
    # The caption carries the id: "#5 person 0.90" runs further right above the box than "person 0.90".
    untracked = annotate(grey(), [Detection(0, "person", 0.9, first)])
    _, by1, _, _ = first.to_pixels(W, H)

    def caption_end(image):
        return np.nonzero((image[by1 - 16:by1 - 3] != GREY).any(axis=(0, 2)))[0].max()

    assert caption_end(a) > caption_end(untracked) + 12


def test_regions_at_the_frame_edge_and_gray_frames():
    overlay = Overlay(zones={"all": [(0, 0), (1, 0), (1, 1), (0, 1)]}, lines={"edge": [(0, 1), (1, 1)]}, trails={1: [(0, 0), (1, 1)]},
                      counts={"zones": {"all": {"total": 1}}, "lines": {}}, line_in={"edge": (0.0, -1.0)})
    image = annotate(np.full((H, W), GREY, np.uint8), [Detection(0, "x", 0.5, BBox(0, 0, 1, 1), track_id=1)], overlay)
    assert image.shape == (H, W, 3) and changed(image, 0.5, 0.3)
