"""Exact rasterization of polygons with holes: the one rule every samsem vector reader uses.

Rule: pixel (r, c) is metal when its centre ``(c + 0.5, r + 0.5)`` (corner coordinates, see
samsem.vector.extract) lies inside or on the outline of a polygon, where a polygon's inside is given by
the even-odd rule over its rings (so holes cut) and polygons are united. This is samsem.svg's "inside or
on its outline" rule, computed exactly instead of by cv2: a crossing of a ring with a pixel-centre row is
``x0 + (y - y0) * (x1 - x0) / (y1 - y0)``, exact in float64 whenever it is a whole pixel position and the
vertices are integers or half-integers (vertices up to 2**20 px), so a centre lying exactly on a
slanted edge is always found on it. Polygons from samsem.vector.extract (vertices on pixel corners) cover
exactly the pixels they were made from.

Spans are produced row by row from an edge table, so memory is proportional to the polygons, not to the
image; :func:`rasterize_runs` returns them as horizontal runs tagged with their group (line) and
:func:`fill` paints them into a mask.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np


@nb.njit(cache=True)
def _sort_small(a: np.ndarray, n: int) -> None:
    if n > 32:
        a[:n] = np.sort(a[:n])
        return
    for i in range(1, n):
        v = a[i]
        j = i - 1
        while j >= 0 and a[j] > v:
            a[j + 1] = a[j]
            j -= 1
        a[j + 1] = v


@nb.njit(cache=True)
def _emit(row, s, e, group, paint, out_row, out_start, out_end, out_group, n, width):
    """Store (or paint) the span of pixels s..e (inclusive, clipped to the image) in row `row`."""
    if s < 0:
        s = 0
    if e > width - 1:
        e = width - 1
    if s > e:
        return n
    if paint.shape[0] > 0:
        paint[row, s : e + 1] = 1
        return n
    if n < out_row.shape[0]:
        out_row[n] = row
        out_start[n] = s
        out_end[n] = e + 1
        out_group[n] = group
    return n + 1


@nb.njit(cache=True)
def _polygon(xy, rings, r_lo, r_hi, group, height, width, paint, out_row, out_start, out_end, out_group, n):
    """Rasterize the polygon made of rings r_lo..r_hi-1 (even-odd, closed); returns the span count."""
    n_edges = 0
    for k in range(r_lo, r_hi):
        n_edges += rings[k + 1] - rings[k]
    e_y0 = np.empty(n_edges, np.float64)  # lower y (top on screen)
    e_y1 = np.empty(n_edges, np.float64)
    e_x0 = np.empty(n_edges, np.float64)  # x at e_y0
    e_x1 = np.empty(n_edges, np.float64)
    m = 0
    ymin = np.inf
    ymax = -np.inf
    for k in range(r_lo, r_hi):
        lo, hi = rings[k], rings[k + 1]
        for i in range(lo, hi):
            j = i + 1 if i + 1 < hi else lo
            xa, ya, xb, yb = xy[i, 0], xy[i, 1], xy[j, 0], xy[j, 1]
            ymin = min(ymin, ya)
            ymax = max(ymax, ya)
            # on-outline pixels the scanline crossings miss: vertices and horizontal edges on a centre row
            fy = ya - 0.5
            if fy == math.floor(fy) and 0 <= fy < height:
                if ya == yb:
                    s = math.ceil(min(xa, xb) - 0.5)
                    e = math.floor(max(xa, xb) - 0.5)
                else:
                    s = math.ceil(xa - 0.5)
                    e = math.floor(xa - 0.5)
                n = _emit(int(fy), s, e, group, paint, out_row, out_start, out_end, out_group, n, width)
            if ya == yb:
                continue
            if ya < yb:
                e_y0[m], e_y1[m], e_x0[m], e_x1[m] = ya, yb, xa, xb
            else:
                e_y0[m], e_y1[m], e_x0[m], e_x1[m] = yb, ya, xb, xa
            m += 1
    if m == 0:
        return n
    order = np.argsort(e_y0[:m])
    active = np.empty(m, np.int64)
    cross = np.empty(m, np.float64)
    n_act = 0
    nxt = 0
    r0 = max(0, math.ceil(ymin - 0.5))
    r1 = min(height - 1, math.floor(ymax - 0.5))
    # skip edges that end above the first row
    for r in range(r0, r1 + 1):
        yc = r + 0.5
        while nxt < m and e_y0[order[nxt]] <= yc:
            active[n_act] = order[nxt]
            n_act += 1
            nxt += 1
        keep = 0
        for t in range(n_act):
            ei = active[t]
            if e_y1[ei] > yc:
                active[keep] = ei
                keep += 1
        n_act = keep
        for t in range(n_act):
            ei = active[t]
            y0, x0 = e_y0[ei], e_x0[ei]
            cross[t] = x0 + (yc - y0) * (e_x1[ei] - x0) / (e_y1[ei] - y0)
        _sort_small(cross, n_act)
        for t in range(0, n_act - 1, 2):
            s = math.ceil(cross[t] - 0.5)
            e = math.floor(cross[t + 1] - 0.5)
            n = _emit(r, s, e, group, paint, out_row, out_start, out_end, out_group, n, width)
    return n


@nb.njit(cache=True)
def _rasterize(xy, rings, polygons, groups, height, width, paint, out_row, out_start, out_end, out_group):
    n = 0
    for g in range(groups.shape[0] - 1):
        for p in range(groups[g], groups[g + 1]):
            n = _polygon(
                xy,
                rings,
                polygons[p],
                polygons[p + 1],
                g + 1,
                height,
                width,
                paint,
                out_row,
                out_start,
                out_end,
                out_group,
                n,
            )
    return n


@nb.njit(cache=True)
def merge_runs(row, start, end):
    """Merge raster-ordered spans that overlap or touch in a row into maximal runs.

    Returns (u_row, u_start, u_end, span_run): the runs and, per span, the index of its run.
    """
    n = row.shape[0]
    u_row = np.empty(n, np.int32)
    u_start = np.empty(n, np.int32)
    u_end = np.empty(n, np.int32)
    span_run = np.empty(n, np.int64)
    m = -1
    for i in range(n):
        if m >= 0 and row[i] == u_row[m] and start[i] <= u_end[m]:
            u_end[m] = max(u_end[m], end[i])
        else:
            m += 1
            u_row[m] = row[i]
            u_start[m] = start[i]
            u_end[m] = end[i]
        span_run[i] = m
    return u_row[: m + 1], u_start[: m + 1], u_end[: m + 1], span_run


_NO_PAINT = np.zeros((0, 0), np.uint8)


def _as_float(xy: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(xy, dtype=np.float64).reshape(-1, 2)


def fill(
    mask: np.ndarray, xy: np.ndarray, rings: np.ndarray, polygons: np.ndarray | None = None
) -> np.ndarray:
    """Paint polygons into ``mask`` ((H, W) uint8, set to 1 where covered) and return it.

    xy: (V, 2) vertices in corner coordinates; rings: (R + 1,) int64 vertex offsets; polygons: (P + 1,)
    int64 ring offsets (each polygon's rings are filled together by the even-odd rule); default: every
    ring is a polygon of its own.
    """
    rings = np.asarray(rings, np.int64)
    if polygons is None:
        polygons = np.arange(len(rings), dtype=np.int64)
    polygons = np.asarray(polygons, np.int64)
    groups = np.array([0, len(polygons) - 1], np.int64)
    e = np.empty(0, np.int32)
    _rasterize(_as_float(xy), rings, polygons, groups, mask.shape[0], mask.shape[1], mask, e, e, e, e)
    return mask


def rasterize_runs(
    xy: np.ndarray,
    rings: np.ndarray,
    polygons: np.ndarray,
    groups: np.ndarray,
    shape: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Covered pixels as horizontal spans tagged with their group (1-based).

    groups: (G + 1,) offsets into polygons. Returns (row, start, end, group), four (S,) int32 arrays sorted
    in raster order (by row, then start); span i covers ``row[i], start[i]:end[i]``. Spans of one group
    may overlap or touch (one per polygon and crossing pair): merge them as needed.
    """
    xy = _as_float(xy)
    rings = np.asarray(rings, np.int64)
    polygons = np.asarray(polygons, np.int64)
    groups = np.asarray(groups, np.int64)
    h, w = shape
    # each pair of crossings of a row gives a span, plus at most one per vertex on a centre row
    nxt = np.arange(1, len(xy) + 1)
    nxt[rings[1:] - 1] = rings[:-1]
    cap = int(np.abs(xy[nxt % max(len(xy), 1), 1] - xy[:, 1]).sum()) // 2 + len(xy) + 16
    bufs = [np.empty(cap, np.int32) for _ in range(4)]
    n = _rasterize(xy, rings, polygons, groups, h, w, _NO_PAINT, *bufs)
    if n > cap:
        raise AssertionError(f"span buffer overflow ({n} > {cap})")
    row, start, end, group = (b[:n] for b in bufs)
    order = np.lexsort((start, row))
    return row[order], start[order], end[order], group[order]
