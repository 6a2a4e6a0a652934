"""Preprocessing shared by converter and runtime: shapes, colour order, normalisation, placement, quantization.

Expected numbers are worked out by hand in the comments, not taken from the implementation.
"""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from edge_sdk.preprocess import (
    LETTERBOX_FILL,
    ColorOrder,
    Normalization,
    Placement,
    Preprocessing,
    ResizeMode,
    dequantize,
    fit,
    normalize,
    preprocess,
    quantize,
)

BLUE_BGR = (255, 0, 0)
GREEN_BGR = (0, 255, 0)
RED_BGR = (0, 0, 255)


def _frame(width: int, height: int, bgr=(0, 0, 0)) -> np.ndarray:
    frame = np.empty((height, width, 3), dtype=np.uint8)
    frame[:] = bgr
    return frame


def _spec(**kw) -> Preprocessing:
    return Preprocessing(**{"width": 40, "height": 30, "channels": 3, **kw})


def _corners(placement: Placement, spec: Preprocessing, *, x0: float = 0, y0: float = 0, x1=None, y1=None):
    x1 = spec.width if x1 is None else x1
    y1 = spec.height if y1 is None else y1
    xs, ys = placement.to_source(np.array([x0, x1], dtype=np.float64), np.array([y0, y1], dtype=np.float64))
    return xs.tolist(), ys.tolist()


# --- fit: shapes and placement for each resize mode on non-square frames -------------------------------


@pytest.mark.parametrize("mode", list(ResizeMode))
@pytest.mark.parametrize(("src_w", "src_h"), [(100, 50), (50, 100), (37, 91)])
def test_fit_output_shape_and_dtype(mode, src_w, src_h):
    spec = _spec(resize=mode)
    image, placement = fit(_frame(src_w, src_h, GREEN_BGR), spec)
    assert image.shape == (30, 40, 3)
    assert image.dtype == np.uint8
    assert (placement.source_width, placement.source_height) == (src_w, src_h)


def test_stretch_maps_model_corners_to_frame_corners():
    spec = _spec(resize=ResizeMode.STRETCH)
    _, placement = fit(_frame(100, 50), spec)
    # 100x50 -> 40x30: scale_x = 0.4, scale_y = 0.6, no padding or crop.
    assert placement.scale_x == pytest.approx(0.4)
    assert placement.scale_y == pytest.approx(0.6)
    xs, ys = _corners(placement, spec)
    assert xs == pytest.approx([0, 100])
    assert ys == pytest.approx([0, 50])


def test_letterbox_wide_frame_pads_top_and_bottom():
    spec = _spec(resize=ResizeMode.LETTERBOX)
    frame = _frame(100, 50, GREEN_BGR)
    image, placement = fit(frame, spec)
    # scale = min(40/100, 30/50) = 0.4 -> the frame becomes 40x20, centred: 5 rows of padding above
    # (rows 0-4) and 5 below (rows 25-29).
    assert (image[:5] == LETTERBOX_FILL).all()
    assert (image[25:] == LETTERBOX_FILL).all()
    assert (image[5:25] == (0, 255, 0)).all()  # RGB green
    assert placement.scale_x == pytest.approx(0.4) and placement.scale_y == pytest.approx(0.4)
    # The image area of the model input, (0, 5)-(40, 25), is the whole frame (0, 0)-(100, 50).
    xs, ys = _corners(placement, spec, y0=5, y1=25)
    assert xs == pytest.approx([0, 100])
    assert ys == pytest.approx([0, 50])
    # The model input's own corners lie in the padding: 5 px / 0.4 = 12.5 source px outside.
    xs, ys = _corners(placement, spec)
    assert xs == pytest.approx([0, 100])
    assert ys == pytest.approx([-12.5, 62.5])


def test_letterbox_tall_frame_pads_left_and_right():
    spec = _spec(resize=ResizeMode.LETTERBOX)
    image, placement = fit(_frame(50, 100, RED_BGR), spec)
    # scale = min(40/50, 30/100) = 0.3 -> 15x30; pad_x = (40 - 15) // 2 = 12 on the left, 13 on the right.
    assert (image[:, :12] == LETTERBOX_FILL).all()
    assert (image[:, 27:] == LETTERBOX_FILL).all()
    assert (image[:, 12:27] == (255, 0, 0)).all()  # RGB red
    xs, ys = _corners(placement, spec, x0=12, x1=27)
    assert xs == pytest.approx([0, 50])
    assert ys == pytest.approx([0, 100])


