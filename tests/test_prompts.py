"""Point prompts: on bright metal, deterministic per seed, flat patches have none."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from samsem.errors import ConfigError
from samsem.runtime.stages.prompts import PromptConfig, candidate_foreground, make_prompts, sample_points


def _lines_image(size: int, seed: int, noise: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """(image, metal) with vertical and horizontal bright lines on dark dielectric plus Gaussian noise."""
    metal = np.zeros((size, size), bool)
    step = size // 8
    width = max(4, size // 40)
    for k in range(step // 2, size, step):
        metal[:, k : k + width] = True
    metal[size // 3 : size // 3 + width, :] = True
    rng = np.random.default_rng(seed)
    image = np.where(metal, 0.8, 0.2) + rng.normal(0.0, noise, metal.shape)
    return np.clip(image, 0, 1).astype(np.float32), metal


def _near(metal: np.ndarray) -> np.ndarray:
    """Metal grown by one pixel (the median filter fills concave corners by a pixel)."""
    return cv2.dilate(metal.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)


def test_candidate_foreground_lies_on_metal() -> None:
    image, metal = _lines_image(512, 0)
    fg = candidate_foreground(image, PromptConfig())
    assert fg.dtype == np.bool_ and fg.shape == image.shape
    assert fg.sum() > 0.05 * metal.sum()
    assert not np.any(fg & ~_near(metal))
    assert np.count_nonzero(fg & ~metal) < 1e-3 * fg.sum()


def test_flat_patch_has_no_foreground() -> None:
    rng = np.random.default_rng(1)
    flat = np.clip(0.3 + rng.normal(0, 0.03, (256, 256)), 0, 1).astype(np.float32)
    assert not candidate_foreground(flat, PromptConfig()).any()
    assert not candidate_foreground(np.full((64, 64), 0.9, np.float32), PromptConfig()).any()


def test_small_bright_objects_are_dropped() -> None:
    image, metal = _lines_image(1024, 2)
    image[900:905, 10:15] = 1.0  # 25-px particle in the dielectric (bottom-left, away from lines)
    assert not metal[900:905, 10:15].any()
    cfg = PromptConfig()
    assert not candidate_foreground(image, cfg)[900:905, 10:15].any()
    kept = candidate_foreground(image, PromptConfig(min_object_px=0, morph_radius=0))
    assert kept[901:904, 11:14].all()  # the median filter only rounds its corners


def test_min_object_size_scales_with_input_area() -> None:
    image = np.full((256, 256), 0.2, np.float32)
    image[200:220, :] = 0.9  # a line, so that the patch has contrast
    image[100:104, 100:104] = 0.9  # 16 px at 256 px = 256 px at 1024
    image[10:13, 10:13] = 0.9  # 9 px at 256 = 144 px at 1024
    cfg = PromptConfig(min_object_px=200, morph_radius=0, denoise_ksize=1)  # 200 at 1024 → 12 at 256
    fg = candidate_foreground(image, cfg)
    assert fg[100:104, 100:104].all() and not fg[10:13, 10:13].any()


def test_brightest_pixels_only() -> None:
    # 50 % metal at two brightness levels: Otsu splits metal from dielectric, the 0.8 quantile lies in
    # the brightest level, so only that level is kept
    image = np.full((128, 128), 0.1, np.float32)
    image[:, :32] = 0.6
    image[:, 32:64] = 0.95
    fg = candidate_foreground(image, PromptConfig())
    assert fg[:, 33:63].all() and not fg[:, :31].any() and not fg[:, 65:].any()


def test_sample_points_on_foreground_and_distinct() -> None:
    fg = np.zeros((40, 50), bool)
    fg[5:9, 30:45] = True
    pts = sample_points(fg, 20, np.random.default_rng(0))
    assert pts.shape == (20, 2) and pts.dtype == np.float32
    xs, ys = pts[:, 0].astype(int), pts[:, 1].astype(int)
    assert np.all(fg[ys, xs])
    assert len({(x, y) for x, y in zip(xs, ys, strict=True)}) == 20
    np.testing.assert_array_equal(pts, np.round(pts))  # pixel indices (SAM2 adds the 0.5 itself)


def test_sample_points_few_or_none() -> None:
    fg = np.zeros((10, 10), bool)
    assert sample_points(fg, 5, np.random.default_rng(0)).shape == (0, 2)
    fg[3, 7] = fg[8, 1] = True
    pts = sample_points(fg, 5, np.random.default_rng(0))
    assert pts.shape == (5, 2)
    assert {tuple(p) for p in pts.astype(int).tolist()} <= {(7, 3), (1, 8)}


def test_make_prompts_batch() -> None:
    size = 256
    lines, metal = _lines_image(size, 3)
    flat = np.full((size, size), 0.5, np.float32)
    images = np.stack([lines, flat, lines])
    cfg = PromptConfig(n_points=6)
    points, has_fg = make_prompts(images, cfg, seeds=[11, 12, 13])
    assert points.shape == (3, 6, 2) and points.dtype == np.float32
    assert has_fg.tolist() == [True, False, True]
    for i in (0, 2):
        assert np.all(_near(metal)[points[i, :, 1].astype(int), points[i, :, 0].astype(int)])
    np.testing.assert_array_equal(points[1], np.full((6, 2), (size - 1) / 2))
    # deterministic per seed, different across seeds (same image, seeds 11 and 13)
    again, _ = make_prompts(images, cfg, seeds=[11, 12, 13])
    np.testing.assert_array_equal(points, again)
    assert not np.array_equal(points[0], points[2])
    # sequence seeds, e.g. (run seed, patch index)
    a, _ = make_prompts(images[:1], cfg, seeds=[(0, 5)])
    b, _ = make_prompts(images[:1], cfg, seeds=[(0, 6)])
    assert not np.array_equal(a, b)


def test_make_prompts_input_checks() -> None:
    with pytest.raises(ValueError, match="seeds"):
        make_prompts(np.zeros((2, 8, 8), np.float32), PromptConfig(), seeds=[1])
    with pytest.raises(Exception, match="B, S, S"):
        make_prompts(np.zeros((8, 8), np.float32), PromptConfig(), seeds=[1])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_points": 0},
        {"bright_quantile": 1.0},
        {"bright_quantile": -0.1},
        {"denoise_ksize": 4},
        {"denoise_ksize": 0},
        {"min_object_px": -1},
        {"morph_radius": -1},
        {"min_contrast": -0.1},
        {"reference_size": 0},
    ],
)
def test_config_validation(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        PromptConfig(**kwargs)
