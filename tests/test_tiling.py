"""Patch grid: positions, guaranteed overlap, nearest-centre ownership, patch extraction."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from samsem.errors import ConfigError, InputError
from samsem.runtime.stages.tiling import TilingConfig, axis_starts, extract_patch, make_tiling


def _min_overlap_px(patch: int, overlap: float) -> int:
    return math.ceil(overlap * patch - 1e-9)


def test_paper_grid_10k_image() -> None:
    starts = axis_starts(10000, 512, 0.10)
    assert len(starts) == 22
    assert starts[0] == 0 and starts[-1] == 10000 - 512
    assert np.min(starts[:-1] + 512 - starts[1:]) >= 52  # 10 % of 512 = 51.2 → 52 whole pixels
    tiling = make_tiling(10000, 10000, TilingConfig())
    assert len(tiling) == 484
    assert tiling.boxes.shape == (484, 4) and tiling.owned.shape == (484, 4)


def test_small_image_is_one_clipped_patch() -> None:
    tiling = make_tiling(300, 700, TilingConfig(patch_size=512))
    assert tiling.ys.tolist() == [0] and tiling.xs.tolist() == [0, 188]
    assert tiling.boxes.tolist() == [[0, 0, 300, 512], [0, 188, 300, 700]]
    assert tiling.owned.tolist() == [[0, 0, 300, 350], [0, 350, 300, 700]]


def test_exact_fit_has_no_extra_patch() -> None:
    # 3 patches of 100 with step 90 cover exactly 280 px
    assert axis_starts(280, 100, 0.10).tolist() == [0, 90, 180]
    assert axis_starts(281, 100, 0.10).tolist() == [0, 60, 121, 181]
    assert axis_starts(100, 100, 0.10).tolist() == [0]
    assert axis_starts(101, 100, 0.0).tolist() == [0, 1]


@settings(max_examples=300, deadline=None)
@given(
    length=st.integers(1, 3000),
    patch=st.integers(16, 512),
    overlap=st.floats(0.1, 0.5),
)
def test_axis_starts_properties(length: int, patch: int, overlap: float) -> None:
    starts = axis_starts(length, patch, overlap)
    assert starts.dtype == np.int64
    assert starts[0] == 0 and starts[-1] == max(0, length - patch)
    assert np.all(np.diff(starts) > 0)
    if len(starts) > 1:
        assert np.min(starts[:-1] + patch - starts[1:]) >= _min_overlap_px(patch, overlap)
        # minimal: one patch fewer could not keep the overlap
        step = patch - _min_overlap_px(patch, overlap)
        assert (len(starts) - 2) * step < length - patch


def _owner_by_nearest_centre(length: int, starts: np.ndarray, patch: int) -> np.ndarray:
    centres = starts + patch / 2
    dist = np.abs(np.arange(length)[:, None] + 0.5 - centres[None, :])
    return np.argmin(dist, axis=1)  # first minimum = lower patch on ties


@settings(max_examples=60, deadline=None)
@given(
    height=st.integers(1, 3000),
    width=st.integers(1, 3000),
    patch=st.integers(16, 512),
    overlap=st.floats(0.1, 0.5),
)
def test_owned_regions_partition_the_image(height: int, width: int, patch: int, overlap: float) -> None:
    tiling = make_tiling(height, width, TilingConfig(patch, overlap))
    boxes, owned = tiling.boxes, tiling.owned
    # owned inside box, box inside the image
    assert np.all(owned[:, :2] >= boxes[:, :2]) and np.all(owned[:, 2:] <= boxes[:, 2:])
    assert np.all(boxes[:, :2] >= 0) and np.all(boxes[:, 2] <= height) and np.all(boxes[:, 3] <= width)
    assert np.all(owned[:, 2:] > owned[:, :2])
    # every pixel owned exactly once
    count = np.zeros((height, width), np.int32)
    for y0, x0, y1, x1 in owned:
        count[y0:y1, x0:x1] += 1
    assert np.all(count == 1)


@settings(max_examples=100, deadline=None)
@given(length=st.integers(1, 3000), patch=st.integers(16, 512), overlap=st.floats(0.1, 0.5))
def test_owner_is_nearest_centre_ties_to_lower(length: int, patch: int, overlap: float) -> None:
    tiling = make_tiling(length, 1, TilingConfig(patch, overlap))
    owner = np.empty(length, np.int64)
    for i, (y0, _, y1, _) in enumerate(tiling.owned):
        owner[y0:y1] = i
    np.testing.assert_array_equal(owner, _owner_by_nearest_centre(length, tiling.ys, patch))


def test_tie_goes_to_lower_patch() -> None:
    # starts 0 and 3 with patch 4: centres 2 and 5, pixel 3 (centre 3.5) is equidistant
    tiling = make_tiling(7, 1, TilingConfig(patch_size=4, min_overlap=0.25))
    assert tiling.ys.tolist() == [0, 3]
    assert tiling.owned[:, [0, 2]].tolist() == [[0, 4], [4, 7]]


def test_row_major_order() -> None:
    tiling = make_tiling(1000, 1500, TilingConfig(patch_size=512))
    ny, nx = tiling.shape
    assert len(tiling) == ny * nx
    assert tiling.boxes[1, 0] == tiling.boxes[0, 0] and tiling.boxes[1, 1] > tiling.boxes[0, 1]
    assert tiling.boxes[nx, 0] > tiling.boxes[0, 0] and tiling.boxes[nx, 1] == 0


def test_extract_patch_mirrors_and_copies() -> None:
    image = np.arange(6 * 5, dtype=np.uint16).reshape(6, 5)
    patch = extract_patch(image, np.array([0, 0, 6, 5]), 8)
    assert patch.shape == (8, 8) and patch.dtype == np.uint16
    np.testing.assert_array_equal(patch, np.pad(image, ((0, 2), (0, 3)), mode="reflect"))
    # a box much smaller than the patch is mirrored again and again, like np.pad; a 1-px side repeats
    np.testing.assert_array_equal(
        extract_patch(image, np.array([1, 2, 4, 4]), 9), np.pad(image[1:4, 2:4], ((0, 6), (0, 7)), "reflect")
    )
    assert np.all(extract_patch(image, np.array([2, 0, 3, 5]), 5) == image[2])
    full = extract_patch(image, np.array([1, 1, 5, 5]), 4)
    np.testing.assert_array_equal(full, image[1:5, 1:5])
    full[0, 0] = 999
    assert image[1, 1] == 6  # a copy, not a view


def test_classical_threshold_unaffected_by_padding() -> None:
    """An image smaller than a patch is segmented as if it filled the patch: no flat block of padding
    for Otsu to take as the background (it used to mark the whole image as metal)."""
    from samsem.runtime.load import classical_pipeline

    image = np.full((300, 280), 120, np.uint8)
    image[::40] = 200  # 1-px bright lines every 40 rows, widened to 8 px
    for k in range(1, 8):
        image[k::40] = 200
    mask = classical_pipeline("classical:otsu").segment(image).mask
    np.testing.assert_array_equal(mask, (image == 200).astype(np.uint8))


def test_extract_patch_rejects_oversized_box() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        extract_patch(np.zeros((10, 10)), np.array([0, 0, 10, 10]), 8)


@pytest.mark.parametrize(
    ("patch", "overlap"), [(0, 0.1), (-4, 0.1), (512, -0.1), (512, 1.0), (512, 1.5), (1, 0.5)]
)
def test_config_validation(patch: int, overlap: float) -> None:
    with pytest.raises(ConfigError):
        TilingConfig(patch_size=patch, min_overlap=overlap)


def test_empty_image_rejected() -> None:
    with pytest.raises(InputError):
        make_tiling(0, 10, TilingConfig())
