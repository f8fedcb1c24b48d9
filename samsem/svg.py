"""Read IC layout label files (SVG) and rasterize them into metal masks.

Supported SVG subset (what labelling tools emit for metal layers):

* ``<svg width=".." height=".." [viewBox="minx miny w h"]>``; width/height in pixels (``px`` or no unit).
  A viewBox may translate and scale uniformly.
* ``<path d="...">`` with the commands M, L, H, V, Z in absolute and relative (m, l, h, v, z) form, any
  number of subpaths, implicit repeated coordinates; every subpath is one metal polygon (closed implicitly),
  except in a path with ``fill-rule="evenodd"`` (attribute or ``style`` property, inherited from enclosing
  ``<g>``/``<svg>``): its subpaths are filled together by the even-odd rule, so inner subpaths cut holes
  (the form samsem.vector writes).
* ``<polygon points="...">`` and ``<rect x y width height>`` (corner radii ignored) as further polygons.
* ``<circle cx cy r>``: vias (radius r >= 0; r = 0 draws nothing).
* ``<g>`` groups are walked; ``<defs>``, ``<clipPath>``, ``<mask>``, ``<symbol>``, ``<pattern>`` and
  ``<marker>`` contents are not rendered; other elements (title, metadata, text, image, ...) are ignored.
  ``fill``/``stroke`` are ignored: every shape is metal. ``transform`` attributes, ``<use>``, curves (C, S, Q,
  T, A) and ellipse/line/polyline elements are rejected with an InputError rather than rendered wrongly.

Pixel convention: **integer coordinates are pixel centres** (x = column index, y = row index), which is how
the labels are drawn: the real layouts use coordinates 0..W-1 and 0..H-1 and reach the last row/column.
A shape covers the pixels whose centres lie inside or on its outline: the square with corners (1, 1) and
(2, 2) covers the 2x2 pixels ``mask[1:3, 1:3]`` and a rectangle from x0 to x1 spans ``x1 - x0 + 1`` columns.
Polygons are filled with cv2.fillPoly on 8-bit fixed-point vertices; cv2 also draws the outline with
rounded vertices, so along slanted edges pixels up to half a pixel outside may be set. Vias are exact discs
(pixel centres within distance r of the centre), computed directly because cv2.circle with sub-pixel
shift is visibly off-centre for the small radii (2-5 px) found in real layouts. Overlapping shapes are
united (each polygon is filled on its own, so overlaps never cancel out; a subpath cannot cut a hole).
Even-odd paths are filled exactly by samsem.vector.raster with the same rule (pixel centres inside or on
the outline, no half-pixel spill), so polygons written by samsem.vector read back pixel for pixel.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from samsem.errors import InputError

SVG_NS = "http://www.w3.org/2000/svg"
_SHIFT = 8  # fractional bits of the fixed-point coordinates passed to cv2
_NOT_RENDERED = {"defs", "clipPath", "mask", "symbol", "pattern", "marker"}
_UNSUPPORTED = {"use", "ellipse", "line", "polyline"}
_TOKEN = re.compile(r"[A-Za-z]|[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_PATH_COMMANDS = "MLHVZ (absolute or relative)"


@dataclass(frozen=True)
class Layout:
    """Geometry of one layout file in output pixel coordinates (integer = pixel centre).

    width, height: image size in pixels. polygons: each (K, 2) float64 xy vertices, K >= 3.
    circles: (M, 3) float64 rows (cx, cy, r) of vias. regions: even-odd filled paths, each a tuple of
    (K, 2) float64 rings filled together (holes cut).
    """

    width: int
    height: int
    polygons: tuple[np.ndarray, ...]
    circles: np.ndarray
    regions: tuple[tuple[np.ndarray, ...], ...] = ()


def read_layout(path: str | Path) -> Layout:
    """Parse an SVG layout file (see the module docstring for the supported subset)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found" if not path.exists() else "is not a file")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise InputError(path, f"malformed SVG (XML error: {exc})") from None
    except OSError as exc:
        raise InputError(path, f"cannot read file ({exc.strerror or exc})") from None
    ns, tag = _split_tag(root.tag)
    if tag != "svg" or ns not in ("", SVG_NS):
        raise InputError(path, f"not an SVG file (root element is <{tag}>)", "an <svg> root element")
    width = _size_attr(path, root, "width")
    height = _size_attr(path, root, "height")
    offset, factor = _viewbox(path, root, width, height)

    polygons: list[np.ndarray] = []
    regions: list[list[np.ndarray]] = []
    circles: list[tuple[float, float, float]] = []
    for n, (elem, evenodd) in enumerate(_drawn_elements(path, root, _fill_rule(root) == "evenodd")):
        tag = _split_tag(elem.tag)[1]
        where = f"<{tag}> element #{n + 1}"
        if tag == "path" and evenodd:
            rings = _parse_path(path, elem.get("d", ""), where)
            if rings:
                regions.append(rings)
        elif tag == "path":
            polygons.extend(_parse_path(path, elem.get("d", ""), where))
        elif tag == "polygon":
            polygons.extend(_keep_polygon(_parse_points(path, elem.get("points", ""), where)))
        elif tag == "rect":
            x, y = _num_attr(path, elem, "x", where, 0.0), _num_attr(path, elem, "y", where, 0.0)
            w, h = _num_attr(path, elem, "width", where), _num_attr(path, elem, "height", where)
            if w < 0 or h < 0:
                raise InputError(path, f"{where} has a negative width or height")
            corners = [(x, y), (x + w, y), (x + w, y + h), (x, y + h)]
            polygons.extend(_keep_polygon(np.array(corners, dtype=np.float64)))
        else:  # circle
            cx, cy = _num_attr(path, elem, "cx", where, 0.0), _num_attr(path, elem, "cy", where, 0.0)
            r = _num_attr(path, elem, "r", where)
            if r < 0:
                raise InputError(path, f"{where} has a negative radius {r}")
            if r > 0:
                circles.append((cx, cy, r))

    polys = tuple(_rescale(p - offset, factor) for p in polygons)
    circ = np.array(circles, dtype=np.float64).reshape(-1, 3)
    circ[:, :2] = _rescale(circ[:, :2] - offset, factor)
    circ[:, 2] *= factor
    regs = tuple(tuple(_rescale(r - offset, factor) for r in rings) for rings in regions)
    return Layout(width=width, height=height, polygons=polys, circles=circ, regions=regs)


