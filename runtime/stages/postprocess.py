"""Topology-safe clean-up of masks: speck removal per patch, small components and holes per image.

Nothing here can join two metal lines or split one:

* :func:`remove_specks` deletes 8-connected components of at most ``max_size`` pixels from each patch
  mask (the decision's speckles): deleting a whole component never touches another one.
* :func:`clean_mask` deletes components smaller than ``min_area`` and fills holes of at most ``max_hole``
  pixels. A hole is a 4-connected background component that does not touch the image border; with
  8-connected foreground and 4-connected background, such a hole is enclosed by one single foreground
  component (digital Jordan property), so filling it adds pixels to that line only.
* :func:`remove_faint` deletes small components that are barely brighter than the background around
  them: grain, charging stripes and noise the models took for metal. On the pipeline's output for the
  validation set, such false-positive components below 400 px had a median contrast (mean mapped
  intensity inside minus that of a 3-px ring outside) of 0.09 (90th percentile 0.13), true line pieces
  0.40 (10th percentile 0.20).

Both work on horizontal runs (:mod:`samsem.evaluation.components`), so memory grows with the number of
runs, not with the image: the full-image clean-up needs the mask and its run lists, no other image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numba as nb
import numpy as np

from samsem.errors import ConfigError
from samsem.evaluation.components import link_runs, mask_runs, paint_runs, run_buffers, run_sizes
from samsem.runtime.stages.speckle import label_specks


@dataclass(frozen=True)
class PostprocessConfig:
    """Clean-up of each image's final mask: components below ``min_area`` pixels are removed, holes up
    to ``max_hole`` pixels filled; components below ``faint_max_area`` pixels whose contrast to the
    background around them is below ``min_contrast`` (in mapped intensities, 0..1) are removed (0
    switches any of these off)."""

    min_area: int = 24
    max_hole: int = 64
    min_contrast: float = 0.12
    faint_max_area: int = 400

    def __post_init__(self) -> None:
        if min(self.min_area, self.max_hole, self.faint_max_area) < 0 or not 0 <= self.min_contrast <= 1:
            raise ConfigError(
                "need min_area, max_hole, faint_max_area >= 0 and 0 <= min_contrast <= 1, got "
                f"{self.min_area}, {self.max_hole}, {self.faint_max_area}, {self.min_contrast}"
            )


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


RING = 3  # px around a component whose background its contrast is measured against
_FAINT_COLUMNS = 1024  # candidates are judged in groups by column chunk (one mapped crop per group)


@nb.njit(cache=True)
def _boxes(row: np.ndarray, start: np.ndarray, end: np.ndarray, label: np.ndarray, n: int) -> np.ndarray:
    """Bounding box [y0, x0, y1, x1) per label: (n + 1, 4) int64, row 0 unused."""
    box = np.empty((n + 1, 4), np.int64)
    box[:, 0] = box[:, 1] = 1 << 62
    box[:, 2] = box[:, 3] = -1
    for i in range(row.shape[0]):
        k = label[i]
        box[k, 0] = min(box[k, 0], row[i])
        box[k, 1] = min(box[k, 1], start[i])
        box[k, 2] = max(box[k, 2], row[i] + 1)
        box[k, 3] = max(box[k, 3], end[i])
    return box


def remove_faint(
    mask: np.ndarray,
    mapped: Callable[[np.ndarray], np.ndarray],
    cfg: PostprocessConfig,
    band_rows: int = 256,
) -> int:
    """Delete from ``mask`` (H, W) uint8 {0, 1}, in place, the 8-connected components of fewer than
    ``cfg.faint_max_area`` pixels whose mean intensity exceeds the mean of the background pixels within
    :data:`RING` px around them by less than ``cfg.min_contrast``; returns the pixels deleted.

    ``mapped(box)`` gives the image inside ``box`` = [y0, x0, y1, x1] as the stages see it, (y1 - y0,
    x1 - x0) float32 in [0, 1]. Band by band like :func:`clean_mask` (memory: the run lists of one band
    of ``band_rows + faint_max_area + 2 RING`` rows, the mapped intensities of about 1024 of its
    columns at a time, and the runs to delete); each component is judged once, in the band holding its
    first row, against the mask as it was before any deletion, so the bands never change a result.
    """
    if cfg.min_contrast <= 0 or cfg.faint_max_area <= 0:
        return 0
    h = mask.shape[0]
    margin = cfg.faint_max_area + RING
    runs = [
        _faint_runs(mask, max(0, y0 - RING), min(h, y0 + band_rows + margin), y0, y0 + band_rows, mapped, cfg)
        for y0 in range(0, h, band_rows)
    ]
    rows, starts, ends = (np.concatenate(parts) for parts in zip(*runs, strict=True))
    paint_runs(mask, rows, starts, ends, np.zeros(len(rows), mask.dtype), len(rows))
    return int((ends - starts).sum())


def _faint_runs(
    mask: np.ndarray,
    a: int,
    b: int,
    own0: int,
    own1: int,
    mapped: Callable[[np.ndarray], np.ndarray],
    cfg: PostprocessConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The runs (rows, starts, ends) of the faint components (:func:`remove_faint`) among those of rows
    [a, b) of ``mask`` whose first row lies in [own0, own1) and that do not touch the window's cut
    bottom edge (larger than the limit then)."""
    window = mask[a:b]
    none = (np.empty(0, np.int64), np.empty(0, np.int32), np.empty(0, np.int32))
    if not window.any():
        return none
    row, start, end, label, n = mask_runs(window)
    small = run_sizes(start, end, label, n) < cfg.faint_max_area
    small[0] = False
    if b < mask.shape[0]:
        small[label[row == window.shape[0] - 1]] = False
    boxes = _boxes(row, start, end, label, n)
    first = boxes[:, 0] + a
    small &= (first >= own0) & (first < own1)
    candidates = np.flatnonzero(small)
    if candidates.size == 0:
        return none
    order = np.argsort(label, kind="stable")
    bounds = np.searchsorted(label[order], np.arange(n + 2))
    faint = np.zeros(n + 1, bool)
    ring = np.ones((2 * RING + 1, 2 * RING + 1), np.uint8)
    h, w = mask.shape
    crops = np.stack(  # each candidate with the ring around it: [y0, x0, y1, x1] in the image
        [
            np.maximum(0, a + boxes[candidates, 0] - RING),
            np.maximum(0, boxes[candidates, 1] - RING),
            np.minimum(h, a + boxes[candidates, 2] + RING),
            np.minimum(w, boxes[candidates, 3] + RING),
        ],
        axis=1,
    )
    chunk = crops[:, 1] // _FAINT_COLUMNS  # mapped intensities fetched per chunk of columns
    for c in np.unique(chunk):
        group = np.flatnonzero(chunk == c)
        gy0, gx0 = crops[group, 0].min(), crops[group, 1].min()
        values = mapped(np.array([gy0, gx0, crops[group, 2].max(), crops[group, 3].max()]))
        for j in group:
            k = candidates[j]
            y0, x0, y1, x1 = (int(v) for v in crops[j])
            comp = np.zeros((y1 - y0, x1 - x0), np.uint8)
            for i in order[bounds[k] : bounds[k + 1]]:
                comp[a + row[i] - y0, start[i] - x0 : end[i] - x0] = 1
            around = (cv2.dilate(comp, ring) > 0) & (mask[y0:y1, x0:x1] == 0)
            if not around.any():
                continue
            crop = values[y0 - gy0 : y1 - gy0, x0 - gx0 : x1 - gx0]
            faint[k] = crop[comp > 0].mean() - crop[around].mean() < cfg.min_contrast
    drop = faint[label]
    return row[drop].astype(np.int64) + a, start[drop], end[drop]