def test_crop_wide_frame_keeps_the_centre():
    spec = _spec(resize=ResizeMode.CROP)
    # 100x50 frame, model aspect 40/30 = 4/3: the window is round(50 * 4/3) = 67 wide, starting at
    # (100 - 67) // 2 = 16. Paint everything outside columns 16..82 red and the window green.
    frame = _frame(100, 50, RED_BGR)
    frame[:, 16:83] = GREEN_BGR
    image, placement = fit(frame, spec)
    assert (image == (0, 255, 0)).all(), "cropped-away columns leaked into the model input"
    xs, ys = _corners(placement, spec)
    assert xs == pytest.approx([16, 83])
    assert ys == pytest.approx([0, 50])


def test_crop_tall_frame_keeps_the_centre():
    spec = _spec(resize=ResizeMode.CROP)
    # 50x100 frame: the window is 50 wide and round(50 * 3/4) = 38 high, starting at (100 - 38) // 2 = 31.
    frame = _frame(50, 100, BLUE_BGR)
    frame[31:69] = GREEN_BGR
    image, placement = fit(frame, spec)
    assert (image == (0, 255, 0)).all()
    xs, ys = _corners(placement, spec)
    assert xs == pytest.approx([0, 50])
    assert ys == pytest.approx([31, 69])


def test_placement_maps_an_interior_point():
    # A hand-made letterbox placement: source 640x480 in a 320x320 input, scale 0.5, 40 px bars.
    placement = Placement(640, 480, 0.5, 0.5, pad_x=0, pad_y=40)
    x, y = placement.to_source(np.array([160.0]), np.array([160.0]))
    assert x.tolist() == [320.0] and y.tolist() == [240.0]
    # And a crop placement: a 480x480 window at x=80 of a 640x480 frame, resized to 240x240.
    placement = Placement(640, 480, 0.5, 0.5, crop_x=80)
    x, y = placement.to_source(np.array([0.0, 240.0]), np.array([0.0, 240.0]))
    assert x.tolist() == [80.0, 560.0] and y.tolist() == [0.0, 480.0]


# --- colour order ---------------------------------------------------------------------------------


def test_pure_blue_bgr_frame_becomes_blue_rgb():
    batch, _ = preprocess(_frame(64, 48, BLUE_BGR), _spec(color=ColorOrder.RGB))
    assert batch.shape == (1, 30, 40, 3)
    assert batch.dtype == np.float32
    np.testing.assert_array_equal(batch[0, 15, 20], [0.0, 0.0, 1.0])
    assert np.all(batch == np.array([0.0, 0.0, 1.0], dtype=np.float32))


def test_bgr_model_keeps_bgr_order():
    batch, _ = preprocess(_frame(64, 48, BLUE_BGR), _spec(color=ColorOrder.BGR))
    assert np.all(batch == np.array([1.0, 0.0, 0.0], dtype=np.float32))


def test_bgra_frame_is_accepted_as_bgr():
    frame = np.zeros((48, 64, 4), dtype=np.uint8)
    frame[:] = (0, 0, 255, 17)  # red, with an alpha that must be dropped
    batch, _ = preprocess(frame, _spec())
    assert batch.shape == (1, 30, 40, 3)
    assert np.all(batch == np.array([1.0, 0.0, 0.0], dtype=np.float32))


@pytest.mark.parametrize("gray", [np.full((48, 64), 100, np.uint8), np.full((48, 64, 1), 100, np.uint8)])
def test_gray_frame_into_an_rgb_model(gray):
    batch, _ = preprocess(gray, _spec())
    assert batch.shape == (1, 30, 40, 3)
    np.testing.assert_allclose(batch, 100 / 255, rtol=0, atol=1e-6)


def test_colour_frame_into_a_gray_model():
    spec = _spec(channels=1, color=ColorOrder.GRAY, normalization=Normalization.RAW)
    batch, _ = preprocess(_frame(64, 48, GREEN_BGR), spec)
    assert batch.shape == (1, 30, 40, 1)
    # ITU-R BT.601 luma of pure green: 0.587 * 255 = 149.7.
    np.testing.assert_allclose(batch, 0.587 * 255, atol=1.0)
    batch, _ = preprocess(_frame(64, 48, BLUE_BGR), spec)
    np.testing.assert_allclose(batch, 0.114 * 255, atol=1.0)  # 29.1, i.e. blue is not read as red (76)