def rasterize(layout: Layout, shape: tuple[int, int] | None = None, scale: float = 1.0) -> np.ndarray:
    """Render a layout to a metal mask: (H, W) uint8 {0,1}.

    scale: multiplies the geometry about pixel edges, i.e. a pixel centre x maps to (x + 0.5) * scale - 0.5
    (the convention of cv2.resize), radii to r * scale. shape: output (H, W); default
    (round(height * scale), round(width * scale)). Geometry outside the output is clipped.
    """
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    if shape is None:
        shape = (round(layout.height * scale), round(layout.width * scale))
    mask = np.zeros(shape, dtype=np.uint8)
    one = 1 << _SHIFT
    for poly in layout.polygons:
        pts = np.round(_rescale(poly, scale) * one)
        if np.abs(pts).max() >= 2**31:
            raise ValueError(f"polygon coordinates beyond +-{2**31 // one} px cannot be rasterized")
        pts = pts.astype(np.int32)
        cv2.fillPoly(mask, [pts.reshape(-1, 1, 2)], 1, cv2.LINE_8, _SHIFT)
    centres = _rescale(layout.circles[:, :2], scale)
    for (cx, cy), r in zip(centres.tolist(), (layout.circles[:, 2] * scale).tolist(), strict=True):
        _fill_disc(mask, cx, cy, r)
    if layout.regions:
        from samsem.vector.raster import fill

        rings = [_rescale(r, scale) + 0.5 for rings in layout.regions for r in rings]  # corner coordinates
        ring_ends = np.cumsum([0, *(len(r) for r in rings)])
        poly_ends = np.cumsum([0, *(len(rs) for rs in layout.regions)])
        fill(mask, np.concatenate(rings), ring_ends, poly_ends)
    return mask


