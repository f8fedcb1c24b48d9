"""Intensity levels: percentiles, the glare clip that keeps vias from outshining their lines, polarity."""

from __future__ import annotations

import numpy as np
import pytest

from samsem.errors import ConfigError
from samsem.runtime.config import PipelineConfig, RunOptions
from samsem.runtime.load import classical_pipeline
from samsem.runtime.stages.preprocess import GLARE_MARGIN, apply_range, intensity_range


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