def test_gray_frame_into_a_gray_model_nchw():
    spec = _spec(channels=1, color=ColorOrder.GRAY, layout="NCHW")
    batch, _ = preprocess(np.full((48, 64), 51, np.uint8), spec)
    assert batch.shape == (1, 1, 30, 40)
    np.testing.assert_allclose(batch, 0.2, atol=1e-6)


# --- normalisation and layout ---------------------------------------------------------------------


def test_unit_symmetric_and_raw_values():
    image = np.array([[[0, 51, 255]]], dtype=np.uint8)  # one pixel, already in model order
    np.testing.assert_allclose(normalize(image, _spec(normalization=Normalization.UNIT))[0, 0, 0], [0.0, 0.2, 1.0], atol=1e-6)
    # symmetric: p * 2 / 255 - 1 -> 0 -> -1, 51 -> -0.6, 255 -> 1
    np.testing.assert_allclose(normalize(image, _spec(normalization=Normalization.SYMMETRIC))[0, 0, 0], [-1.0, -0.6, 1.0], atol=1e-6)
    np.testing.assert_allclose(normalize(image, _spec(normalization=Normalization.RAW))[0, 0, 0], [0.0, 51.0, 255.0])


def test_mean_std_values_follow_the_model_channel_order():
    spec = _spec(normalization=Normalization.MEAN_STD, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5))
    # BGR pixel (51, 102, 204) is RGB (204, 102, 51) = (0.8, 0.4, 0.2) on the unit scale;
    # ((0.8 - 0.5) / 0.2, (0.4 - 0.4) / 0.25, (0.2 - 0.3) / 0.5) = (1.5, 0.0, -0.2).
    batch, _ = preprocess(_frame(64, 48, (51, 102, 204)), spec)
    np.testing.assert_allclose(batch[0, 7, 9], [1.5, 0.0, -0.2], atol=1e-5)
    np.testing.assert_allclose(batch, np.broadcast_to([1.5, 0.0, -0.2], batch.shape), atol=1e-5)


def test_nchw_layout_puts_channels_first():
    spec = _spec(layout="NCHW")
    frame = _frame(64, 48, (51, 102, 204))  # RGB (0.8, 0.4, 0.2)
    batch, _ = preprocess(frame, spec)
    assert batch.shape == (1, 3, 30, 40)
    np.testing.assert_allclose(batch[0, 0], 0.8, atol=1e-6)
    np.testing.assert_allclose(batch[0, 1], 0.4, atol=1e-6)
    np.testing.assert_allclose(batch[0, 2], 0.2, atol=1e-6)
    nhwc, _ = preprocess(frame, _spec())
    np.testing.assert_array_equal(batch, np.transpose(nhwc, (0, 3, 1, 2)))


def test_normalize_keeps_a_batch_a_batch():
    images = np.stack([np.full((30, 40, 3), v, np.uint8) for v in (0, 255)])
    batch = normalize(images, _spec())
    assert batch.shape == (2, 30, 40, 3)
    assert batch[0].max() == 0.0 and batch[1].min() == 1.0


def test_normalize_does_not_modify_its_input():
    image = np.full((30, 40, 3), 200, np.uint8)
    normalize(image, _spec())
    assert (image == 200).all()


# --- invalid input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"channels": 2}, "channels"),
        ({"layout": "NCWH"}, "layout"),
        ({"channels": 1}, "gray"),  # color defaults to rgb
        ({"color": ColorOrder.GRAY}, "gray"),  # channels 3
        ({"normalization": Normalization.MEAN_STD}, "mean"),
        ({"normalization": Normalization.MEAN_STD, "mean": (0.5, 0.5, 0.5)}, "std"),
        ({"normalization": Normalization.MEAN_STD, "mean": (0.5,), "std": (0.2,)}, "3 values"),
        ({"normalization": Normalization.MEAN_STD, "mean": (0.5,) * 3, "std": (0.2, 0.0, 0.2)}, "positive"),
        ({"mean": (0.5, 0.5, 0.5)}, "mean_std"),
        ({"std": (0.2, 0.2, 0.2)}, "mean_std"),
        ({"width": 0}, "width"),
        ({"height": -3}, "height"),
        ({"resize": "zoom"}, "resize"),
        ({"unknown": 1}, "unknown"),
    ],
)
def test_invalid_preprocessing_is_refused(kwargs, words):
    with pytest.raises(ValidationError, match=words):
        _spec(**kwargs)


