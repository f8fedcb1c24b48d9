"""8-connected component labelling in Numba, shared by the speckle counter and the ESD metric.

The core is a run-based two-pass union-find: each row is split into runs of foreground pixels
(:func:`scan_runs`), then each run is joined with every run of the previous row it touches diagonally or
directly and labels are made consecutive in raster order of each component's first run
(:func:`link_runs`). Working on runs instead of pixels keeps the labelling cost proportional to the number
of runs, which is small for line-like IC masks; the pixel scan itself can skip 8 pixels at a time through
a uint64 view of a byte mask (:func:`word_view`).

:func:`label_runs` is callable from other Numba kernels (e.g. one call per patch inside a ``prange``)
with caller-owned buffers, so no allocation happens per patch.
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


@nb.njit(cache=True, inline="always")
def relabel(run_label: np.ndarray, n: int) -> int:
    """Turn union-find parent pointers into labels 1..n_comp; parents precede children, so one sweep."""
    n_comp = 0
    for i in range(n):
        p = run_label[i]
        if p == i:
            n_comp += 1
            run_label[i] = n_comp
        else:
            run_label[i] = run_label[p]
    return n_comp


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


# bytes of a uint64 word: all ones / all high bits (for the has-a-zero-byte test)
_ONES = np.uint64(0x0101010101010101)
_HIGH = np.uint64(0x8080808080808080)
NO_WORDS = np.zeros((0, 0), np.uint64)  # ``words`` argument of scan_runs for pixel-by-pixel scanning


@nb.njit(cache=True, inline="always")
def _has_zero_byte(v: np.uint64) -> bool:
    return ((v - _ONES) & ~v & _HIGH) != 0


@nb.njit(cache=True)
def scan_runs(
    mask: np.ndarray, words: np.ndarray, run_row: np.ndarray, run_start: np.ndarray, run_end: np.ndarray
) -> int:
    """Find the horizontal foreground runs of ``mask`` (H, W) (any integer dtype, nonzero = foreground).

    words: ``word_view(mask)``, a (H, W // 8) uint64 view of the same pixels that lets the scan skip
    8 background or 8 foreground pixels at a time, or :data:`NO_WORDS` to scan pixel by pixel. Run i,
    in raster order, covers ``mask[run_row[i], run_start[i]:run_end[i]]``; the first
    ``len(run_row)`` runs are stored and the total number of runs is returned (more than the buffers
    hold when they were too small: call again with larger ones).
    """
    h, w = mask.shape
    if words.shape[0] == h and words.shape[1] * 8 == w and w > 0:
        return _scan_words(mask, words, run_row, run_start, run_end)
    cap = run_row.shape[0]
    n = 0
    for y in range(h):
        x = 0
        while x < w:
            if mask[y, x] == 0:
                x += 1
                continue
            s = x
            while x < w and mask[y, x] != 0:
                x += 1
            if n < cap:
                run_row[n] = y
                run_start[n] = s
                run_end[n] = x
            n += 1
    return n


@nb.njit(cache=True)
def _scan_words(mask, words, run_row, run_start, run_end) -> int:
    """scan_runs skipping whole 8-pixel words that are all background or all foreground."""
    h, w = mask.shape
    cap = run_row.shape[0]
    n = 0
    for y in range(h):
        x = 0
        while x < w:
            while x < w and mask[y, x] == 0:  # background
                if (x & 7) == 0:
                    while x < w and words[y, x >> 3] == 0:
                        x += 8
                    if x >= w or mask[y, x] != 0:
                        break
                x += 1
            if x >= w:
                break
            s = x
            while x < w and mask[y, x] != 0:  # foreground
                if (x & 7) == 0:
                    while x < w and not _has_zero_byte(words[y, x >> 3]):
                        x += 8
                    if x >= w or mask[y, x] == 0:
                        break
                x += 1
            if n < cap:
                run_row[n] = y
                run_start[n] = s
                run_end[n] = x
            n += 1
    return n


@nb.njit(cache=True)
def link_runs(
    run_row: np.ndarray,
    run_start: np.ndarray,
    run_end: np.ndarray,
    run_label: np.ndarray,
    n_runs: int,
    diagonal: bool = True,
) -> int:
    """Label the connected components of the first ``n_runs`` runs (raster order, as from scan_runs):
    8-connected, or 4-connected with ``diagonal=False``.

    On return ``run_label[i]`` is the component of run i in ``1..n``, numbered in raster order of each
    component's first pixel. Returns n.
    """
    reach = 1 if diagonal else 0  # runs above join when they overlap [s - reach, e + reach)
    prev_first = 0  # runs of the row above the current one are [prev_first, prev_last)
    prev_last = 0
    i = 0
    while i < n_runs:
        y = run_row[i]
        row_first = i
        j = prev_first  # runs above ending before this run can never touch a later one
        while i < n_runs and run_row[i] == y:
            s = run_start[i]
            e = run_end[i]
            run_label[i] = i  # parent pointer during the first pass (always <= own index)
            while j < prev_last and run_end[j] + reach <= s:
                j += 1
            k = j
            while k < prev_last and run_start[k] < e + reach:
                _union(run_label, i, k)
                k += 1
            i += 1
        if i < n_runs and run_row[i] == y + 1:
            prev_first = row_first
            prev_last = i
        else:  # the next row with runs is not adjacent
            prev_first = i
            prev_last = i
    return relabel(run_label, n_runs)


@nb.njit(cache=True)
def run_buffers(height: int, width: int) -> tuple[np.ndarray, ...]:
    """Scratch for :func:`label_runs` on any (height, width) mask: rows, starts, ends (int32) and labels
    (int64) sized for the most runs such a mask can have, and sizes (int64, one more: per component)."""
    cap = max(height * ((width + 1) // 2), 1)
    return (
        np.empty(cap, np.int32),
        np.empty(cap, np.int32),
        np.empty(cap, np.int32),
        np.empty(cap, np.int64),
        np.empty(cap + 1, np.int64),
    )


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
    return n, relabel(run_label, n)


def word_view(mask: np.ndarray) -> np.ndarray:
    """``mask`` (H, W) as (H, W // 8) uint64 words for :func:`scan_runs`, or NO_WORDS when it cannot be
    viewed so (not 1 byte per pixel, not C-contiguous, or W not a multiple of 8)."""
    ok = mask.dtype.itemsize == 1 and mask.flags.c_contiguous and mask.shape[1] % 8 == 0 and mask.size > 0
    return mask.view(np.uint64) if ok else NO_WORDS


def mask_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Horizontal runs of ``mask`` (H, W) (nonzero = foreground) with their 8-connected labels.

    Returns ``(row, start, end, label, n)``: (R,) int32 / int32 / int32 / int64 in raster order, run i
    covering ``mask[row[i], start[i]:end[i]]`` in component ``label[i]`` of ``1..n`` (numbered in raster
    order of each component's first pixel, like :func:`label8`).
    """
    m = _as_array(mask)
    words = word_view(m)
    cap = 16 * m.shape[0] + 1024  # enough for typical line masks; otherwise scan again with the count
    while True:
        row, start, end = (np.empty(cap, np.int32) for _ in range(3))
        n_runs = scan_runs(m, words, row, start, end)
        if n_runs <= cap:
            break
        cap = n_runs
    label = np.empty(n_runs, np.int64)
    n = link_runs(row, start, end, label, n_runs)
    return row[:n_runs], start[:n_runs], end[:n_runs], label, n


@nb.njit(cache=True)
def paint_runs(labels: np.ndarray, run_row, run_start, run_end, run_label, n_runs: int) -> None:
    """Write each run's label into ``labels`` (H, W) in place: the first ``n_runs`` runs (row, [start,
    end) columns, label)."""
    for i in range(n_runs):
        y = run_row[i]
        lab = run_label[i]
        for x in range(run_start[i], run_end[i]):
            labels[y, x] = lab


@nb.njit(cache=True)
def run_sizes(start: np.ndarray, end: np.ndarray, label: np.ndarray, n: int) -> np.ndarray:
    """Pixel count per label: (n + 1,) int64, index 0 unused."""
    sizes = np.zeros(n + 1, np.int64)
    for i in range(start.shape[0]):
        sizes[label[i]] += end[i] - start[i]
    return sizes


def _as_array(mask: np.ndarray) -> np.ndarray:
    m = np.ascontiguousarray(mask)
    return m.view(np.uint8) if m.dtype == np.bool_ else m


def label8(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Label 8-connected foreground components.

    mask: (H, W) integer or bool, nonzero = foreground. Returns ``(labels, n)`` with labels (H, W) int32,
    0 for background and ``1..n`` numbered in raster order of each component's first pixel.
    """
    row, start, end, label, n = mask_runs(mask)
    labels = np.zeros(mask.shape, np.int32)
    paint_runs(labels, row, start, end, label, row.shape[0])
    return labels, n


def component_sizes(mask: np.ndarray) -> np.ndarray:
    """Pixel count of each 8-connected component of ``mask`` (H, W): (n,) int64 in label order."""
    _, start, end, label, n = mask_runs(mask)
    return run_sizes(start, end, label, n)[1:]
