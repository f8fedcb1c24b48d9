"""Simplification of exact polygons within a tolerance that never changes a mask's lines.

Each ring is simplified by Douglas-Peucker on its own vertices (a kept subset, so vertices stay on
pixel corners) with the ring's first vertex, every keyhole bridge end and the vertex farthest from the
first one kept. Every point of the region between an original chain and its replacing chord lies within
the tolerance of the original chain, so the polygons rasterized by samsem.vector.raster differ from the
mask only in pixels whose centres lie within ``tolerance`` of the mask's outline (the pixel-edge
boundary).

Connectivity guarantee. The simplified polygons are rasterized line by line and compared with the mask
(the exact polygons' raster): each line must rasterize to one 8-connected component that overlaps that
line and no other, touches no other line's pixels, and keeps its ESD class (at least ``min_area``
pixels or not; wholly inside the ``border`` band or not), and its polygons must stay at least
:data:`CLEARANCE_PX` from every other line's polygons (exact distance between edges). Lines that fail
are simplified again with half the tolerance, down to a quarter pixel and then not at all (tolerance 0
is exact: two lines' exact polygons are at least 1 px apart), until every line passes. Hence
``esd(raster, mask, ESDConfig(border, min_area)) == esd(mask, mask, same config)``, for the strict config
(0, 0) zero errors, and no two lines' polygons closer than 0.5 px (a layout tool that merges the
polygons finds exactly the mask's lines).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from samsem.evaluation.components import link_runs
from samsem.evaluation.esd import overlap_pairs
from samsem.vector.extract import Polygons
from samsem.vector.raster import merge_runs, rasterize_runs

MIN_LEVEL_PX = 0.25  # smallest non-zero tolerance tried before falling back to the exact polygon
CLEARANCE_PX = 0.5  # least distance kept between two lines' polygons (exact ones are >= 1 px apart)
_CELL_PX = 32  # grid cell of the clearance check


@nb.njit(cache=True)
def _seg_dist(px, py, ax, ay, bx, by) -> float:
    dx = bx - ax
    dy = by - ay
    ll = dx * dx + dy * dy
    if ll == 0:
        return math.hypot(px - ax, py - ay)
    t = ((px - ax) * dx + (py - ay) * dy) / ll
    t = min(1.0, max(0.0, t))
    return math.hypot(px - ax - t * dx, py - ay - t * dy)


@nb.njit(cache=True)
def _douglas_peucker(xy, rings, pinned, ring_tol):
    """keep: (V,) bool, the vertices kept by Douglas-Peucker per ring (see the module docstring)."""
    n_v = xy.shape[0]
    keep = np.zeros(n_v, np.bool_)
    stack = np.empty((n_v + 2, 2), np.int64)
    for k in range(rings.shape[0] - 1):
        lo, hi = rings[k], rings[k + 1]
        n = hi - lo
        tol = ring_tol[k]
        if tol <= 0 or n <= 3:
            keep[lo:hi] = True
            continue
        # anchors: pinned vertices, the first vertex and the vertex farthest from it
        far = lo
        best = -1.0
        for i in range(lo, hi):
            d = math.hypot(xy[i, 0] - xy[lo, 0], xy[i, 1] - xy[lo, 1])
            if d > best:
                best = d
                far = i
        keep[lo] = True
        keep[far] = True
        for i in range(lo, hi):
            if pinned[i]:
                keep[i] = True
        anchors = np.flatnonzero(keep[lo:hi]) + lo
        top = 0
        for t in range(anchors.shape[0]):
            a = anchors[t]
            b = anchors[t + 1] if t + 1 < anchors.shape[0] else anchors[0] + n  # cyclic, unwrapped
            stack[top, 0] = a
            stack[top, 1] = b
            top += 1
        while top > 0:
            top -= 1
            a, b = stack[top, 0], stack[top, 1]
            if b - a < 2:
                continue
            ia = lo + (a - lo) % n
            ib = lo + (b - lo) % n
            worst = -1.0
            wi = -1
            for u in range(a + 1, b):
                iu = lo + (u - lo) % n
                d = _seg_dist(xy[iu, 0], xy[iu, 1], xy[ia, 0], xy[ia, 1], xy[ib, 0], xy[ib, 1])
                if d > worst:
                    worst = d
                    wi = u
            if worst > tol:
                keep[lo + (wi - lo) % n] = True
                stack[top, 0] = a
                stack[top, 1] = wi
                stack[top + 1, 0] = wi
                stack[top + 1, 1] = b
                top += 2
        kept = 0
        for i in range(lo, hi):
            kept += keep[i]
        if kept < 3:  # keep a triangle: the vertex farthest from the first-to-far segment
            worst = -1.0
            wi = lo
            for i in range(lo, hi):
                if not keep[i]:
                    d = _seg_dist(xy[i, 0], xy[i, 1], xy[lo, 0], xy[lo, 1], xy[far, 0], xy[far, 1])
                    if d > worst:
                        worst = d
                        wi = i
            keep[wi] = True
    return keep


@nb.njit(cache=True)
def _seg_seg_dist(ax, ay, bx, by, cx, cy, dx, dy) -> float:
    """Distance between segments ab and cd (0 where they cross)."""
    d1 = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
    d2 = (bx - ax) * (dy - ay) - (by - ay) * (dx - ax)
    d3 = (dx - cx) * (ay - cy) - (dy - cy) * (ax - cx)
    d4 = (dx - cx) * (by - cy) - (dy - cy) * (bx - cx)
    if ((d1 > 0 and d2 < 0) or (d1 < 0 and d2 > 0)) and ((d3 > 0 and d4 < 0) or (d3 < 0 and d4 > 0)):
        return 0.0
    return min(
        _seg_dist(ax, ay, cx, cy, dx, dy),
        _seg_dist(bx, by, cx, cy, dx, dy),
        _seg_dist(cx, cy, ax, ay, bx, by),
        _seg_dist(dx, dy, ax, ay, bx, by),
    )


@nb.njit(cache=True)
def _close_lines(xy, rings, ring_line, n_lines, clearance, cell):
    """(n_lines,) bool: lines with an edge closer than ``clearance`` to an edge of another line. Edges
    are binned into ``cell``-px grid cells by their bounding boxes grown by the clearance; pairs that
    share a cell are measured exactly."""
    n_rings = rings.shape[0] - 1
    n_e = rings[n_rings] - rings[0]
    e0 = np.empty(n_e, np.int64)
    e1 = np.empty(n_e, np.int64)
    e_line = np.empty(n_e, np.int64)
    k = 0
    for r in range(n_rings):
        lo, hi = rings[r], rings[r + 1]
        for i in range(lo, hi):
            e0[k] = i
            e1[k] = i + 1 if i + 1 < hi else lo
            e_line[k] = ring_line[r]
            k += 1
    box = np.empty((n_e, 4), np.int64)  # grid cells x0, x1, y0, y1 of each edge
    total = 0
    for j in range(n_e):
        a, b = e0[j], e1[j]
        box[j, 0] = math.floor((min(xy[a, 0], xy[b, 0]) - clearance) / cell)
        box[j, 1] = math.floor((max(xy[a, 0], xy[b, 0]) + clearance) / cell)
        box[j, 2] = math.floor((min(xy[a, 1], xy[b, 1]) - clearance) / cell)
        box[j, 3] = math.floor((max(xy[a, 1], xy[b, 1]) + clearance) / cell)
        total += (box[j, 1] - box[j, 0] + 1) * (box[j, 3] - box[j, 2] + 1)
    keys = np.empty(total, np.int64)
    edge = np.empty(total, np.int64)
    t = 0
    for j in range(n_e):
        for gy in range(box[j, 2], box[j, 3] + 1):
            for gx in range(box[j, 0], box[j, 1] + 1):
                keys[t] = (gy + 1) * (1 << 31) + gx + 1
                edge[t] = j
                t += 1
    order = np.argsort(keys)
    close = np.zeros(n_lines, np.bool_)
    g = 0
    while g < total:
        h = g
        while h < total and keys[order[h]] == keys[order[g]]:
            h += 1
        for p in range(g, h):
            i = edge[order[p]]
            for q in range(p + 1, h):
                j = edge[order[q]]
                li, lj = e_line[i], e_line[j]
                if li == lj or (close[li] and close[lj]):
                    continue
                a, b, c, d = e0[i], e1[i], e0[j], e1[j]
                dist = _seg_seg_dist(
                    xy[a, 0], xy[a, 1], xy[b, 0], xy[b, 1], xy[c, 0], xy[c, 1], xy[d, 0], xy[d, 1]
                )
                if dist < clearance:
                    close[li] = True
                    close[lj] = True
        g = h
    return close


@nb.njit(cache=True)
def _minmax(keys, values, n_keys):
    """Per key 0..n_keys-1: min and max of values (int64; empty keys get min > max)."""
    lo = np.full(n_keys, np.iinfo(np.int64).max, np.int64)
    hi = np.full(n_keys, -1, np.int64)
    for i in range(keys.shape[0]):
        k = keys[i]
        v = values[i]
        lo[k] = min(lo[k], v)
        hi[k] = max(hi[k], v)
    return lo, hi


@nb.njit(cache=True)
def _size_inner(row, start, end, label, n, h, w, border):
    """Per label 0..n: pixel count and whether a pixel lies outside the border band."""
    size = np.zeros(n + 1, np.int64)
    inner = np.zeros(n + 1, np.bool_)
    for i in range(row.shape[0]):
        size[label[i]] += end[i] - start[i]
        if border <= row[i] < h - border and max(start[i], border) < min(end[i], w - border):
            inner[label[i]] = True
    return size, inner


def _subset(polys: Polygons, keep: np.ndarray) -> Polygons:
    new_index = np.cumsum(keep) - 1
    kept_before = np.concatenate([[0], np.cumsum(keep)])
    bridge = np.where(polys.bridge >= 0, new_index[np.maximum(polys.bridge, 0)], -1)
    return Polygons(
        height=polys.height,
        width=polys.width,
        xy=polys.xy[keep],
        rings=kept_before[polys.rings].astype(np.int64),
        polygons=polys.polygons,
        lines=polys.lines,
        bridge=bridge,
    )


def _shared_corners(xy: np.ndarray) -> np.ndarray:
    """(V,) bool: vertices whose point is a vertex of another ring too (diagonal contacts of a line's
    pieces, a hole touching its exterior or another hole)."""
    key = xy[:, 0].astype(np.int64) << 32 | xy[:, 1].astype(np.int64)
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    return counts[inverse] > 1


def tolerance_levels(tolerance: float) -> list[float]:
    """Tolerances tried per line: tolerance, tolerance / 2, ... while >= MIN_LEVEL_PX, then 0."""
    levels = []
    t = float(tolerance)
    while t >= MIN_LEVEL_PX:
        levels.append(t)
        t /= 2
    return [*levels, 0.0]


def simplify(polys: Polygons, tolerance: float, *, border: int = 35, min_area: int = 35) -> Polygons:
    """Simplify exact polygons (from samsem.vector.extract) within ``tolerance`` pixels, keeping every line.

    border, min_area: the ESD rules whose per-line classes are preserved (samsem.evaluation.esd.ESDConfig
    defaults). See the module docstring for the guarantees. tolerance <= 0 returns ``polys`` unchanged.
    """
    return simplify_levels(polys, tolerance, border=border, min_area=min_area)[0]


def simplify_levels(
    polys: Polygons, tolerance: float, *, border: int = 35, min_area: int = 35
) -> tuple[Polygons, np.ndarray]:
    """:func:`simplify`, also returning each line's tolerance actually used: (N,) float64."""
    n_lines = polys.n_lines
    if not tolerance > 0 or n_lines == 0:
        return polys, np.zeros(n_lines)
    if polys.xy.dtype != np.int32:
        raise ValueError("simplify expects exact polygons from samsem.vector.extract (int32 vertices)")
    h, w = polys.height, polys.width
    levels = np.array(tolerance_levels(tolerance))
    xy = polys.xy.astype(np.float64)
    pinned = np.zeros(len(xy), np.bool_)
    pinned[polys.bridge[polys.bridge >= 0]] = True
    pinned[polys.rings[:-1]] = True
    pinned[_shared_corners(polys.xy)] = True
    ring_line = np.repeat(np.repeat(np.arange(n_lines), np.diff(polys.lines)), np.diff(polys.polygons))

    m_row, m_start, m_end, m_line = rasterize_runs(polys.xy, polys.rings, polys.polygons, polys.lines, (h, w))
    m_size, m_inner = _size_inner(m_row, m_start, m_end, m_line, n_lines, h, w, border)
    m_big = m_size >= min_area

    level = np.zeros(n_lines, np.int64)
    last = len(levels) - 1
    while True:
        keep = _douglas_peucker(xy, polys.rings, pinned, levels[level[ring_line]])
        out = _subset(polys, keep)
        row, start, end, line = rasterize_runs(out.xy, out.rings, out.polygons, out.lines, (h, w))
        u_row, u_start, u_end, span_run = merge_runs(row, start, end)
        label = np.empty(len(u_row), np.int64)
        n_comp = link_runs(u_row, u_start, u_end, label, len(u_row))
        comp = label[span_run]
        # a line's spans must form one component, and that component must hold no other line ...
        lc_lo, lc_hi = _minmax(line.astype(np.int64), comp, n_lines + 1)
        ct_lo, ct_hi = _minmax(comp, line.astype(np.int64), n_comp + 1)
        # ... and overlap the line's own pixels and no other line's
        pc, pl, _ = overlap_pairs(
            u_row, u_start, u_end, label, n_comp, m_row, m_start, m_end, m_line, n_lines
        )
        co_lo, co_hi = _minmax(pc, pl, n_comp + 1)
        c_size, c_inner = _size_inner(u_row, u_start, u_end, label, n_comp, h, w, border)
        comp_ok = (ct_lo == ct_hi) & (co_lo == co_hi) & (co_lo == ct_lo)
        ids = np.arange(1, n_lines + 1)
        c = np.clip(lc_lo[1:], 0, n_comp)
        line_ok = (
            (lc_lo[1:] == lc_hi[1:])
            & comp_ok[c]
            & (ct_lo[c] == ids)
            & ((c_size[c] >= min_area) == m_big[1:])
            & (c_inner[c] == m_inner[1:])
            & ~_close_lines(out.xy.astype(np.float64), out.rings, ring_line, n_lines, CLEARANCE_PX, _CELL_PX)
        )
        if line_ok.all():
            return out, levels[level]
        bad = ~line_ok & (level < last)
        if not bad.any():
            raise AssertionError("exact polygons failed the connectivity check (simplify bug)")
        level[bad] += 1
