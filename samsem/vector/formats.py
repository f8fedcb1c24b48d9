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
  keyhole bridges of samsem.vector.extract (no new vertices); polygons above ``gds_max_points`` vertices
  are fractured by gdstk when all their edges are axis-parallel and the pieces rasterize exactly like
  the whole, else written whole (multi-XY-record extension, read by gdstk and KLayout). Each polygon
  carries GDS property 1 = its line id.

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from samsem.errors import InputError
from samsem.io import atomic_path
from samsem.vector.extract import Polygons
from samsem.vector.raster import fill, merge_runs, rasterize_runs
from samsem.vector.text import geojson_text, svg_text

GDS_MAX_POINTS = 8190  # GDSII limit of vertices per polygon (one XY record)


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
    """GDSII file of the polygons via gdstk (see the module docstring for units and orientation)."""
    import gdstk

    precision = _gds_precision(nm_per_px)
    lib = gdstk.Library(unit=1e-9, precision=precision)
    top = lib.new_cell(_cell_name(cell))
    scale = np.array([nm_per_px, -nm_per_px])
    points = polys.xy * scale
    rings = polys.rings.tolist()
    poly_ring = polys.polygons.tolist()
    shapes = []
    for i, (p0, p1) in enumerate(itertools.pairwise(polys.lines.tolist())):
        for p in range(p0, p1):
            k = poly_ring[p]
            holes = poly_ring[p + 1] - k > 1
            ring = spliced_ring(polys, p) if holes else polys.xy[rings[k] : rings[k + 1]]
            poly = gdstk.Polygon(ring * scale if holes else points[rings[k] : rings[k + 1]], layer, datatype)
            pieces = [poly]
            if max_points and len(ring) > max_points and _manhattan(ring):
                pieces = poly.fracture(max_points=max_points, precision=precision * 1e9)
                if not _same_raster(polys, ring, pieces, scale, precision * 1e9):
                    pieces = [poly]
            for piece in pieces:
                piece.set_gds_property(1, str(i + 1))
            shapes.extend(pieces)
    top.add(*shapes)
    with atomic_path(path) as tmp:
        lib.write_gds(str(tmp), max_points=0)
    return path


def _manhattan(ring: np.ndarray) -> bool:
    """Whether every edge of the closed ring (K, 2) is horizontal or vertical."""
    d = np.diff(ring, axis=0, append=ring[:1])
    return bool(np.all((d[:, 0] == 0) | (d[:, 1] == 0)))


def _same_raster(polys: Polygons, ring: np.ndarray, pieces: list, scale: np.ndarray, dbu_nm: float) -> bool:
    """Whether the fractured pieces (on the database grid) rasterize exactly like the whole ring."""
    shape = (polys.height, polys.width)
    rings = [ring.astype(np.float64)] + [np.round(q.points / dbu_nm) * dbu_nm / scale for q in pieces]
    ends = np.cumsum([0, *(len(r) for r in rings)])
    xy = np.concatenate(rings)
    whole = rasterize_runs(xy, ends[:2], np.array([0, 1]), np.array([0, 1]), shape)
    parts = rasterize_runs(xy, ends, np.arange(len(rings) + 1), np.array([1, len(rings)]), shape)
    a = merge_runs(*whole[:3])[:3]
    b = merge_runs(*parts[:3])[:3]
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


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
