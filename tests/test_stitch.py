"""Stitching: exact reassembly, one patch per pixel (no blending), skipped patches stay empty."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from samsem.runtime.stages.stitch import paste_owned, stitch
from samsem.runtime.stages.tiling import TilingConfig, extract_patch, make_tiling


@settings(max_examples=40, deadline=None)
@given(
    height=st.integers(1, 700),
    width=st.integers(1, 700),
    patch=st.integers(16, 256),
    overlap=st.floats(0.1, 0.5),
    seed=st.integers(0, 2**16),
)
def test_identity_segmenter_reproduces_input(
    height: int, width: int, patch: int, overlap: float, seed: int
) -> None:
    image = np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)
    tiling = make_tiling(height, width, TilingConfig(patch, overlap))
    pairs = ((i, extract_patch(image, box, patch)) for i, box in enumerate(tiling.boxes))
    out = stitch(tiling, pairs)
    assert out.dtype == np.uint8 and out.shape == (height, width)
    np.testing.assert_array_equal(out, image)


def test_each_pixel_comes_from_its_nearest_patch() -> None:
    height, width, patch = 1100, 900, 256
    tiling = make_tiling(height, width, TilingConfig(patch, 0.25))
    # patch i answers the constant i + 1 everywhere: the stitched value names the patch used per pixel
    out = stitch(tiling, ((i, np.full((patch, patch), i + 1, np.uint8)) for i in range(len(tiling))))
    cy = tiling.ys + patch / 2
    cx = tiling.xs + patch / 2
    iy = np.argmin(np.abs(np.arange(height)[:, None] + 0.5 - cy[None]), axis=1)
    ix = np.argmin(np.abs(np.arange(width)[:, None] + 0.5 - cx[None]), axis=1)
    expected = iy[:, None] * len(tiling.xs) + ix[None, :] + 1
    np.testing.assert_array_equal(out, expected)


def test_skipped_patches_stay_empty_and_out_is_filled_in_place() -> None:
    tiling = make_tiling(600, 600, TilingConfig(256, 0.1))
    out = np.zeros((600, 600), np.uint8)
    res = stitch(tiling, [(0, np.ones((256, 256), np.uint8))], out=out)
    assert res is out
    y0, x0, y1, x1 = tiling.owned[0]
    assert out[y0:y1, x0:x1].all()
    assert out.sum() == (y1 - y0) * (x1 - x0)


def test_paste_owned_accepts_clipped_patch_result() -> None:
    out = np.zeros((10, 12), np.uint8)
    mask = np.arange(6 * 7, dtype=np.uint8).reshape(6, 7)  # box-sized, not patch-sized
    paste_owned(out, mask, np.array([4, 5, 10, 12]), np.array([5, 6, 10, 12]))
    np.testing.assert_array_equal(out[5:10, 6:12], mask[1:6, 1:7])
    assert out[:5].sum() == 0 and out[:, :6].sum() == 0


def test_paste_owned_rejects_mask_not_covering_owned_region() -> None:
    out = np.zeros((10, 10), np.uint8)
    with pytest.raises(ValueError, match="does not cover"):
        paste_owned(out, np.ones((4, 4), np.uint8), np.array([0, 0, 8, 8]), np.array([0, 0, 6, 6]))


def test_stitch_rejects_bad_index_and_shape() -> None:
    tiling = make_tiling(100, 100, TilingConfig(64, 0.1))
    with pytest.raises(IndexError):
        stitch(tiling, [(len(tiling), np.zeros((64, 64), np.uint8))])
    with pytest.raises(ValueError, match="tiling covers"):
        stitch(tiling, [], out=np.zeros((99, 100), np.uint8))