def _fill_disc(mask: np.ndarray, cx: float, cy: float, r: float) -> None:
    """Set the pixels of mask ((H, W) uint8) whose centres lie within distance r of (cx, cy)."""
    y0, y1 = max(math.ceil(cy - r), 0), min(math.floor(cy + r), mask.shape[0] - 1)
    x0, x1 = max(math.ceil(cx - r), 0), min(math.floor(cx + r), mask.shape[1] - 1)
    if y0 > y1 or x0 > x1:
        return
    yy = np.arange(y0, y1 + 1, dtype=np.float64)[:, None] - cy
    xx = np.arange(x0, x1 + 1, dtype=np.float64)[None, :] - cx
    mask[y0 : y1 + 1, x0 : x1 + 1] |= (yy * yy + xx * xx <= r * r * (1 + 1e-12)).view(np.uint8)


def _rescale(xy: np.ndarray, factor: float) -> np.ndarray:
    """Scale pixel-centre coordinates about pixel edges: x -> (x + 0.5) * factor - 0.5 (exact for 1)."""
    return xy if factor == 1 else (xy + 0.5) * factor - 0.5


def _split_tag(tag: str) -> tuple[str, str]:
    """'{ns}name' -> (ns, name); 'name' -> ('', name)."""
    if tag.startswith("{"):
        ns, _, name = tag[1:].partition("}")
        return ns, name
    return "", tag


def _fill_rule(elem: ET.Element) -> str | None:
    """The element's own fill-rule ('evenodd', 'nonzero'), from its style or attribute; None if unset."""
    for item in (elem.get("style") or "").split(";"):
        key, _, value = item.partition(":")
        if key.strip() == "fill-rule":
            return value.strip()
    rule = elem.get("fill-rule")
    return rule.strip() if rule else None


def _drawn_elements(path: Path, elem: ET.Element, evenodd: bool) -> Iterator[tuple[ET.Element, bool]]:
    """Yield (path/polygon/rect/circle element, inherited fill-rule is evenodd) in document order,
    skipping non-rendered subtrees."""
    for child in elem:
        if not isinstance(child.tag, str):  # comments, processing instructions
            continue
        ns, tag = _split_tag(child.tag)
        if ns not in ("", SVG_NS) or tag in _NOT_RENDERED:
            continue
        if tag in _UNSUPPORTED:
            raise InputError(path, f"unsupported SVG element <{tag}>", "path, polygon, rect, circle and g")
        if tag in ("g", "path", "polygon", "rect", "circle") and child.get("transform") is not None:
            raise InputError(path, f"transform attribute on <{tag}> is not supported", "untransformed shapes")
        rule = _fill_rule(child)
        child_evenodd = evenodd if rule is None else rule == "evenodd"
        if tag == "g":
            yield from _drawn_elements(path, child, child_evenodd)
        elif tag in ("path", "polygon", "rect", "circle"):
            yield child, child_evenodd


def _to_float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _size_attr(path: Path, root: ET.Element, name: str) -> int:
    text = root.get(name)
    if text is None:
        raise InputError(path, f"<svg> has no {name} attribute", "width and height in pixels")
    text = text.strip()
    value = _to_float(text.removesuffix("px"))
    if value is None or value <= 0:
        raise InputError(path, f"<svg> {name}={text!r} is not a positive pixel size", 'e.g. width="4096"')
    return round(value)


def _viewbox(path: Path, root: ET.Element, width: int, height: int) -> tuple[np.ndarray, float]:
    """Return (offset xy, uniform factor) mapping viewBox coordinates to pixel coordinates."""
    text = root.get("viewBox")
    if text is None:
        return np.zeros(2), 1.0
    parsed = [_to_float(t) for t in re.split(r"[\s,]+", text.strip())]
    vals = [v for v in parsed if v is not None]
    if len(parsed) != 4 or len(vals) != 4 or vals[2] <= 0 or vals[3] <= 0:
        raise InputError(path, f"invalid viewBox {text!r}", "four numbers 'min-x min-y width height'")
    minx, miny, vw, vh = vals
    fx, fy = width / vw, height / vh
    if not math.isclose(fx, fy, rel_tol=1e-6):
        raise InputError(path, f"viewBox {text!r} scales x and y differently", "uniform scaling")
    return np.array([minx, miny]), fx


