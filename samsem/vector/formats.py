"""Vector files of a mask's polygons (SVG, GeoJSON, GDSII) and ground-truth masks read back from them.

Coordinates (see samsem.vector.extract for the corner coordinates of the polygons):

* SVG: samsem.svg's pixel-centre convention (integer = pixel centre), so vertices sit at half-integers;
  ``<svg width=W height=H viewBox="0 0 W H">``, one ``<path d="M x,y L ... Z" fill-rule="evenodd">`` per
  polygon with its holes as further subpaths (HY5SYN label syntax), ``data-line`` = line id. SVG and
  GeoJSON leave out the collinear keyhole bridge vertices (GDSII needs them).
* GeoJSON: pixel corner coordinates (x right, y down, origin at the image's top-left corner; pixel (r, c)
  covers [c, c+1] x [r, r+1], as in GDAL/rasterio pixel space). A FeatureCollection with one Feature per
  line (id, properties ``id`` and ``area`` in square pixels; a Polygon or MultiPolygon), rings closed,
  exteriors counterclockwise and holes clockwise by the sign of their shoelace area (RFC 7946), and a
  foreign member ``"samsem": {"width": W, "height": H}``.
* GDSII (gdstk): one cell named after the image, user unit 1 nm, database unit 1 nm (finer, down to
  1 pm, when ``nm_per_px`` is not a whole number of nm); pixel corner (x, y) is at
  ``(x * nm_per_px, -y * nm_per_px)`` nm, i.e. the image's top-left corner is the origin and the layout
  extends to -y, so it is upright in KLayout. Holes are spliced into their polygon along the horizontal
  keyhole bridges of samsem.vector.extract (no new vertices). Polygons above ``gds_max_points`` vertices
  (default 8190, the limit of one XY record) are split along pixel-corner lines into pieces within the
  limit (:func:`split_ring`); such a file's database unit is 1000 times finer (1 pm at 1 nm per pixel),
  so that the cut points on slanted edges stay within 1/1000 pixel of the edge. The pieces rasterize
  like the whole and touch along the cuts, so KLayout's merged region has the same lines. Each piece
  carries GDS property 1 = its line id. gdstk's warnings are kept off the terminal.

Every reader rasterizes with samsem.vector.raster (pixel centres inside or on the outline, even-odd per
polygon, polygons united), so writing and reading back gives exactly the raster the simplification
checked (and, at tolerance 0, the mask itself).
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from samsem.errors import InputError
from samsem.io import atomic_path
from samsem.vector.extract import Polygons
from samsem.vector.raster import fill
from samsem.vector.text import geojson_text, svg_text

GDS_MAX_POINTS = 8190  # GDSII limit of vertices per polygon (one XY record)
SPLIT_REFINE = 1000  # database unit divided by this in files with split polygons


def _ring_sign(ring: np.ndarray) -> float:
    x, y = ring[:, 0].astype(np.float64), ring[:, 1].astype(np.float64)
    return float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def _without_bridge_points(polys: Polygons) -> Polygons:
    """The polygons without the collinear vertices inserted as keyhole bridge targets (SVG, GeoJSON)."""
    targets = np.unique(polys.bridge[polys.bridge >= 0])
    if not len(targets):
        return polys
    ring = np.searchsorted(polys.rings, targets, side="right") - 1
    lo, hi = polys.rings[ring], polys.rings[ring + 1]
    prev = np.where(targets > lo, targets - 1, hi - 1)
    nxt = np.where(targets + 1 < hi, targets + 1, lo)
    xy = polys.xy.astype(np.int64)
    a, b = xy[targets] - xy[prev], xy[nxt] - xy[targets]
    keep = np.ones(len(xy), bool)
    keep[targets[a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0] == 0]] = False
    counts = np.concatenate([[0], np.cumsum(keep)])
    return Polygons(
        height=polys.height,
        width=polys.width,
        xy=polys.xy[keep],
        rings=counts[polys.rings],
        polygons=polys.polygons,
        lines=polys.lines,
        bridge=np.full(polys.n_rings, -1, np.int64),
    )


# ------------------------------------------------------------------------------------------------- SVG


def write_svg(polys: Polygons, path: Path) -> Path:
    """SVG label of the polygons (pixel-centre coordinates, one even-odd path per polygon)."""
    polys = _without_bridge_points(polys)
    w, h = polys.width, polys.height
    head = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}">\n'
    )
    body = svg_text(polys.xy, polys.rings, polys.polygons, polys.lines)
    with atomic_path(path) as tmp:
        tmp.write_bytes(head.encode() + body + b"</svg>\n")
    return path


# --------------------------------------------------------------------------------------------- GeoJSON


def write_geojson(polys: Polygons, path: Path) -> Path:
    """GeoJSON FeatureCollection of the polygons, one Feature per line (pixel corner coordinates)."""
    polys = _without_bridge_points(polys)
    # RFC 7946: exteriors counterclockwise (positive shoelace area), holes clockwise
    exterior = np.zeros(polys.n_rings, bool)
    exterior[polys.polygons[:-1]] = True
    flip = (polys.ring_areas() > 0) != exterior
    area2 = np.round(2 * polys.line_areas()).astype(np.int64)
    meta = json.dumps({"width": polys.width, "height": polys.height, "units": "px"}, separators=(",", ":"))
    body = geojson_text(polys.xy, polys.rings, polys.polygons, polys.lines, flip, area2)
    with atomic_path(path) as tmp:
        tmp.write_bytes(
            f'{{"type":"FeatureCollection","samsem":{meta},"features":[\n'.encode() + body + b"\n]}\n"
        )
    return path


def _geojson_polygons(path: Path, doc: Any) -> list[list[np.ndarray]]:
    """Polygons (lists of (K, 2) float64 rings) of a GeoJSON object; InputError on bad structure."""
    expected = "a GeoJSON FeatureCollection, Feature, Polygon or MultiPolygon"
    if not isinstance(doc, dict) or "type" not in doc:
        raise InputError(path, "not a GeoJSON object (no 'type' member)", expected)
    kind = doc["type"]
    if kind == "FeatureCollection":
        feats = doc.get("features")
        if not isinstance(feats, list):
            raise InputError(path, "FeatureCollection without a 'features' list", expected)
        return [p for f in feats for p in _geojson_polygons(path, f)]
    if kind == "Feature":
        geom = doc.get("geometry")
        return [] if geom is None else _geojson_polygons(path, geom)
    if kind == "GeometryCollection":
        return [p for g in doc.get("geometries") or [] for p in _geojson_polygons(path, g)]
    if kind in ("Point", "MultiPoint", "LineString", "MultiLineString"):
        return []  # no area
    if kind not in ("Polygon", "MultiPolygon"):
        raise InputError(path, f"unknown GeoJSON type {kind!r}", expected)
    coords: Any = doc.get("coordinates")
    polys: Any = [coords] if kind == "Polygon" else coords
    out = []
    try:
        for poly in polys:
            rings = []
            for ring in poly:
                arr = np.asarray(ring, dtype=np.float64)
                if arr.ndim != 2 or arr.shape[1] < 2 or not np.isfinite(arr).all():
                    raise ValueError
                arr = arr[:, :2]
                if len(arr) > 1 and np.array_equal(arr[0], arr[-1]):
                    arr = arr[:-1]
                if len(arr) >= 3:
                    rings.append(arr)
            if rings:
                out.append(rings)
    except (TypeError, ValueError):
        raise InputError(path, f"malformed {kind} coordinates", "arrays of [x, y] positions") from None
    return out


def read_geojson_mask(path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Rasterize a GeoJSON file (pixel corner coordinates) into (H, W) uint8 {0,1}.

    shape: (H, W); default: the file's ``samsem`` width/height member (InputError when neither is given,
    or when both are and they differ).
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read file ({exc})") from None
    except json.JSONDecodeError as exc:
        raise InputError(path, f"malformed JSON ({exc})") from None
    meta = doc.get("samsem") if isinstance(doc, dict) else None
    size = None
    if isinstance(meta, dict) and isinstance(meta.get("width"), int) and isinstance(meta.get("height"), int):
        size = (meta["height"], meta["width"])
    if shape is None and size is None:
        raise InputError(path, "GeoJSON has no image size", "an output shape (the image's height and width)")
    if shape is not None and size is not None and tuple(shape) != size:
        raise InputError(
            path, f"layout size {size[0]}x{size[1]} does not match image size {shape[0]}x{shape[1]}"
        )
    out_shape = shape or size
    assert out_shape is not None  # checked above
    return _fill_polygons(_geojson_polygons(path, doc), (int(out_shape[0]), int(out_shape[1])))


def _fill_polygons(polygons: list[list[np.ndarray]], shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    rings = [r for poly in polygons for r in poly]
    if rings:
        ring_ends = np.cumsum([0, *(len(r) for r in rings)])
        poly_ends = np.cumsum([0, *(len(p) for p in polygons)])
        fill(mask, np.concatenate(rings), ring_ends, poly_ends)
    return mask


# ----------------------------------------------------------------------------------------------- GDSII


def _gds_precision(nm_per_px: float) -> float:
    """Database unit in metres: 1 nm, or 0.1/0.01/0.001 nm when needed to hold pixel corners exactly."""
    for k in range(4):
        v = nm_per_px * 10**k
        if abs(v - round(v)) < 1e-9 * max(1.0, v):
            return 1e-9 / 10**k
    return 1e-12


def check_gds_extent(height: int, width: int, nm_per_px: float) -> None:
    """InputError when GDSII's coordinates (32-bit integers of the database unit) cannot hold a
    ``height`` x ``width`` mask at ``nm_per_px``."""
    precision = _gds_precision(nm_per_px)
    if max(height, width) * nm_per_px * 1e-9 / precision >= 2**31:
        raise InputError(
            None,
            f"GDSII cannot hold a {height}x{width} px mask at {nm_per_px:g} nm per pixel: its "
            f"coordinates are 32-bit integers of {precision * 1e9:g} nm (at most {2**31 * precision:g} m "
            "across)",
            "a smaller nm per pixel",
        )


def _cell_name(stem: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_?$]", "_", stem)
    return name or "mask"


def spliced_ring(polys: Polygons, p: int) -> np.ndarray:
    """One weakly simple ring of polygon p with its holes spliced in along their bridges: (K, 2) int64.

    Walks the exterior; at a hole's bridge target it goes along the bridge to the hole's first vertex,
    around the hole (and, recursively, the holes bridged to it) and back (explicit stack, no recursion).
    """
    first, last = int(polys.polygons[p]), int(polys.polygons[p + 1])
    attached: dict[int, list[int]] = {}
    for k in range(first + 1, last):
        attached.setdefault(int(polys.bridge[k]), []).append(k)
    stops: dict[int, list[int]] = {}
    for v in attached:
        stops.setdefault(int(np.searchsorted(polys.rings, v, side="right")) - 1, []).append(v)
    for vertices in stops.values():
        vertices.sort()
    chunks: list[np.ndarray] = []
    stack = [(first, int(polys.rings[first]))]
    while stack:
        k, pos = stack.pop()
        hi = int(polys.rings[k + 1])
        ring_stops = stops.get(k, [])
        j = ring_stops[bisect.bisect_left(ring_stops, pos)] if ring_stops and ring_stops[-1] >= pos else -1
        if j < 0:
            chunks.append(np.arange(pos, hi))
            if k != first:  # back along the bridge of hole k
                chunks.append(np.array([polys.rings[k], polys.bridge[k]]))
            continue
        chunks.append(np.arange(pos, j + 1))
        stack.append((k, j + 1))
        stack.extend((h, int(polys.rings[h])) for h in reversed(attached[j]))
    ring = polys.xy[np.concatenate(chunks)].astype(np.int64)
    keep = np.ones(len(ring), bool)
    keep[1:] = np.any(ring[1:] != ring[:-1], axis=1)  # zero-length bridges at touching corners
    ring = ring[keep]
    if len(ring) > 1 and np.array_equal(ring[0], ring[-1]):
        ring = ring[:-1]
    return ring


def write_gds(
    polys: Polygons,
    path: Path,
    nm_per_px: float = 1.0,
    *,
    cell: str = "mask",
    layer: int = 0,
    datatype: int = 0,
    max_points: int = GDS_MAX_POINTS,
) -> Path:
    """GDSII file of the polygons via gdstk (see the module docstring for units, orientation and the
    splitting of polygons above ``max_points`` vertices; 0: never split)."""
    import gdstk

    rings = polys.rings.tolist()
    poly_ring = polys.polygons.tolist()
    outlines = []  # (line id, ring in pixel corner coordinates)
    for i, (p0, p1) in enumerate(itertools.pairwise(polys.lines.tolist())):
        for p in range(p0, p1):
            k = poly_ring[p]
            holes = poly_ring[p + 1] - k > 1
            outlines.append((i + 1, spliced_ring(polys, p) if holes else polys.xy[rings[k] : rings[k + 1]]))
    split = bool(max_points) and any(len(ring) > max_points for _, ring in outlines)
    check_gds_extent(polys.height, polys.width, nm_per_px)
    precision = _gds_precision(nm_per_px)
    if split and max(polys.height, polys.width) * nm_per_px * 1e-9 / precision * SPLIT_REFINE < 2**31:
        precision /= SPLIT_REFINE  # cut points on slanted edges land within 1/SPLIT_REFINE nm of the edge
    ratio = round(nm_per_px * 1e-9 / precision)  # database units per pixel (a whole number)
    lib = gdstk.Library(unit=1e-9, precision=precision)
    top = lib.new_cell(_cell_name(cell))
    flip = np.array([ratio, -ratio], np.int64)
    shapes = []
    for line, outline in outlines:
        ring = outline.astype(np.int64) * flip
        for piece in split_ring(ring, max_points, ratio) if split else [ring]:
            poly = gdstk.Polygon(piece * (precision * 1e9), layer, datatype)  # type: ignore[arg-type]
            poly.set_gds_property(1, str(line))
            shapes.append(poly)
    top.add(*shapes)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        # gdstk warns (RuntimeWarning) when it writes the multi-XY-record extension (max_points == 0 only)
        warnings.simplefilter("ignore", RuntimeWarning)
        lib.write_gds(str(tmp), max_points=0)
    return path


def split_ring(ring: np.ndarray, max_points: int, step: int) -> list[np.ndarray]:
    """Pieces of a weakly simple ring ((K, 2) int64, database units) with at most ``max_points`` vertices
    each, whose union is the ring's area and slivers at most one database unit wide.

    A ring that is too long is clipped into two halves along the line x = c or y = c (its longer extent)
    at the multiple of ``step`` (one pixel) nearest the median vertex coordinate, and the halves are split
    again until short enough. A half may consist of several parts joined by zero-width edges on the cut
    line (fine for GDSII readers; pixel-corner lines pass through no pixel centre). Where the cut crosses a
    slanted edge the new vertex is moved to the next database grid point strictly outside the edge, the
    same for both halves: the halves still tile the ring, pixel centres on the edge stay strictly inside
    (robust to the readers' rounding), and the sliver gains no pixel centre as long as the edge spans
    fewer than ``step / 2`` pixels in x (resp. y).
    """
    sign = 1 if _ring_sign(ring) >= 0 else -1
    out, todo = [], [ring]
    while todo:
        r = todo.pop()
        if len(r) <= max_points:
            out.append(r)
            continue
        halves = None
        extent = np.ptp(r, axis=0)
        for axis in (0, 1) if extent[0] >= extent[1] else (1, 0):
            lo, hi = int(r[:, axis].min()), int(r[:, axis].max())
            c = round(float(np.median(r[:, axis])) / step) * step
            c = min(max(c, -(-(lo + 1) // step) * step), (hi - 1) // step * step)
            if not lo < c < hi:
                continue
            halves = [h for h in (_clip(r, axis, c, sign, low) for low in (True, False)) if len(h) >= 3]
            if max(map(len, halves)) < len(r):
                break
            halves = None
        if halves is None:  # no cut shortens it (not seen on masks): written whole
            out.append(r)
        else:
            todo.extend(halves)
    return out


def _clip(ring: np.ndarray, axis: int, c: int, sign: int, low: bool) -> np.ndarray:
    """The ring clipped to the half-plane ``ring[:, axis] <= c`` (``low``) or ``>= c`` (Sutherland-Hodgman;
    see :func:`split_ring` for the rounding of cut points)."""
    nxt = np.roll(ring, -1, axis=0)
    u, v, un, vn = ring[:, axis], ring[:, 1 - axis], nxt[:, axis], nxt[:, 1 - axis]
    inside = u <= c if low else u >= c
    cross = (u - c) * (un - c) < 0
    swap = un < u  # the same cut point for both halves: computed from the endpoint with the smaller u
    ua, va = np.where(swap, un, u), np.where(swap, vn, v)
    ub, vb = np.where(swap, u, un), np.where(swap, v, vn)
    den = np.where(cross, ub - ua, 1)
    num = (c - ua) * (vb - va)
    d = nxt - ring
    outward_up = (-sign * d[:, 0] > 0) if axis == 0 else (sign * d[:, 1] > 0)  # outward normal's sign
    cut = np.empty_like(ring)
    cut[:, axis] = c
    q, r = np.divmod(num, den)
    # strictly outside the edge (by less than one unit, or one unit where the cut point is on the grid)
    cut[:, 1 - axis] = va + np.where(outward_up, q + 1, q - (r == 0))
    pts = np.stack([ring, cut], axis=1).reshape(-1, 2)[np.stack([inside, cross], axis=1).reshape(-1)]
    keep = np.any(pts != np.roll(pts, 1, axis=0), axis=1)
    return pts[keep] if keep.any() else pts[:1]


def read_gds_mask(
    path: str | Path,
    shape: tuple[int, int],
    *,
    layer: int = 0,
    datatype: int = 0,
    nm_per_px: float = 1.0,
    offset_nm: tuple[float, float] = (0.0, 0.0),
    cell: str | None = None,
) -> np.ndarray:
    """Rasterize one layer/datatype of a GDSII cell (flattened) into (H, W) uint8 {0,1}.

    offset_nm: layout coordinates (x, y) in nm of the image's top-left corner; the image covers
    x in [ox, ox + W * nm_per_px] and y in [oy - H * nm_per_px, oy] (y up in the layout, down in the
    image). cell: the cell to read; default the file's only top cell.
    """
    import gdstk

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found" if not path.exists() else "is not a file")
    if not nm_per_px > 0:
        raise InputError(None, f"nm per pixel must be positive, got {nm_per_px}")
    try:
        _, precision = gdstk.gds_units(str(path))
        lib = gdstk.read_gds(str(path), unit=precision)  # coordinates in database units
    except Exception as exc:  # gdstk raises plain RuntimeError/OSError on corrupt files
        raise InputError(path, f"not a readable GDSII file ({type(exc).__name__}: {exc})") from None
    cells = {c.name: c for c in lib.cells}
    if cell is None:
        tops = lib.top_level()
        if len(tops) != 1:
            names = ", ".join(sorted(c.name for c in tops)) or "none"
            raise InputError(
                path, f"GDSII has {len(tops)} top cells ({names})", "one top cell, or a cell name"
            )
        top = tops[0]
    elif cell in cells:
        top = cells[cell]
    else:
        raise InputError(path, f"no cell named {cell!r}", ", ".join(sorted(cells)))
    polygons = top.get_polygons(  # type: ignore[union-attr]
        apply_repetitions=True, include_paths=True, layer=layer, datatype=datatype
    )
    dbu_nm = precision * 1e9
    ratio = nm_per_px / dbu_nm  # database units per pixel
    if math.isclose(ratio, round(ratio), rel_tol=1e-9):
        ratio = float(round(ratio))
    origin = np.array(offset_nm, np.float64) / dbu_nm
    rings = [[(p.points - origin) * np.array([1.0, -1.0]) / ratio] for p in polygons if len(p.points) >= 3]
    return _fill_polygons(rings, (int(shape[0]), int(shape[1])))


# ------------------------------------------------------------------------------------------- registries


def _read_svg(path: Path, shape: tuple[int, int] | None, **_: Any) -> np.ndarray:
    from samsem.io import read_mask

    return read_mask(path, shape=shape)


def _read_geojson(path: Path, shape: tuple[int, int] | None, **_: Any) -> np.ndarray:
    return read_geojson_mask(path, shape)


def _read_gds(path: Path, shape: tuple[int, int] | None, **kw: Any) -> np.ndarray:
    if shape is None:
        raise InputError(
            path, "a GDSII layout has no image size", "an output shape (the image's height and width)"
        )
    return read_gds_mask(path, shape, **kw)


READERS: dict[str, Callable[..., np.ndarray]] = {
    ".svg": _read_svg,
    ".geojson": _read_geojson,
    ".json": _read_geojson,
    ".gds": _read_gds,
    ".gdsii": _read_gds,
}
