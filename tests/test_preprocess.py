"""Intensity levels: percentiles, the glare clip that keeps vias from outshining their lines, polarity,
and background flattening."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from samsem.errors import ConfigError
from samsem.evaluation.esd import ESDConfig, esd
from samsem.runtime.config import PipelineConfig, RunOptions
from samsem.runtime.load import classical_pipeline
from samsem.runtime.stages.preprocess import (
    GLARE_MARGIN,
    apply_range,
    estimate_background,
    intensity_range,
)


def _lines(via_level: int | None, rng: np.random.Generator) -> np.ndarray:
    """400x400 uint8: background 45, 20 % of the rows metal at 95, optional 2 % saturated 'vias'."""
    image = np.full((400, 400), 45, np.uint8)
    for y in range(0, 400, 20):
        image[y : y + 4] = 95
    if via_level is not None:
        ys, xs = np.nonzero(image == 95)
        pick = rng.choice(len(ys), size=int(0.02 * image.size), replace=False)
        image[ys[pick], xs[pick]] = via_level
    return np.clip(image + rng.normal(0, 2, image.shape), 0, 255).astype(np.uint8)


def test_glare_tail_is_clipped_just_above_the_metal() -> None:
    rng = np.random.default_rng(0)
    image = _lines(255, rng)
    lo, hi = intensity_range(image)
    p50, p90 = np.percentile(image, [50, 90])
    assert hi == float(p90 + GLARE_MARGIN * (p90 - p50))
    assert 95 < hi < 150
    metal = (image > 80) & (image < 110)
    mapped = apply_range(image, (lo, hi))  # the vias saturate, the lines come out light
    assert np.median(mapped[image == 255]) == 1.0 and np.median(mapped[metal]) > 0.5
    plain = intensity_range(image, clip_glare=False)
    assert plain[1] >= 250  # the plain 99.5th percentile sits in the vias: lines dark grey beside them
    assert np.median(apply_range(image, plain)[metal]) < 0.3


def test_images_without_glare_keep_their_percentiles() -> None:
    rng = np.random.default_rng(1)
    image = _lines(None, rng)
    assert intensity_range(image) == intensity_range(image, clip_glare=False)
    inverted = (255 - image).astype(np.uint8)  # metal darker: the bright tail is background, no glare
    assert intensity_range(inverted) == intensity_range(inverted, clip_glare=False)


def test_pipeline_config_switches_the_clip() -> None:
    assert PipelineConfig().clip_glare
    assert PipelineConfig.from_dict({"clip_glare": False}).clip_glare is False


def test_dark_metal_levels_mirror_the_bright_ones() -> None:
    rng = np.random.default_rng(2)
    image = _lines(255, rng)  # with glare, so the clip is mirrored too
    inverted = (255 - image).astype(np.uint8)
    lo, hi = intensity_range(image)
    bg, metal = intensity_range(inverted, dark_metal=True)
    assert bg > metal  # falling order: apply_range inverts
    assert (bg, metal) == pytest.approx((255 - lo, 255 - hi), abs=1e-3)
    np.testing.assert_allclose(apply_range(inverted, (bg, metal)), apply_range(image, (lo, hi)), atol=1e-5)


def test_pipeline_with_dark_metal_segments_an_inverted_image_like_the_original() -> None:
    rng = np.random.default_rng(3)
    image = _lines(None, rng)
    inverted = (255 - image).astype(np.uint8)
    bright = classical_pipeline("classical:otsu").segment(image)
    dark = classical_pipeline("classical:otsu", options=RunOptions(metal="dark")).segment(inverted)
    plain = classical_pipeline("classical:otsu").segment(inverted)
    truth = (image > 70).astype(np.uint8)
    assert (bright.mask == truth).mean() > 0.99
    assert (dark.mask == bright.mask).mean() > 0.999
    assert (plain.mask == truth).mean() < 0.05  # taken as bright metal, the background becomes the metal
    assert dark.report.intensity_levels[0] > dark.report.intensity_levels[1]
    assert dark.report.config["metal"] == "dark"


def test_metal_option_is_validated() -> None:
    assert PipelineConfig().with_options(RunOptions(metal="dark")).options.metal == "dark"
    with pytest.raises(ConfigError, match="metal must be one of bright, dark"):
        RunOptions(metal="grey")


def _charged(rng: np.random.Generator, shape: tuple[int, int] = (600, 700)) -> tuple[np.ndarray, np.ndarray]:
    """A uint8 image of 6-px lines (metal 120 over background 60) under a broad charging glow that lifts
    one region by up to 90 levels, and its (H, W) uint8 truth."""
    h, w = shape
    truth = np.zeros(shape, np.uint8)
    for y in range(20, h - 20, 30):
        truth[y : y + 6, 30 : w - 30] = 1
    yy, xx = np.mgrid[0:h, 0:w]
    glow = 90 * np.exp(-((yy - h / 3) ** 2 + (xx - w / 3) ** 2) / (2 * 150.0**2))
    image = 60 + 60 * truth + glow + rng.normal(0, 3, shape)
    return np.clip(image, 0, 255).astype(np.uint8), truth


def test_flattening_removes_a_charging_glow_and_keeps_the_lines() -> None:
    image, truth = _charged(np.random.default_rng(5))
    background = estimate_background(image, 128)
    assert background is not None and background.map.shape == (75, 88)
    flat = background.flatten(image)
    assert flat.dtype == np.float32 and flat.shape == image.shape
    away = (cv2.dilate(truth, np.ones((5, 5), np.uint8)) == 0) & (np.arange(600)[:, None] > 30)
    spread = np.percentile(image[away], 99) - np.percentile(image[away], 1)
    assert spread > 80  # the glow spans more than the line contrast
    assert np.percentile(flat[away], 99) - np.percentile(flat[away], 1) < spread / 2
    assert np.median(flat[truth == 1]) - np.median(flat[away]) == pytest.approx(60, abs=6)
    # the whole pipeline (Otsu, the fastest segmenter): no glow shorts with flattening, many without
    flat_mask = classical_pipeline("classical:otsu").segment(image).mask
    plain_mask = classical_pipeline("classical:otsu", options=RunOptions(flatten=0)).segment(image).mask
    assert esd(flat_mask, truth, ESDConfig()).rate == 0
    assert esd(plain_mask, truth, ESDConfig()).rate > 0.2


def test_crops_flatten_like_the_whole_image() -> None:
    rng = np.random.default_rng(6)
    image = rng.integers(0, 60000, (523, 611)).astype(np.uint16)  # neither size a multiple of 8
    background = estimate_background(image, 96)
    assert background is not None and background.map.shape == (66, 77)
    whole = background.flatten(image)
    reference = image - cv2.resize(background.map, (611, 523), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(whole, reference + background.level, atol=0.05)  # OpenCV's own kernel
    rows, cols = np.arange(100, 300), np.array([0, 5, 610, 7, 7])  # any pixels, repeats too
    crop = background.flatten(image[rows][:, cols], rows, cols, image.shape)
    np.testing.assert_array_equal(crop, whole[rows][:, cols])
    levels = intensity_range(image, background=background)
    fused = background.map_range(image[rows][:, cols], rows, cols, image.shape, levels)
    np.testing.assert_array_equal(fused, apply_range(crop, levels))  # one pass, the same bits
    assert estimate_background(image, 0) is None


def test_dark_metal_flattening_mirrors_the_bright_one() -> None:
    image, _ = _charged(np.random.default_rng(7))
    inverted = (255 - image).astype(np.uint8)
    dark, bright = estimate_background(inverted, 128, dark_metal=True), estimate_background(image, 128)
    assert dark is not None and bright is not None
    np.testing.assert_allclose(255 - dark.flatten(inverted), bright.flatten(image), atol=1.0)


def test_flatten_option_is_validated_and_overrides_the_model() -> None:
    model = PipelineConfig(flatten=64)
    assert model.with_options(RunOptions()).flatten == 64  # None: the model's
    assert model.with_options(RunOptions(flatten=0)).flatten == 0
    assert PipelineConfig().flatten == 128
    for bad in (-1, 1.5, True):
        with pytest.raises(ConfigError, match=r"flatten must be an integer in \[0, 1048576\]"):
            RunOptions(flatten=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"flatten must be an integer in \[0, 1048576\]"):
        PipelineConfig(flatten=-5)
    assert model.with_options(RunOptions(min_contrast=0.0)).postprocess.min_contrast == 0
    assert model.with_options(RunOptions()).postprocess.min_contrast == 0.12
    with pytest.raises(ConfigError, match=r"min_contrast must lie in \[0, 1\]"):
        RunOptions(min_contrast=1.5)


def test_results_carry_the_image_as_read_and_the_flattening_time() -> None:
    image, _ = _charged(np.random.default_rng(8), (300, 300))
    before = image.copy()
    result = classical_pipeline("classical:otsu").segment(image)
    assert result.image is image
    np.testing.assert_array_equal(image, before)  # flattening works on crops, never on the image
    assert result.report.config["flatten"] == 128 and result.report.timings_s["flatten"] > 0
