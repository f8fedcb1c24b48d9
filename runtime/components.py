"""8-connected component labelling in Numba, shared by the speckle counter and the ESD metric.

The core is a run-based two-pass union-find: each row is split into runs of foreground pixels, a run is
joined with every run of the previous row it touches diagonally or directly, and labels are then made
consecutive in raster order of each component's first run. Working on runs instead of pixels keeps the
cost proportional to the number of runs, which is small for line-like IC masks.

`label_into` is callable from other Numba kernels (e.g. one call per patch inside a ``prange``) with
caller-owned buffers, so no allocation happens per patch.
"""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True, inline="always")
def _find(parent: np.ndarray, x: int) -> int:
    root = x
    while parent[root] != root:
        root = parent[root]
    while parent[x] != root:  # path compression
        nxt = parent[x]
        parent[x] = root
        x = nxt
    return root


@nb.njit(cache=True, inline="always")
def _union(parent: np.ndarray, a: int, b: int) -> None:
    ra = _find(parent, a)
    rb = _find(parent, b)
    if ra < rb:
        parent[rb] = ra
    elif rb < ra:
        parent[ra] = rb


@nb.njit(cache=True)
def count_runs(mask: np.ndarray) -> int:
    """Number of horizontal foreground runs in ``mask`` (H, W) (upper bound for the run buffers)."""
    h, w = mask.shape
    n = 0
    for y in range(h):
        prev = False
        for x in range(w):
            cur = mask[y, x] != 0
            if cur and not prev:
                n += 1
            prev = cur
    return n


@nb.njit(cache=True)
def label_runs(
    mask: np.ndarray,
    run_row: np.ndarray,
    run_start: np.ndarray,
    run_end: np.ndarray,
    run_label: np.ndarray,
) -> tuple[int, int]:
    """Label the 8-connected components of ``mask`` run by run.

    mask: (H, W) any integer dtype, nonzero = foreground. The four run buffers must hold at least
    ``count_runs(mask)`` entries; on return run ``i`` covers ``mask[run_row[i], run_start[i]:run_end[i]]``
    and belongs to component ``run_label[i]`` in ``1..n``, numbered in raster order of first pixel.
    Returns ``(n_runs, n_components)``.
    """
    h, w = mask.shape
    n = 0
    prev_first = 0  # runs of the previous row are [prev_first, prev_last)
    prev_last = 0
    for y in range(h):
        row_first = n
        j = prev_first  # previous-row runs ending before this run can never touch a later one
        x = 0
        while x < w:
            if mask[y, x] == 0:
                x += 1
                continue
            s = x
            while x < w and mask[y, x] != 0:
                x += 1
            run_row[n] = y
            run_start[n] = s
            run_end[n] = x
            run_label[n] = n  # parent pointer during the first pass (always <= own index)
            # join with previous-row runs overlapping [s - 1, x + 1) (8-connectivity)
            while j < prev_last and run_end[j] < s:
                j += 1
            k = j
            while k < prev_last and run_start[k] <= x:
                _union(run_label, n, k)
                k += 1
            n += 1
        prev_first = row_first
        prev_last = n
    # second pass: parents precede children, so one forward sweep turns pointers into consecutive labels
    n_comp = 0
    for i in range(n):
        p = run_label[i]
        if p == i:
            n_comp += 1
            run_label[i] = n_comp
        else:
            run_label[i] = run_label[p]
    return n, n_comp


@nb.njit(cache=True)
def _paint(labels: np.ndarray, run_row, run_start, run_end, run_label, n_runs: int) -> None:
    for i in range(n_runs):
        y = run_row[i]
        lab = run_label[i]
        for x in range(run_start[i], run_end[i]):
            labels[y, x] = lab


@nb.njit(cache=True)
def _sizes(run_start, run_end, run_label, n_runs: int, n_comp: int) -> np.ndarray:
    sizes = np.zeros(n_comp + 1, np.int64)
    for i in range(n_runs):
        sizes[run_label[i]] += run_end[i] - run_start[i]
    return sizes


def _run_buffers(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    cap = max(count_runs(mask), 1)
    return (np.empty(cap, np.int32), np.empty(cap, np.int32), np.empty(cap, np.int32), np.empty(cap, np.int64))


def label8(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Label 8-connected foreground components.

    mask: (H, W) integer or bool, nonzero = foreground. Returns ``(labels, n)`` with labels (H, W) int32,
    0 for background and ``1..n`` numbered in raster order of each component's first pixel.
    """
    m = np.ascontiguousarray(mask).view(np.uint8) if mask.dtype == np.bool_ else np.ascontiguousarray(mask)
    rows, starts, ends, labs = _run_buffers(m)
    n_runs, n_comp = label_runs(m, rows, starts, ends, labs)
    labels = np.zeros(m.shape, np.int32)
    _paint(labels, rows, starts, ends, labs, n_runs)
    return labels, n_comp


def component_sizes(mask: np.ndarray) -> np.ndarray:
    """Pixel count of each 8-connected component of ``mask`` (H, W): (n,) int64 in label order."""
    m = np.ascontiguousarray(mask).view(np.uint8) if mask.dtype == np.bool_ else np.ascontiguousarray(mask)
    rows, starts, ends, labs = _run_buffers(m)
    n_runs, n_comp = label_runs(m, rows, starts, ends, labs)
    return _sizes(starts, ends, labs, n_runs, n_comp)[1:]