def test_valid_combinations_are_accepted():
    assert _spec(channels=1, color=ColorOrder.GRAY).channels == 1
    spec = _spec(normalization=Normalization.MEAN_STD, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    assert spec.mean == (0.485, 0.456, 0.406)


def test_fit_refuses_a_float_frame():
    with pytest.raises(ValueError, match="uint8"):
        fit(np.zeros((48, 64, 3), np.float32), _spec())


def test_fit_refuses_a_two_channel_frame():
    with pytest.raises(ValueError, match="shape"):
        fit(np.zeros((48, 64, 2), np.uint8), _spec())


# --- quantization -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "scale", "zero_point"),
    [(np.int8, 0.05, -3), (np.uint8, 1 / 255, 0), (np.uint8, 0.1, 128), (np.int8, 0.0078125, 0)],
)
def test_quantize_dequantize_round_trip_within_half_a_step(dtype, scale, zero_point):
    info = np.iinfo(dtype)
    lo, hi = (info.min - zero_point) * scale, (info.max - zero_point) * scale
    x = np.random.default_rng(0).uniform(lo, hi, size=10_000).astype(np.float32)
    q = quantize(x, scale=scale, zero_point=zero_point, dtype=dtype)
    assert q.dtype == dtype
    back = dequantize(q, scale=scale, zero_point=zero_point)
    assert back.dtype == np.float32
    assert np.max(np.abs(back - x)) <= scale / 2 + 1e-6


def test_quantize_exact_values():
    # real = (q - zero_point) * scale with scale 0.5, zero point 10: 0 -> 10, 1 -> 12, -1.5 -> 7.
    q = quantize(np.array([0.0, 1.0, -1.5]), scale=0.5, zero_point=10, dtype=np.int8)
    assert q.tolist() == [10, 12, 7]
    assert dequantize(q, scale=0.5, zero_point=10).tolist() == [0.0, 1.0, -1.5]


def test_quantize_rounds_half_away_from_zero():
    # The docstring promises round-half-away (what TFLite's quantizer does); halves are exact with scale 0.5.
    x = np.array([0.25, 0.75, 1.25, -0.25, -0.75, -1.25])  # x / 0.5 = 0.5, 1.5, 2.5, -0.5, -1.5, -2.5
    q = quantize(x, scale=0.5, zero_point=0, dtype=np.int8)
    assert q.tolist() == [1, 2, 3, -1, -2, -3]


@pytest.mark.parametrize(("dtype", "low", "high"), [(np.int8, -128, 127), (np.uint8, 0, 255)])
def test_quantize_clips_at_the_dtype_limits(dtype, low, high):
    x = np.array([-1e6, -50.0, 50.0, 1e6, np.float32(3.4e38)])
    q = quantize(x, scale=0.1, zero_point=0 if dtype is np.int8 else 128, dtype=dtype)
    assert q.dtype == dtype
    assert q.tolist() == [low, low, high, high, high]


@pytest.mark.parametrize("normalization, mean, std", [
    ("unit", None, None), ("symmetric", None, None), ("raw", None, None),
    ("mean_std", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
])
@pytest.mark.parametrize("channels", [1, 3])
def test_an_nchw_image_is_normalised_to_the_same_values_as_the_nhwc_path_transposed(normalization, mean, std, channels):
    """One image for an NCHW model takes a planar fast path; its values equal the general path's, bit for bit."""
    from edge_sdk.preprocess import Preprocessing, normalize

    if channels == 1 and mean is not None:
        mean, std = mean[:1], std[:1]
    image = np.random.default_rng(channels).integers(0, 256, (37, 53, channels), dtype=np.uint8)
    common = dict(width=53, height=37, channels=channels, normalization=normalization, mean=mean, std=std,
                  color="gray" if channels == 1 else "rgb")
    planar = normalize(image, Preprocessing(layout="NCHW", **common))
    reference = np.transpose(normalize(image, Preprocessing(layout="NHWC", **common)), (0, 3, 1, 2))
    assert planar.shape == (1, channels, 37, 53) and planar.dtype == np.float32 and planar.flags.c_contiguous
    assert np.array_equal(planar, reference)
