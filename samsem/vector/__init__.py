"""Masks as polygons: exact extraction, connectivity-safe simplification, SVG/GeoJSON/GDSII files, and
ground-truth masks read back from layout files.

Typical use::

    from samsem.vector import VectorOptions, write_vectors, read_layout_mask

    paths = write_vectors(mask, out_dir, "img001", VectorOptions(formats=("svg", "gds"), nm_per_px=4.0))
    gt = read_layout_mask("design.gds", mask.shape, gds_layer=17, nm_per_px=4.0, offset_nm=(1200, -800))

Pipeline: :func:`extract` (exact, band-wise) -> :func:`simplify` (tolerance in pixels, every line kept)
-> writers. Conventions are in samsem.vector.extract (corner coordinates, rings, keyhole bridges),
samsem.vector.raster (the fill rule every reader uses) and samsem.vector.formats (per-format units).
gdstk (``pip install samsem[vector]``) is needed only for GDSII.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from samsem.errors import ConfigError, InputError
from samsem.vector.extract import Polygons, extract, extract_bands, iter_bands
from samsem.vector.formats import (
    GDS_MAX_POINTS,
    READERS,
    check_gds_extent,
    write_gds,
    write_geojson,
    write_svg,
)
from samsem.vector.raster import fill, rasterize_runs
from samsem.vector.simplify import simplify

__all__ = [
    "FORMATS",
    "Polygons",
    "VectorOptions",
    "extract",
    "extract_bands",
    "fill",
    "iter_bands",
    "rasterize_runs",
    "read_layout_mask",
    "simplify",
    "vectorize",
    "write_polygons",
    "write_vectors",
]


@dataclass(frozen=True)
class VectorOptions:
    """How masks are written as vector files.

    formats: any of ``FORMATS`` (svg, geojson, gds). tolerance_px: simplification tolerance in pixels
    (0 = exact pixel outlines; two lines' polygons stay at least simplify.CLEARANCE_PX = 0.5 px apart).
    gds_layer, gds_datatype: GDSII layer/datatype of the polygons.
    nm_per_px: physical pixel size for GDSII. gds_max_points: polygons with more vertices are split
    (samsem.vector.formats.split_ring; 0: never). esd_border, esd_min_area: the ESD rules whose line
    classes simplification preserves.
    """

    formats: tuple[str, ...] = ("svg", "geojson")
    tolerance_px: float = 1.0
    gds_layer: int = 0
    gds_datatype: int = 0
    nm_per_px: float = 1.0
    gds_max_points: int = GDS_MAX_POINTS
    esd_border: int = 35
    esd_min_area: int = 35

    def __post_init__(self) -> None:
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown or not self.formats:
            raise ConfigError(
                f"unknown vector format(s) {unknown or '(none)'}; choose from {', '.join(FORMATS)}"
            )
        if not (self.tolerance_px >= 0 and np.isfinite(self.tolerance_px)):
            raise ConfigError(f"tolerance must be >= 0 pixels, got {self.tolerance_px}")
        if not (self.nm_per_px > 0 and np.isfinite(self.nm_per_px)):
            raise ConfigError(f"nm per pixel must be positive, got {self.nm_per_px}")
        if not (0 <= self.gds_layer <= 65535 and 0 <= self.gds_datatype <= 65535):
            raise ConfigError(
                f"GDS layer/datatype must be in 0..65535, got {self.gds_layer}/{self.gds_datatype}"
            )
        if self.gds_max_points != 0 and not 4 <= self.gds_max_points <= GDS_MAX_POINTS:
            raise ConfigError(f"gds_max_points must be 0 or 4..{GDS_MAX_POINTS}, got {self.gds_max_points}")
        if self.esd_border < 0 or self.esd_min_area < 0:
            raise ConfigError("esd_border and esd_min_area must be >= 0")

    def check_size(self, height: int, width: int) -> None:
        """InputError when a ``height`` x ``width`` mask cannot be written in these formats (GDSII:
        its 32-bit coordinates at ``nm_per_px``), so callers can refuse it before segmenting."""
        if "gds" in self.formats:
            check_gds_extent(height, width, self.nm_per_px)


def _svg(polys: Polygons, path: Path, stem: str, opt: VectorOptions) -> Path:
    return write_svg(polys, path)


def _geojson(polys: Polygons, path: Path, stem: str, opt: VectorOptions) -> Path:
    return write_geojson(polys, path)


def _gds(polys: Polygons, path: Path, stem: str, opt: VectorOptions) -> Path:
    return write_gds(
        polys,
        path,
        opt.nm_per_px,
        cell=stem,
        layer=opt.gds_layer,
        datatype=opt.gds_datatype,
        max_points=opt.gds_max_points,
    )


# format name -> (file suffix, writer(polygons, path, image stem, options))
FORMATS: dict[str, tuple[str, Callable[[Polygons, Path, str, VectorOptions], Path]]] = {
    "svg": (".svg", _svg),
    "geojson": (".geojson", _geojson),
    "gds": (".gds", _gds),
}


def vectorize(mask: np.ndarray, options: VectorOptions = VectorOptions()) -> Polygons:
    """Polygons of a mask ((H, W) bool or integer, nonzero = metal), simplified per ``options``."""
    polys = extract(mask)
    return simplify(polys, options.tolerance_px, border=options.esd_border, min_area=options.esd_min_area)


def write_polygons(
    polys: Polygons, out_dir: str | Path, stem: str, options: VectorOptions = VectorOptions()
) -> dict[str, Path]:
    """Write ``out_dir/stem.<suffix>`` per format in ``options`` (atomically); returns format -> path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for fmt in options.formats:
        suffix, writer = FORMATS[fmt]
        paths[fmt] = writer(polys, out_dir / f"{stem}{suffix}", stem, options)
    return paths


def write_vectors(
    mask: np.ndarray, out_dir: str | Path, stem: str, options: VectorOptions = VectorOptions()
) -> dict[str, Path]:
    """Vectorize a mask ((H, W), nonzero = metal) and write its files; returns format -> path."""
    return write_polygons(vectorize(mask, options), out_dir, stem, options)


def read_layout_mask(
    path: str | Path,
    shape: tuple[int, int] | None = None,
    *,
    gds_layer: int = 0,
    gds_datatype: int = 0,
    nm_per_px: float = 1.0,
    offset_nm: tuple[float, float] = (0.0, 0.0),
    gds_cell: str | None = None,
) -> np.ndarray:
    """Ground-truth mask (H, W) uint8 {0,1} from an SVG, GeoJSON or GDSII layout file.

    shape: the image's (H, W); required for GDSII, checked against the file's own size for SVG and
    GeoJSON. The GDSII options select the layer/datatype and cell and place the image in the layout:
    ``offset_nm`` is the layout position (x, y) of the image's top-left corner, ``nm_per_px`` the pixel
    size (see samsem.vector.formats.read_gds_mask). Bad files raise InputError.
    """
    path = Path(path)
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise InputError(
            path, f"unsupported layout file type {path.suffix or '(no suffix)'!r}", ", ".join(READERS)
        )
    if not path.exists():
        raise InputError(path, "file not found")
    return reader(
        path,
        shape,
        layer=gds_layer,
        datatype=gds_datatype,
        nm_per_px=nm_per_px,
        offset_nm=offset_nm,
        cell=gds_cell,
    )
