"""Topology-safe clean-up of masks: speck removal per patch, small components and holes per image.

Nothing here can join two metal lines or split one:

* :func:`remove_specks` deletes 8-connected components of at most ``max_size`` pixels from each patch
  mask (the decision's speckles): deleting a whole component never touches another one.
* :func:`clean_mask` deletes components smaller than ``min_area`` and fills holes of at most ``max_hole``
  pixels. A hole is a 4-connected background component that does not touch the image border; with
  8-connected foreground and 4-connected background, such a hole is enclosed by one single foreground
  component (digital Jordan property), so filling it adds pixels to that line only.

Both work on horizontal runs (:mod:`samsem.evaluation.components`), so memory grows with the number of
runs, not with the image: the full-image clean-up needs the mask and one inverted copy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba as nb
import numpy as np

from samsem.errors import ConfigError
from samsem.evaluation.components import label_runs, mask_runs, run_sizes


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
    """Copy masks (N, h, w) into out without their components of <= max_size pixels."""
    h, w = masks.shape[1], masks.shape[2]
    cap = max(h * ((w + 1) // 2), 1)  # most runs an h x w mask can have
    rows = np.empty(cap, np.int32)
    starts = np.empty(cap, np.int32)
    ends = np.empty(cap, np.int32)
    labels = np.empty(cap, np.int64)
    for i in range(masks.shape[0]):
        n_runs, n_comp = label_runs(masks[i], rows, starts, ends, labels)
        sizes = run_sizes(starts[:n_runs], ends[:n_runs], labels[:n_runs], n_comp)
        for r in range(n_runs):
            if sizes[labels[r]] > max_size:
                out[i, rows[r], starts[r] : ends[r]] = 1


def remove_specks(masks: np.ndarray, max_size: int) -> np.ndarray:
    """masks (N, h, w) uint8/bool, nonzero = foreground -> (N, h, w) uint8 {0, 1} without the 8-connected
    components of at most ``max_size`` pixels (runs on the calling thread only)."""
    m = np.ascontiguousarray(masks)
    m = m.view(np.uint8) if m.dtype == np.bool_ else (m != 0).view(np.uint8) if m.dtype != np.uint8 else m
    out = np.zeros(m.shape, np.uint8)
    if m.size:
        _remove_small(m, int(max_size), out)
    return out


@nb.njit(cache=True, nogil=True)
def _paint_where(mask, row, start, end, label, keep, value) -> int:
    """Set the runs whose component is marked in ``keep`` to ``value``; returns the pixels changed."""
    changed = 0
    for i in range(row.shape[0]):
        if keep[label[i]]:
            mask[row[i], start[i] : end[i]] = value
            changed += end[i] - start[i]
    return changed


def clean_mask(mask: np.ndarray, cfg: PostprocessConfig) -> tuple[int, int]:
    """Remove small components and fill small holes of ``mask`` (H, W) uint8 {0, 1} in place.

    Returns (pixels removed, pixels filled).
    """
    removed = filled = 0
    h, w = mask.shape
    if cfg.min_area > 0 and mask.any():
        row, start, end, label, n = mask_runs(mask)
        small = run_sizes(start, end, label, n) < cfg.min_area
        small[0] = False
        removed = _paint_where(mask, row, start, end, label, small, 0)
    if cfg.max_hole > 0:
        background = np.ascontiguousarray(mask == 0).view(np.uint8)
        row, start, end, label, n = mask_runs(background, diagonal=False)
        hole = run_sizes(start, end, label, n) <= cfg.max_hole
        hole[0] = False
        edge = (row == 0) | (row == h - 1) | (start == 0) | (end == w)
        hole[label[edge]] = False  # touching the border: not enclosed
        filled = _paint_where(mask, row, start, end, label, hole, 1)
    return int(removed), int(filled)
