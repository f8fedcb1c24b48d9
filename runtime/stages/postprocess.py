"""Topology-safe clean-up of masks: speck removal per patch, small components and holes per image.

Nothing here can join two metal lines or split one:

* :func:`remove_specks` deletes 8-connected components of at most ``max_size`` pixels from each patch
  mask (the decision's speckles): deleting a whole component never touches another one.
* :func:`clean_mask` deletes components smaller than ``min_area`` and fills holes of at most ``max_hole``
  pixels. A hole is a 4-connected background component that does not touch the image border; with
  8-connected foreground and 4-connected background, such a hole is enclosed by one single foreground
  component (digital Jordan property), so filling it adds pixels to that line only.

Both work on horizontal runs (:mod:`samsem.evaluation.components`), so memory grows with the number of
runs, not with the image: the full-image clean-up needs the mask and its run lists, no other image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba as nb
import numpy as np

from samsem.errors import ConfigError
from samsem.evaluation.components import link_runs, mask_runs, run_buffers, run_sizes
from samsem.runtime.stages.speckle import label_specks


@dataclass(frozen=True)
class PostprocessConfig:
    """Clean-up of each image's final mask: components below ``min_area`` pixels are removed, holes up
    to ``max_hole`` pixels filled (0 switches either off)."""

    min_area: int = 24
    max_hole: int = 64

    def __post_init__(self) -> None:
        if self.min_area < 0 or self.max_hole < 0:
            raise ConfigError(f"min_area and max_hole must be >= 0, got {self.min_area}, {self.max_hole}")


@nb.njit(cache=True, nogil=True)
def _remove_small(masks: np.ndarray, max_size: int, out: np.ndarray) -> None:
    """Copy masks (N, h, w) into out (zeroed) without their components of <= max_size pixels."""
    rows, starts, ends, labels, sizes = run_buffers(masks.shape[1], masks.shape[2])
    for i in range(masks.shape[0]):
        label_specks(masks[i], rows, starts, ends, labels, sizes, max_size, out[i], True)


def remove_specks(masks: np.ndarray, max_size: int) -> np.ndarray:
    """masks (N, h, w) uint8/bool, nonzero = foreground -> (N, h, w) uint8 {0, 1} without the 8-connected
    components of at most ``max_size`` pixels (runs on the calling thread only)."""
    m = np.ascontiguousarray(masks)
    m = m.view(np.uint8) if m.dtype == np.bool_ else (m != 0).view(np.uint8) if m.dtype != np.uint8 else m
    out = np.zeros(m.shape, np.uint8)
    if m.size:
        _remove_small(m, int(max_size), out)
    return out


@nb.njit(cache=True)
def _background_runs(mask: np.ndarray, row: np.ndarray, start: np.ndarray, end: np.ndarray) -> int:
    """Write the runs of zeros of ``mask`` (H, W) in raster order into the buffers (if they are large
    enough); returns how many there are."""
    h, w = mask.shape
    n = 0
    cap = row.shape[0]
    for y in range(h):
        x = 0
        while x < w:
            if mask[y, x] != 0:
                x += 1
                continue
            s = x
            while x < w and mask[y, x] == 0:
                x += 1
            if n < cap:
                row[n] = y
                start[n] = s
                end[n] = x
            n += 1
    return n


def _holes(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Runs of the background of ``mask`` (H, W) with their 4-connected labels, like
    :func:`~samsem.evaluation.components.mask_runs` but without an inverted copy of the mask."""
    cap = 16 * mask.shape[0] + 1024
    while True:
        row, start, end = (np.empty(cap, np.int32) for _ in range(3))
        n_runs = _background_runs(mask, row, start, end)
        if n_runs <= cap:
            break
        cap = n_runs
    label = np.empty(n_runs, np.int64)
    n = link_runs(row, start, end, label, n_runs, False)
    return row[:n_runs], start[:n_runs], end[:n_runs], label, n


@nb.njit(cache=True, nogil=True)
def _paint_where(mask, row, start, end, label, keep, value) -> int:
    """Set the runs whose component is marked in ``keep`` to ``value``; returns the pixels changed."""
    changed = 0
    for i in range(row.shape[0]):
        if keep[label[i]]:
            mask[row[i], start[i] : end[i]] = value
            changed += end[i] - start[i]
    return changed


def clean_mask(mask: np.ndarray, cfg: PostprocessConfig, band_rows: int = 1024) -> tuple[int, int]:
    """Remove small components and fill small holes of ``mask`` (H, W) uint8 {0, 1} in place, band by
    band (memory: the run lists of one band).

    Exact band-wise: a component of fewer than ``min_area`` pixels spans fewer rows, and a hole of at
    most ``max_hole`` pixels at most that many, so each band is labelled with that many extra rows above
    and below, and whatever touches the cut edges of that window is left alone (it is larger, or seen
    whole from another band). Changed rows are already final when the next window reads them. Returns
    (pixels removed, pixels filled).
    """
    h = mask.shape[0]
    removed = filled = 0
    for margin, step in ((cfg.min_area, _remove_small_components), (cfg.max_hole, _fill_small_holes)):
        if margin <= 0:
            continue
        for y0 in range(0, h, band_rows):
            a, b = max(0, y0 - margin), min(h, y0 + band_rows + margin)
            changed = step(mask[a:b], margin, a > 0, b < h)
            if step is _remove_small_components:
                removed += changed
            else:
                filled += changed
    return removed, filled


def _remove_small_components(window: np.ndarray, min_area: int, cut_top: bool, cut_bottom: bool) -> int:
    """Delete the components of ``window`` (rows of the mask, a view) below ``min_area`` pixels that do
    not touch a cut edge; returns the pixels deleted."""
    if not window.any():
        return 0
    row, start, end, label, n = mask_runs(window)
    small = run_sizes(start, end, label, n) < min_area
    small[0] = False
    cut = ((row == 0) & cut_top) | ((row == window.shape[0] - 1) & cut_bottom)
    small[label[cut]] = False
    return int(_paint_where(window, row, start, end, label, small, 0))


def _fill_small_holes(window: np.ndarray, max_hole: int, cut_top: bool, cut_bottom: bool) -> int:
    """Fill the 4-connected background components of ``window`` of at most ``max_hole`` pixels that
    touch neither the image border nor a cut edge; returns the pixels filled."""
    h, w = window.shape
    row, start, end, label, n = _holes(window)
    hole = run_sizes(start, end, label, n) <= max_hole
    hole[0] = False
    edge = (row == 0) | (row == h - 1) | (start == 0) | (end == w)  # the window's first and last rows
    hole[label[edge]] = False  # are the image border or a cut: not enclosed, or seen whole elsewhere
    return int(_paint_where(window, row, start, end, label, hole, 1))