def _num_attr(path: Path, elem: ET.Element, name: str, where: str, default: float | None = None) -> float:
    text = elem.get(name)
    if text is None:
        if default is None:
            raise InputError(path, f"{where} has no {name} attribute")
        return default
    value = _to_float(text.strip().removesuffix("px"))
    if value is None:
        raise InputError(path, f"{where} has an invalid {name}={text!r}", "a number in pixels")
    return value


def _keep_polygon(vertices: np.ndarray) -> list[np.ndarray]:
    """Drop repeated and closing vertices; return [vertices] if at least 3 remain, else []."""
    keep = np.ones(len(vertices), dtype=bool)
    keep[1:] = np.any(vertices[1:] != vertices[:-1], axis=1)
    vertices = vertices[keep]
    if len(vertices) > 1 and np.array_equal(vertices[0], vertices[-1]):
        vertices = vertices[:-1]
    return [vertices] if len(vertices) >= 3 else []


def _tokens(path: Path, text: str, where: str) -> list[str]:
    leftover = _TOKEN.sub(" ", text).replace(",", " ").strip()
    if leftover:
        raise InputError(path, f"{where}: cannot parse {leftover.split()[0]!r} in {text[:60]!r}")
    return _TOKEN.findall(text)


def _parse_points(path: Path, text: str, where: str) -> np.ndarray:
    tokens = _tokens(path, text, where)
    nums = [_to_float(t) for t in tokens]
    if any(v is None for v in nums) or len(nums) % 2:
        raise InputError(path, f"{where}: points must be an even number of numbers, got {text[:60]!r}")
    return np.array(nums, dtype=np.float64).reshape(-1, 2)


def _parse_path(path: Path, d: str, where: str) -> list[np.ndarray]:
    """Parse path data into subpath polygons ((K, 2) float64 each)."""
    tokens = _tokens(path, d, where)
    polygons: list[np.ndarray] = []
    current: list[tuple[float, float]] = []
    cur = start = (0.0, 0.0)
    cmd = ""
    i = 0

    def flush() -> None:
        if current:
            polygons.extend(_keep_polygon(np.array(current, dtype=np.float64)))
            current.clear()

    while i < len(tokens):
        tok = tokens[i]
        if tok.isalpha():
            if tok.upper() not in "MLHVZ":
                raise InputError(path, f"{where}: unsupported path command {tok!r}", _PATH_COMMANDS)
            if not cmd and tok.upper() != "M":
                raise InputError(path, f"{where}: path data must start with a moveto (M/m), got {tok!r}")
            cmd = tok
            i += 1
            if cmd in "Zz":
                flush()
                cur = start
            continue
        if not cmd:
            raise InputError(path, f"{where}: path data must start with a moveto (M/m), got {tok!r}")
        if cmd in "Zz":
            raise InputError(path, f"{where}: number {tok!r} after closepath (Z)")
        nargs = 2 if cmd in "MmLl" else 1
        args = tokens[i : i + nargs]
        if len(args) < nargs or any(a.isalpha() for a in args):
            raise InputError(path, f"{where}: command {cmd!r} needs {nargs} number(s)")
        vals = [float(a) for a in args]
        i += nargs
        rel = cmd.islower()
        up = cmd.upper()
        if up in "ML":
            x, y = vals
            cur = (cur[0] + x, cur[1] + y) if rel else (x, y)
        elif up == "H":
            cur = (cur[0] + vals[0] if rel else vals[0], cur[1])
        else:  # V
            cur = (cur[0], cur[1] + vals[0] if rel else vals[0])
        if up == "M":
            flush()
            start = cur
            current.append(cur)
            cmd = "l" if rel else "L"  # further coordinate pairs are implicit linetos
        else:
            if not current:  # drawing after Z without a moveto starts at the closed subpath's start
                current.append(start)
            current.append(cur)
    flush()
    return polygons
