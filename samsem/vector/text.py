"""Numba text emitters for the SVG and GeoJSON bodies (millions of vertices in well under a second).

Both write ASCII into a preallocated uint8 buffer: per vertex at most 2 * 11 digits and separators, so
``32 * V + 160 * (R + P + N)`` bytes always suffice.
"""

from __future__ import annotations

import numba as nb
import numpy as np


def _b(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("ascii"), np.uint8).copy()


_PATH_OPEN = _b('<path d="')
_PATH_CLOSE = _b('" fill="lime" fill-rule="evenodd" data-line="')
_PATH_END = _b('"/>\n')
_FEAT_OPEN = _b('{"type":"Feature","id":')
_FEAT_PROPS = _b(',"properties":{"id":')
_FEAT_AREA = _b(',"area":')
_FEAT_POLY = _b('},"geometry":{"type":"Polygon","coordinates":')
_FEAT_MULTI = _b('},"geometry":{"type":"MultiPolygon","coordinates":[')
_FEAT_END = _b("}}")


@nb.njit(cache=True)
def _put(buf, n, chunk):
    buf[n : n + chunk.shape[0]] = chunk
    return n + chunk.shape[0]


@nb.njit(cache=True)
def _put_int(buf, n, v):
    if v < 0:
        buf[n] = 45  # '-'
        n += 1
        v = -v
    digits = 1
    m = v // 10
    while m > 0:
        m //= 10
        digits += 1
    for i in range(digits - 1, -1, -1):
        buf[n + i] = 48 + v % 10
        v //= 10
    return n + digits


@nb.njit(cache=True)
def _put_half(buf, n, v):
    """Write v - 0.5 for an integer v (a corner coordinate as a pixel-centre coordinate)."""
    if v >= 1:
        n = _put_int(buf, n, v - 1)
    else:
        buf[n] = 45
        n = _put_int(buf, n + 1, -v)
    buf[n] = 46  # '.'
    buf[n + 1] = 53  # '5'
    return n + 2


@nb.njit(cache=True)
def svg_body(xy, rings, polygons, lines, path_open, path_close, path_end):
    """One ``<path d="M x,y L ... Z M ...">`` element per polygon (pixel-centre coordinates)."""
    cap = 32 * xy.shape[0] + 160 * (rings.shape[0] + polygons.shape[0] + lines.shape[0])
    buf = np.empty(cap, np.uint8)
    n = 0
    for i in range(lines.shape[0] - 1):
        for p in range(lines[i], lines[i + 1]):
            n = _put(buf, n, path_open)
            for k in range(polygons[p], polygons[p + 1]):
                if k > polygons[p]:
                    buf[n] = 32
                    n += 1
                for v in range(rings[k], rings[k + 1]):
                    buf[n] = 77 if v == rings[k] else 76  # 'M' / 'L'
                    n = _put_half(buf, n + 1, xy[v, 0])
                    buf[n] = 44  # ','
                    n = _put_half(buf, n + 1, xy[v, 1])
                    buf[n] = 32
                    n += 1
                buf[n] = 90  # 'Z'
                n += 1
            n = _put(buf, n, path_close)
            n = _put_int(buf, n, i + 1)
            n = _put(buf, n, path_end)
    return buf[:n]


@nb.njit(cache=True)
def geojson_features(xy, rings, polygons, lines, flip, area2, parts):
    """Comma-and-newline separated Features, one per line (corner coordinates, closed rings).

    flip: (R,) bool, rings to write in reverse order. area2: (N,) int64 doubled line areas.
    parts: the constant fragments (_FEAT_* in this module's order).
    """
    feat_open, props, area_key, poly, multi, feat_end = parts
    cap = 32 * xy.shape[0] + 160 * (rings.shape[0] + polygons.shape[0] + lines.shape[0])
    buf = np.empty(cap, np.uint8)
    n = 0
    for i in range(lines.shape[0] - 1):
        if i > 0:
            buf[n] = 44
            buf[n + 1] = 10
            n += 2
        n = _put(buf, n, feat_open)
        n = _put_int(buf, n, i + 1)
        n = _put(buf, n, props)
        n = _put_int(buf, n, i + 1)
        n = _put(buf, n, area_key)
        a = area2[i]
        if a < 0:
            buf[n] = 45
            n += 1
            a = -a
        n = _put_int(buf, n, a // 2)
        if a % 2 != 0:
            buf[n] = 46
            buf[n + 1] = 53
            n += 2
        many = lines[i + 1] - lines[i] > 1
        n = _put(buf, n, multi if many else poly)
        for p in range(lines[i], lines[i + 1]):
            if p > lines[i]:
                buf[n] = 44
                n += 1
            buf[n] = 91  # '['
            n += 1
            for k in range(polygons[p], polygons[p + 1]):
                if k > polygons[p]:
                    buf[n] = 44
                    n += 1
                lo, hi = rings[k], rings[k + 1]
                buf[n] = 91
                n += 1
                for t in range(hi - lo + 1):  # closed: the first vertex again at the end
                    j = t % (hi - lo)
                    v = hi - 1 - j if flip[k] else lo + j
                    buf[n] = 91
                    n = _put_int(buf, n + 1, xy[v, 0])
                    buf[n] = 44
                    n = _put_int(buf, n + 1, xy[v, 1])
                    buf[n] = 93  # ']'
                    buf[n + 1] = 44
                    n += 2
                buf[n - 1] = 93  # replaces the last ','
            buf[n] = 93
            n += 1
        if many:
            buf[n] = 93
            n += 1
        n = _put(buf, n, feat_end)
    return buf[:n]


def svg_text(xy, rings, polygons, lines) -> bytes:
    return svg_body(xy, rings, polygons, lines, _PATH_OPEN, _PATH_CLOSE, _PATH_END).tobytes()


def geojson_text(xy, rings, polygons, lines, flip, area2) -> bytes:
    parts = (_FEAT_OPEN, _FEAT_PROPS, _FEAT_AREA, _FEAT_POLY, _FEAT_MULTI, _FEAT_END)
    return geojson_features(xy, rings, polygons, lines, flip, area2, parts).tobytes()
