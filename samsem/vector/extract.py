"""Exact polygons of a metal mask: one polygon with holes per 4-connected piece, grouped per line.

Geometry. Pixel (r, c) is the closed unit square ``[c, c+1] x [r, r+1]`` in *corner coordinates* (x right,
y down, origin at the top-left corner of the image); a mask is the union of its metal squares. Its
polygons are the boundaries of that union, so every vertex is an integer corner point, every edge is
axis-parallel and a polygon's area is its pixel count. (In samsem.svg's pixel-centre convention, where
integer coordinates are pixel centres, the same vertices sit at half-integers: subtract 0.5.)

Connectivity. A *line* is an 8-connected component of the mask (the ESD's lines, numbered 1..N in raster
order of their first pixel, like samsem.evaluation.components.label8). The squares of diagonal neighbours
only touch at a corner, so a line is made of one or more *pieces*, its 4-connected components: each piece
is one polygon (an exterior ring and zero or more hole rings), and polygons of one line may touch at
corner points. Rings are simple; a hole may touch the exterior or another hole at one corner point. The
result is a valid OGC/GeoJSON MultiPolygon per line.

Orientation. In corner coordinates (y down) exterior rings have positive shoelace area (clockwise on
screen) and holes negative; every ring starts at its top-left vertex (smallest y, then smallest x).

Keyholes. GDSII has no holes, so each hole carries a *bridge*: a horizontal segment from its first
vertex leftwards to a vertex of another ring of the same polygon (its exterior or a hole above or to its
left) through metal. The sweep inserts that target vertex where it falls in the middle of a vertical edge
(the only collinear vertices a ring can have). Splicing the holes in along their bridges gives one
weakly simple ring per polygon; since a bridge lies on a pixel-edge line it changes no rasterized pixel.

Algorithm. Horizontal runs of the mask are found band by band (so a mask can be streamed, e.g. from a
TIFF with samsem.io.read_region) and labelled for 4- and 8-connectivity with union-find; a single sweep
over the runs, one corner line at a time, then links the boundary cracks into rings. Memory is the runs
(20 bytes each) plus the vertices (about 24 bytes each), never a per-pixel array besides the mask.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numba as nb
import numpy as np

from samsem.evaluation.components import relabel, scan_runs, word_view

BAND_ROWS = 1024  # rows scanned per band by extract()


@dataclass(frozen=True, eq=False)
class Polygons:
    """Polygons of a mask, stored flat.

    height, width: mask size in pixels. xy: (V, 2) int32 vertices (x, y) in corner coordinates
    (simplification keeps a subset of them). rings: (R + 1,) int64 offsets, ring k is
    ``xy[rings[k]:rings[k + 1]]`` (implicitly closed). polygons: (P + 1,) int64 offsets into rings; the
    first ring of a polygon is its exterior, the others its holes. lines: (N + 1,) int64 offsets into
    polygons; line i (0-based) is the line with id i + 1. bridge: (R,) int64, for a hole ring the index
    into xy of its keyhole target vertex, -1 for exterior rings (see the module docstring).
    """

    height: int
    width: int
    xy: np.ndarray
    rings: np.ndarray
    polygons: np.ndarray
    lines: np.ndarray
    bridge: np.ndarray

    @property
    def n_lines(self) -> int:
        return len(self.lines) - 1

    @property
    def n_polygons(self) -> int:
        return len(self.polygons) - 1

    @property
    def n_rings(self) -> int:
        return len(self.rings) - 1

    def ring(self, k: int) -> np.ndarray:
        """Vertices of ring k: (K, 2) view of xy."""
        return self.xy[self.rings[k] : self.rings[k + 1]]

    def line_polygons(self, i: int) -> list[list[np.ndarray]]:
        """Polygons of line i (0-based) as lists of rings [exterior, *holes], each (K, 2)."""
        return [
            [self.ring(k) for k in range(self.polygons[p], self.polygons[p + 1])]
            for p in range(self.lines[i], self.lines[i + 1])
        ]

    def ring_areas(self) -> np.ndarray:
        """Signed shoelace area of every ring (positive for exteriors): (R,) float64."""
        return _ring_areas(self.xy.astype(np.float64), self.rings)

    def line_areas(self) -> np.ndarray:
        """Area of every line in square pixels (exteriors minus holes): (N,) float64."""
        ring_area = self.ring_areas()
        ring_line = np.repeat(np.repeat(np.arange(self.n_lines), np.diff(self.lines)), np.diff(self.polygons))
        return np.bincount(ring_line, weights=ring_area, minlength=self.n_lines)


@nb.njit(cache=True)
def _ring_areas(xy: np.ndarray, rings: np.ndarray) -> np.ndarray:
    out = np.zeros(rings.shape[0] - 1, np.float64)
    for k in range(rings.shape[0] - 1):
        lo, hi = rings[k], rings[k + 1]
        acc = 0.0
        for i in range(lo, hi):
            j = i + 1 if i + 1 < hi else lo
            acc += xy[i, 0] * xy[j, 1] - xy[j, 0] * xy[i, 1]
        out[k] = acc / 2
    return out


# ------------------------------------------------------------------------------------------------ runs


class _Runs:
    """Growable run arrays (row, start, end as int32) filled band by band."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.n = 0
        self.height = 0
        cap = 4096
        self.row = np.empty(cap, np.int32)
        self.start = np.empty(cap, np.int32)
        self.end = np.empty(cap, np.int32)

    def add_band(self, band: np.ndarray) -> None:
        band = np.ascontiguousarray(band)
        if band.dtype == np.bool_:
            band = band.view(np.uint8)
        if band.ndim != 2 or band.shape[1] != self.width:
            raise ValueError(f"band must be (h, {self.width}), got {band.shape}")
        words = word_view(band)
        free = self.row.shape[0] - self.n
        got = scan_runs(band, words, self.row[self.n :], self.start[self.n :], self.end[self.n :])
        if got > free:
            self._grow(self.n + got)
            got = scan_runs(band, words, self.row[self.n :], self.start[self.n :], self.end[self.n :])
        self.row[self.n : self.n + got] += self.height
        self.n += got
        self.height += band.shape[0]

    def _grow(self, need: int) -> None:
        cap = max(need, self.row.shape[0] * 3 // 2)
        for name in ("row", "start", "end"):
            old = getattr(self, name)
            new = np.empty(cap, np.int32)
            new[: self.n] = old[: self.n]
            setattr(self, name, new)


@nb.njit(cache=True)
def _find(parent: np.ndarray, x: int) -> int:
    root = x
    while parent[root] != root:
        root = parent[root]
    while parent[x] != root:
        nxt = parent[x]
        parent[x] = root
        x = nxt
    return root


@nb.njit(cache=True)
def _union(parent: np.ndarray, a: int, b: int) -> None:
    ra = _find(parent, a)
    rb = _find(parent, b)
    if ra < rb:
        parent[rb] = ra
    elif rb < ra:
        parent[ra] = rb


@nb.njit(cache=True)
def _label_runs(row, start, end, height):
    """4- and 8-connected labels of runs in raster order.

    Returns (row_ptr (height + 2,) int64, lab4 (n,) int32, n4, lab8 (n,) int32, n8); runs of row y are
    ``row_ptr[y]:row_ptr[y + 1]`` (row_ptr[height + 1] == n as a sentinel for the empty row below).
    """
    n = row.shape[0]
    row_ptr = np.zeros(height + 2, np.int64)
    for i in range(n):
        row_ptr[row[i] + 1] += 1
    for y in range(height):
        row_ptr[y + 1] += row_ptr[y]
    row_ptr[height + 1] = n
    p4 = np.arange(n).astype(np.int32)
    p8 = np.arange(n).astype(np.int32)
    for y in range(1, height):
        j = row_ptr[y - 1]
        j_end = row_ptr[y]
        for i in range(row_ptr[y], row_ptr[y + 1]):
            s, e = start[i], end[i]
            while j < j_end and end[j] < s:
                j += 1
            k = j
            while k < j_end and start[k] <= e:
                _union(p8, i, k)
                if end[k] > s and start[k] < e:
                    _union(p4, i, k)
                k += 1
    n4 = relabel(p4, p4.shape[0])
    n8 = relabel(p8, p8.shape[0])
    return row_ptr, p4, n4, p8, n8


# ----------------------------------------------------------------------------------------------- sweep


@nb.njit(cache=True)
def _new_vertex(vx, vy, vnext, part, nv, x, y):
    vx[nv] = x
    vy[nv] = y
    vnext[nv] = -1
    part[nv] = nv
    return nv + 1


@nb.njit(cache=True)
def _link(u, w, piece, vnext, part, ring_v, ring_piece, nr):
    """Edge u -> w between a chain's tail u and a chain's head w; returns the new ring count."""
    vnext[u] = w
    hu = part[u]
    tw = part[w]
    if hu == w:  # u's chain starts at w: the ring is closed
        ring_v[nr] = w
        ring_piece[nr] = piece
        return nr + 1
    part[hu] = tw
    part[tw] = hu
    return nr


@nb.njit(cache=True)
def _sweep(row_ptr, start, end, lab4, height):
    """Link the boundary cracks of the runs into rings (see the module docstring).

    Returns (vx, vy, vnext, nv, ring_v, ring_piece, nr, cand_v, cand_t, nc): vertex pool, one start vertex
    and piece label per ring, and (hole top-left vertex, bridge target vertex) candidates.
    """
    n_runs = start.shape[0]
    cap_v = 5 * n_runs + 16
    vx = np.empty(cap_v, np.int32)
    vy = np.empty(cap_v, np.int32)
    vnext = np.empty(cap_v, np.int32)
    part = np.empty(cap_v, np.int32)
    ring_v = np.empty(cap_v // 4 + 4, np.int32)
    ring_piece = np.empty(cap_v // 4 + 4, np.int32)
    cand_v = np.empty(n_runs + 4, np.int32)
    cand_t = np.empty(n_runs + 4, np.int32)
    lv = np.full(n_runs, -1, np.int32)  # head vertex above the (up-going) left edge of a run
    rv = np.full(n_runs, -1, np.int32)  # tail vertex above the (down-going) right edge of a run
    nv = 0
    nr = 0
    nc = 0
    for yl in range(height + 1):
        p_lo = row_ptr[yl - 1] if yl >= 1 else 0
        p_hi = row_ptr[yl] if yl >= 1 else 0
        q_lo = row_ptr[yl] if yl < height else 0
        q_hi = row_ptr[yl + 1] if yl < height else 0
        bp = 0  # boundary index over P runs: 2k = start of run p_lo + k, 2k + 1 = its end
        bq = 0
        np2 = 2 * (p_hi - p_lo)
        nq2 = 2 * (q_hi - q_lo)
        pend_e = -1  # source vertex of an east edge waiting for its target corner
        pend_w = -1  # target vertex of a west edge waiting for its source corner
        last_x = -1  # previous event corner facing right onto metal: its vertex, or the run to split
        last_t = -2
        last_q = -1
        while bp < np2 or bq < nq2:
            xp = 1 << 30
            if bp < np2:
                k = p_lo + (bp >> 1)
                xp = start[k] if (bp & 1) == 0 else end[k]
            xq = 1 << 30
            if bq < nq2:
                k = q_lo + (bq >> 1)
                xq = start[k] if (bq & 1) == 0 else end[k]
            x = min(xp, xq)
            pa = pb = qc = qd = -1
            if xp == x:
                k = p_lo + (bp >> 1)
                if (bp & 1) == 0:
                    pb = k
                else:
                    pa = k
                bp += 1
            elif bp & 1:
                pa = pb = p_lo + (bp >> 1)
            if xq == x:
                k = q_lo + (bq >> 1)
                if (bq & 1) == 0:
                    qd = k
                else:
                    qc = k
                bq += 1
            elif bq & 1:
                qc = qd = q_lo + (bq >> 1)
            config = (
                (8 if pa >= 0 else 0) | (4 if pb >= 0 else 0) | (2 if qc >= 0 else 0) | (1 if qd >= 0 else 0)
            )
            nt = -2
            nq = -1
            if config == 0b0111:  # up-out + left-in
                v = nv
                nv = _new_vertex(vx, vy, vnext, part, nv, x, yl)
                nr = _link(v, lv[pb], lab4[pb], vnext, part, ring_v, ring_piece, nr)
                nr = _link(pend_e, v, lab4[pb], vnext, part, ring_v, ring_piece, nr)
                nt = v
            elif config == 0b1000:  # up-in + left-out
                v = nv
                nv = _new_vertex(vx, vy, vnext, part, nv, x, yl)
                nr = _link(rv[pa], v, lab4[pa], vnext, part, ring_v, ring_piece, nr)
                nr = _link(v, pend_w, lab4[pa], vnext, part, ring_v, ring_piece, nr)
            elif config == 0b0100:  # up-out + right-in
                v = nv
                nv = _new_vertex(vx, vy, vnext, part, nv, x, yl)
                nr = _link(v, lv[pb], lab4[pb], vnext, part, ring_v, ring_piece, nr)
                pend_w = v
            elif config == 0b1011:  # up-in + right-out
                v = nv
                nv = _new_vertex(vx, vy, vnext, part, nv, x, yl)
                nr = _link(rv[pa], v, lab4[pa], vnext, part, ring_v, ring_piece, nr)
                pend_e = v
            elif config == 0b1101:  # down-in + left-out
                v = nv
                nv = _new_vertex(vx, vy, vnext, part, nv, x, yl)
                lv[qd] = v
                nr = _link(v, pend_w, lab4[qd], vnext, part, ring_v, ring_piece, nr)
                nt = v
            elif config == 0b0010:  # down-out + left-in
                v = nv
                nv = _new_vertex(vx, vy, vnext, part, nv, x, yl)
                rv[qc] = v
                nr = _link(pend_e, v, lab4[qc], vnext, part, ring_v, ring_piece, nr)
            elif config == 0b0001:  # down-in + right-out: top-left corner of a piece
                v = nv
                nv = _new_vertex(vx, vy, vnext, part, nv, x, yl)
                lv[qd] = v
                pend_e = v
            elif config == 0b1110:  # down-out + right-in: top-left corner of a hole
                v = nv
                nv = _new_vertex(vx, vy, vnext, part, nv, x, yl)
                rv[qc] = v
                pend_w = v
                target = last_t
                if target == -1:  # bridge lands on a straight vertical edge: split it there
                    target = nv
                    nv = _new_vertex(vx, vy, vnext, part, nv, last_x, yl)
                    nr = _link(target, lv[last_q], lab4[last_q], vnext, part, ring_v, ring_piece, nr)
                    lv[last_q] = target
                cand_v[nc] = v
                cand_t[nc] = target
                nc += 1
            elif config == 0b0101:  # straight up-going edge
                lv[qd] = lv[pb]
                nt = -1
                nq = qd
            elif config == 0b1010:  # straight down-going edge
                rv[qc] = rv[pa]
            elif config == 0b1001:  # saddle, metal at NW and SE
                v1 = nv
                nv = _new_vertex(vx, vy, vnext, part, nv, x, yl)
                v2 = nv
                nv = _new_vertex(vx, vy, vnext, part, nv, x, yl)
                nr = _link(rv[pa], v1, lab4[pa], vnext, part, ring_v, ring_piece, nr)
                lv[qd] = v2
                if lab4[pa] != lab4[qd]:  # different pieces: keep them apart
                    nr = _link(v1, pend_w, lab4[pa], vnext, part, ring_v, ring_piece, nr)
                    pend_e = v2
                else:  # one piece: keep the background regions apart
                    pend_e = v1
                    nr = _link(v2, pend_w, lab4[qd], vnext, part, ring_v, ring_piece, nr)
            elif config == 0b0110:  # saddle, metal at NE and SW
                v1 = nv
                nv = _new_vertex(vx, vy, vnext, part, nv, x, yl)
                v2 = nv
                nv = _new_vertex(vx, vy, vnext, part, nv, x, yl)
                nr = _link(v1, lv[pb], lab4[pb], vnext, part, ring_v, ring_piece, nr)
                rv[qc] = v2
                if lab4[pb] != lab4[qc]:
                    pend_w = v1
                    nr = _link(pend_e, v2, lab4[qc], vnext, part, ring_v, ring_piece, nr)
                else:  # v2 is the top-left corner of a hole touching v1's ring
                    nr = _link(pend_e, v1, lab4[pb], vnext, part, ring_v, ring_piece, nr)
                    pend_w = v2
                    cand_v[nc] = v2
                    cand_t[nc] = v1
                    nc += 1
            last_x = x
            last_t = nt
            last_q = nq
    return vx, vy, vnext, nv, ring_v, ring_piece, nr, cand_v, cand_t, nc


@nb.njit(cache=True)
def _ring_stats(vx, vy, vnext, ring_v, nr):
    """Per ring: (top-left start vertex, vertex count, doubled signed area)."""
    first = np.empty(nr, np.int32)
    count = np.empty(nr, np.int64)
    area2 = np.empty(nr, np.int64)
    for k in range(nr):
        v0 = ring_v[k]
        best = v0
        n = 0
        acc = 0
        v = v0
        while True:
            w = vnext[v]
            acc += np.int64(vx[v]) * vy[w] - np.int64(vx[w]) * vy[v]
            if vy[v] < vy[best] or (vy[v] == vy[best] and vx[v] < vx[best]):
                best = v
            n += 1
            v = w
            if v == v0:
                break
        first[k] = best
        count[k] = n
        area2[k] = acc
    return first, count, area2


@nb.njit(cache=True)
def _emit(vx, vy, vnext, first, order, offsets, out_index):
    """Write rings in `order` into flat xy; out_index[v] = output index of pool vertex v."""
    xy = np.empty((offsets[-1], 2), np.int32)
    for t in range(order.shape[0]):
        v0 = first[order[t]]
        v = v0
        i = offsets[t]
        while True:
            xy[i, 0] = vx[v]
            xy[i, 1] = vy[v]
            out_index[v] = i
            i += 1
            v = vnext[v]
            if v == v0:
                break
    return xy


def extract(mask: np.ndarray, band_rows: int = BAND_ROWS) -> Polygons:
    """Exact polygons of a mask: (H, W) bool or integer, nonzero = metal (see the module docstring)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    h, w = mask.shape
    return extract_bands((mask[y : y + band_rows] for y in range(0, h, band_rows)), w)


def extract_bands(bands: Iterable[np.ndarray], width: int) -> Polygons:
    """Exact polygons of a mask given as consecutive bands of rows, each (h_i, width) (bool or integer).

    Only the current band and the runs found so far are held, so a mask read band by band from a TIFF
    (samsem.io.read_region) never needs to be in memory whole; the result equals ``extract(mask)``.
    """
    runs = _Runs(width)
    for band in bands:
        runs.add_band(np.asarray(band))
    return _polygons_from_runs(runs)


def iter_bands(path: str | Path, band_rows: int = BAND_ROWS) -> Iterator[np.ndarray]:
    """Bands of ``band_rows`` rows of a mask file (nonzero = metal), read with samsem.io.read_region."""
    from samsem.io import image_info, read_region

    info = image_info(path)
    for y in range(0, info.height, band_rows):
        yield read_region(path, y, 0, min(band_rows, info.height - y), info.width) != 0


def _polygons_from_runs(runs: _Runs) -> Polygons:
    h, w, n = runs.height, runs.width, runs.n
    row, start, end = runs.row[:n], runs.start[:n], runs.end[:n]
    row_ptr, lab4, n4, lab8, n8 = _label_runs(row, start, end, h)
    vx, vy, vnext, nv, ring_v, ring_piece, nr, cand_v, cand_t, nc = _sweep(row_ptr, start, end, lab4, h)
    first, count, area2 = _ring_stats(vx, vy, vnext, ring_v[:nr], nr)
    piece_line = np.zeros(n4 + 1, np.int64)
    piece_line[lab4] = lab8
    piece = ring_piece[:nr].astype(np.int64)
    hole = area2 < 0
    # lines, then pieces (both in raster order of first pixel), exterior first, holes by top-left vertex
    order = np.lexsort((vx[first], vy[first], hole, piece, piece_line[piece]))
    offsets = np.zeros(nr + 1, np.int64)
    np.cumsum(count[order], out=offsets[1:])
    out_index = np.full(nv, -1, np.int64)
    xy = _emit(vx, vy, vnext, first, order, offsets, out_index)
    # bridges: each hole's top-left vertex is a recorded candidate
    target_of = np.full(nv, -1, np.int64)
    target_of[cand_v[:nc]] = cand_t[:nc]
    first_sorted = first[order]
    bridge = np.where(hole[order], out_index[np.maximum(target_of[first_sorted], 0)], -1)
    if np.any(hole[order] & (target_of[first_sorted] < 0)):
        raise AssertionError("a hole without a bridge target (extraction bug)")
    piece_sorted = piece[order]
    poly_first = np.flatnonzero(~hole[order])
    polygons = np.append(poly_first, nr).astype(np.int64)
    poly_line = piece_line[piece_sorted[poly_first]]
    lines = np.searchsorted(poly_line, np.arange(1, n8 + 2)).astype(np.int64)
    return Polygons(height=h, width=w, xy=xy, rings=offsets, polygons=polygons, lines=lines, bridge=bridge)
