"""Augmentation: image and mask stay aligned, parameters follow the intensity, draws are seeded."""

from __future__ import annotations

import numpy as np
import pytest

from samsem.errors import ConfigError
from samsem.train.augment import AugmentConfig, AugmentParams, apply_params, augment, sample_params


def _sample(h: int = 96, w: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """An asymmetric pattern (so flips are visible): image == mask * 0.8 + 0.1."""
    mask = np.zeros((h, w), np.uint8)
    mask[10:20, 5:100] = 1
    mask[20:80, 90:100] = 1
    mask[60:70, 20:60] = 1
    return mask.astype(np.float32) * 0.8 + 0.1, mask


@pytest.mark.parametrize("seed", range(8))
def test_geometry_keeps_image_and_mask_aligned(seed):
    image, mask = _sample()
    params = sample_params(*image.shape, AugmentConfig(p=1.0, intensity=1.0), np.random.default_rng(seed))
    img, msk = apply_params(image, mask, params.geometric_only(), 64)
    assert img.shape == msk.shape == (64, 64) and img.dtype == np.float32 and msk.dtype == np.uint8
    recovered = img > 0.5
    agree = (recovered == msk.astype(bool)).mean()
    assert agree > 0.97  # only resampling at edges may differ


def test_full_augmentation_keeps_alignment_at_low_intensity():
    image, mask = _sample()
    rng = np.random.default_rng(0)
    for _ in range(5):
        img, msk = augment(image, mask, 64, AugmentConfig(p=1.0, intensity=0.1), rng)
        fg, bg = img[msk == 1].mean(), img[msk == 0].mean()
        assert fg > bg + 0.3


def test_flips_move_mask_with_image():
    image, mask = _sample(64, 64)
    ident = AugmentParams.identity(64, 64)
    v = AugmentParams(ident.crop, 0, 0.0, 1.0, 1.0, True, False, 0.0, 0)
    h = AugmentParams(ident.crop, 0, 0.0, 1.0, 1.0, False, True, 0.0, 0)
    img, msk = apply_params(image, mask, v, 64)
    np.testing.assert_array_equal(msk, mask[::-1])
    np.testing.assert_allclose(img, image[::-1])
    img, msk = apply_params(image, mask, h, 64)
    np.testing.assert_array_equal(msk, mask[:, ::-1])


def test_crop_scale_follows_intensity():
    for i in (0.2, 1.0):
        rng = np.random.default_rng(1)
        for _ in range(50):
            p = sample_params(200, 200, AugmentConfig(p=1.0, intensity=i), rng)
            _, _, h, w = p.crop
            assert (0.99 - 0.5 * i) * 0.95 <= h * w / 200**2 <= 0.99 * 1.05
            assert p.blur_kernel in (5, 7, 9) and 0.1 <= p.blur_sigma <= max(0.1, 5 * i)
            assert abs(p.brightness - 1) <= 0.75 * i and abs(p.contrast - 1) <= 0.5 * i
            assert p.noise_sigma == pytest.approx(0.5 * i)


def test_all_or_nothing_with_probability_p():
    rng = np.random.default_rng(2)
    draws = [sample_params(64, 64, AugmentConfig(p=0.3, intensity=0.5), rng) for _ in range(400)]
    applied = [d != AugmentParams.identity(64, 64) for d in draws]
    assert 0.22 < np.mean(applied) < 0.38
    for d, a in zip(draws, applied, strict=True):
        if a:
            assert d.blur_kernel > 0 and d.noise_sigma > 0


def test_no_augmentation_is_a_plain_resize():
    image, mask = _sample(128, 128)
    img, msk = augment(image, mask, 64, AugmentConfig(p=0.0), np.random.default_rng(0))
    assert msk.sum() == pytest.approx(mask.sum() / 4, rel=0.05)
    assert img.min() >= 0.1 - 1e-6 and img.max() <= 0.9 + 1e-6


def test_seeded_and_clipped():
    image, mask = _sample()
    cfg = AugmentConfig(p=1.0, intensity=1.0)
    a = augment(image, mask, 48, cfg, np.random.default_rng(5))
    b = augment(image, mask, 48, cfg, np.random.default_rng(5))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[0].min() >= 0.0 and a[0].max() <= 1.0


def test_config_validation():
    with pytest.raises(ConfigError):
        AugmentConfig(intensity=0.0)
    with pytest.raises(ConfigError):
        AugmentConfig(p=1.5)
