"""Procedural Manhattan metal layouts rendered straight into a metal mask with exact per-line bookkeeping.

The image is cut into horizontal bands (stacked top to bottom, separated by at least ``min_space`` empty
rows); each band follows one regime:

* ``cells``: standard-cell-like rows: optional wide power rails above and below, horizontal tracks at a
  fixed pitch cut into segments (line ends), short vertical stubs and vias with landing pads;
* ``routes``: sparse long routes on a coarser grid that jog between tracks (L and Z bends);
* ``pads``: large pads carrying via arrays, with escape lines, plus routes around them.

Every rectangle is placed on an integer label canvas only after checking that no *other* line lies within
the required clearance (Chebyshev distance), so distinct lines never touch, not even diagonally: the
number of 8-connected components of the mask is exactly the number of lines. Near-misses are made on
purpose by extending a line until it stops exactly 1-3 px (``near_miss_gap``) short of another line.
With probability ``vertical_prob`` the whole layout is transposed (vertical preferred direction).

All lengths are in pixels of the rendered mask; LayoutConfig.scaled applies a magnification.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from samsem.errors import ConfigError

_RANGE_FIELDS = ("pitch", "width", "segment_length", "rail_width", "pad_size", "via_size", "near_miss_gap")
_PROB_FIELDS = (
    "density",
    "stub_prob",
    "route_prob",
    "pad_prob",
    "rail_prob",
    "near_miss_prob",
    "via_prob",
    "via_pair_prob",
    "vertical_prob",
)


@dataclass(frozen=True)
class LayoutConfig:
    """Parameters of the procedural layout; (lo, hi) tuples are inclusive integer ranges in pixels.

    pitch: track pitch (centre to centre). width: signal line width; a band draws one width per track row
    (cells) or per route (routes), never wider than pitch - min_space. min_space: normal spacing between
    distinct lines. density: probability that a track slot carries a segment (cells) and relative number
    of routes (routes). segment_length: length of track segments and route legs (log-uniform).
    stub_prob: per track segment, probability of a vertical stub. route_prob / pad_prob: probability that
    a band is a routing band / a pad band (otherwise cells). rail_prob: probability that a cells band has
    power rails of rail_width. pad_size: pad side lengths. near_miss_prob: probability that a line end,
    stub or route leg is extended on purpose to stop near_miss_gap px short of another line. via_prob:
    probability of vias on a segment or leg; via_size: via diameter (a landing pad is drawn where it
    exceeds the line). vertical_prob: probability that the whole layout is transposed. via_pair_prob:
    probability that a via on a segment comes as a pair of vias side by side along the line (as at the
    line ends of real layouts; 0 draws no random numbers, so layouts made without it do not change).
    """

    pitch: tuple[int, int] = (12, 20)
    width: tuple[int, int] = (4, 9)
    min_space: int = 4
    density: float = 0.75
    segment_length: tuple[int, int] = (20, 300)
    stub_prob: float = 0.3
    route_prob: float = 0.3
    pad_prob: float = 0.12
    rail_prob: float = 0.7
    rail_width: tuple[int, int] = (14, 30)
    pad_size: tuple[int, int] = (30, 70)
    near_miss_prob: float = 0.05
    near_miss_gap: tuple[int, int] = (1, 3)
    via_prob: float = 0.25
    via_size: tuple[int, int] = (5, 10)
    vertical_prob: float = 0.25
    via_pair_prob: float = 0.0

    def __post_init__(self) -> None:
        for name in _RANGE_FIELDS:
            lo, hi = getattr(self, name)
            if (
                not (isinstance(lo, int | np.integer) and isinstance(hi, int | np.integer))
                or not 1 <= lo <= hi
            ):
                raise ConfigError(f"layout {name}={(lo, hi)!r} must be integers with 1 <= lo <= hi")
        for name in _PROB_FIELDS:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"layout {name}={value!r} must be a probability in [0, 1]")
        if self.min_space < 1:
            raise ConfigError(f"layout min_space={self.min_space} must be >= 1 (lines must not touch)")
        if self.width[0] > self.pitch[0] - self.min_space:
            raise ConfigError(
                f"layout width {self.width} does not fit pitch {self.pitch} with min_space {self.min_space}"
                " (need width lo <= pitch lo - min_space)"
            )

    def scaled(self, factor: float) -> LayoutConfig:
        """This config with every length multiplied by `factor` (magnification); near_miss_gap stays in px."""
        if not factor > 0:
            raise ConfigError(f"layout scale factor must be positive, got {factor}")

        def s(v: int) -> int:
            return max(1, round(v * factor))

        def r(pair: tuple[int, int]) -> tuple[int, int]:
            lo = s(pair[0])
            return lo, max(lo, s(pair[1]))

        space = s(self.min_space)
        width = r(self.width)
        pitch = r(self.pitch)
        lo = max(pitch[0], width[0] + space)
        return replace(
            self,
            pitch=(lo, max(lo, pitch[1])),
            width=width,
            min_space=space,
            segment_length=r(self.segment_length),
            rail_width=r(self.rail_width),
            pad_size=r(self.pad_size),
            via_size=r(self.via_size),
        )

    def to_dict(self) -> dict:
        """JSON-ready dict of all fields (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> LayoutConfig:
        """Inverse of to_dict; unknown keys raise ConfigError."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown layout parameter(s) {unknown}; valid: {sorted(names)}")
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)


@dataclass(frozen=True)
class LineInfo:
    """One electrically distinct line: kind ('track', 'route', 'rail', 'pad'), bounding box
    (y0, x0, y1, x1) with exclusive ends in mask pixels, and its drawn signal width in px."""

    kind: str
    bbox: tuple[int, int, int, int]
    width: int


@dataclass(frozen=True)
class SynthLayout:
    """A generated layout.

    mask: (H, W) uint8 {0,1}. lines: one LineInfo per 8-connected component of mask.
    vias: (M, 3) float64 rows (cx, cy, r) in pixels. near_misses: (K, 3) int64 rows (y, x, gap): the first
    background pixel in front of a line end/stub tip that was stopped `gap` px short of another line.
    vertical: True when the layout was transposed (vertical preferred direction).
    """

    mask: np.ndarray
    lines: tuple[LineInfo, ...]
    vias: np.ndarray
    near_misses: np.ndarray
    vertical: bool


class _Band:
    """Integer label canvas of one band: 0 = empty, k > 0 = line k (local numbering)."""

    def __init__(self, height: int, width: int, rng: np.random.Generator) -> None:
        self.lab = np.zeros((height, width), np.int32)
        self.rng = rng
        self.kinds: list[str] = []
        self.widths: list[int] = []
        self.boxes: list[list[int]] = []
        self.vias: list[tuple[float, float, float]] = []
        self.near: list[tuple[int, int, int]] = []

    @property
    def shape(self) -> tuple[int, int]:
        return self.lab.shape

    def fits(self, y0: int, y1: int, x0: int, x1: int, label: int, clearance: int) -> bool:
        """True if the rectangle, grown by `clearance` on every side, holds no pixel of another line."""
        h, w = self.lab.shape
        if y0 < 0 or x0 < 0 or y1 > h or x1 > w or y0 >= y1 or x0 >= x1:
            return False
        c = clearance
        reg = self.lab[max(y0 - c, 0) : y1 + c, max(x0 - c, 0) : x1 + c]
        return not np.any((reg != 0) & (reg != label))

    def draw(self, y0: int, y1: int, x0: int, x1: int, label: int) -> None:
        self.lab[y0:y1, x0:x1] = label
        box = self.boxes[label - 1]
        box[0], box[1] = min(box[0], y0), min(box[1], x0)
        box[2], box[3] = max(box[2], y1), max(box[3], x1)

    def add_line(self, kind: str, width: int, rect: tuple[int, int, int, int], clearance: int) -> int:
        """Draw the first rectangle (y0, y1, x0, x1) of a new line if it fits; return its label or 0."""
        y0, y1, x0, x1 = rect
        h, w = self.lab.shape
        y0, y1, x0, x1 = max(y0, 0), min(y1, h), max(x0, 0), min(x1, w)
        label = len(self.kinds) + 1
        if not self.fits(y0, y1, x0, x1, label, clearance):
            return 0
        self.kinds.append(kind)
        self.widths.append(width)
        self.boxes.append([y0, x0, y1, x1])
        self.draw(y0, y1, x0, x1, label)
        return label

    def run(
        self, rect: tuple[int, int, int, int], direction: str, max_len: int, label: int, clearance: int
    ) -> tuple[int, bool]:
        """Longest extension (<= max_len) of `rect`'s cross-section beyond its edge in `direction`
        ('r', 'l', 'd', 'u') that keeps `clearance` to other lines; returns (length, blocked by a line)."""
        y0, y1, x0, x1 = rect
        h, w = self.lab.shape
        if direction == "r":
            view, a0, a1, edge = self.lab, y0, y1, x1
        elif direction == "l":
            view, a0, a1, edge = self.lab[:, ::-1], y0, y1, w - x0
        elif direction == "d":
            view, a0, a1, edge = self.lab.T, x0, x1, y1
        else:
            view, a0, a1, edge = self.lab[::-1].T, x0, x1, h - y0
        c = clearance
        n_along = view.shape[1]
        lo = max(edge - c, 0)
        reg = view[max(a0 - c, 0) : a1 + c, lo : min(edge + max_len + c, n_along)]
        hit = np.any((reg != 0) & (reg != label), axis=0)
        if hit.any():
            return max(int(np.argmax(hit)) + lo - c - edge, 0), True
        return max(min(max_len, n_along - edge), 0), False

    def extend(
        self, rect: tuple[int, int, int, int], direction: str, length: int, label: int
    ) -> tuple[int, int, int, int]:
        """Draw the extension of `rect` by `length` px in `direction`; return the new rectangle."""
        y0, y1, x0, x1 = rect
        new = {
            "r": (y0, y1, x1, x1 + length),
            "l": (y0, y1, x0 - length, x0),
            "d": (y1, y1 + length, x0, x1),
            "u": (y0 - length, y0, x0, x1),
        }[direction]
        self.draw(*new, label)
        return new

    def near_miss(self, rect: tuple[int, int, int, int], direction: str, gap: int) -> None:
        """Record a near-miss in front of `rect`'s edge in `direction`."""
        y0, y1, x0, x1 = rect
        ym, xm = (y0 + y1 - 1) // 2, (x0 + x1 - 1) // 2
        pos = {"r": (ym, x1), "l": (ym, x0 - 1), "d": (y1, xm), "u": (y0 - 1, xm)}[direction]
        self.near.append((pos[0], pos[1], gap))

    def via(self, cy: float, cx: float, size: int, label: int, clearance: int) -> None:
        """Put a via of diameter `size` centred at (cy, cx) on line `label`: drawn as a square or disc
        landing pad where it exceeds the line, skipped if that pad would come too close to another line."""
        half = size / 2.0
        y0, y1 = math.floor(cy - half + 0.5), math.floor(cy + half + 0.5)
        x0, x1 = math.floor(cx - half + 0.5), math.floor(cx + half + 0.5)
        if not self.fits(y0, y1, x0, x1, label, clearance):
            return
        reg = self.lab[y0:y1, x0:x1]
        if self.rng.random() < 0.5:
            reg[...] = label
        else:
            yy, xx = np.ogrid[y0:y1, x0:x1]
            reg[(yy + 0.5 - cy) ** 2 + (xx + 0.5 - cx) ** 2 <= half * half] = label
        box = self.boxes[label - 1]
        box[0], box[1] = min(box[0], y0), min(box[1], x0)
        box[2], box[3] = max(box[2], y1), max(box[3], x1)
        self.vias.append((cx, cy, half))


def _rint(rng: np.random.Generator, pair: tuple[int, int], hi: int | None = None) -> int:
    """Uniform integer in [lo, min(hi, pair hi)] (inclusive)."""
    lo, top = pair
    if hi is not None:
        top = max(lo, min(top, hi))
    return int(rng.integers(lo, top + 1))


def _length(rng: np.random.Generator, pair: tuple[int, int]) -> int:
    """Log-uniform integer length in [lo, hi]: short pieces are as common as long runs."""
    lo, hi = pair
    return min(hi, int(math.exp(rng.uniform(math.log(lo), math.log(hi + 1)))))


def _clearance(rng: np.random.Generator, cfg: LayoutConfig) -> tuple[int, bool]:
    """(clearance, is_near_miss): a near_miss_gap draw with probability near_miss_prob, else min_space."""
    if rng.random() < cfg.near_miss_prob:
        return _rint(rng, cfg.near_miss_gap), True
    return cfg.min_space, False


def _add_vias(band: _Band, rect: tuple[int, int, int, int], label: int, cfg: LayoutConfig) -> None:
    """With probability via_prob, put 1-2 vias (or pairs, via_pair_prob) along a horizontal segment
    (ends preferred)."""
    rng = band.rng
    if rng.random() >= cfg.via_prob:
        return
    y0, y1, x0, x1 = rect
    cy = (y0 + y1) / 2.0
    for _ in range(int(rng.integers(1, 3))):
        size = _rint(rng, cfg.via_size)
        span = x1 - x0
        if rng.random() < 0.6:  # at a line end, a classic landing pad
            cx = x0 + size / 2.0 if rng.random() < 0.5 else x1 - size / 2.0
        else:
            cx = x0 + size / 2.0 + rng.random() * max(span - size, 0)
        if cfg.via_pair_prob > 0 and rng.random() < cfg.via_pair_prob:
            step = size * rng.uniform(1.2, 1.6)  # the partner sits inwards, towards the segment's middle
            partner = cx + step if cx - x0 < x1 - cx else cx - step
            if x0 + size / 2.0 <= partner <= x1 - size / 2.0:
                band.via(cy, partner, size, label, cfg.min_space)
        band.via(cy, cx, size, label, cfg.min_space)


def _cells(band: _Band, cfg: LayoutConfig) -> None:
    """Fill a standard-cell band: rails, tracks cut into segments, then stubs and vias."""
    rng = band.rng
    bh, bw = band.shape
    p = _rint(rng, cfg.pitch)
    w = _rint(rng, cfg.width, p - cfg.min_space)
    space = p - w
    rails = rng.random() < cfg.rail_prob
    rw = _rint(rng, cfg.rail_width) if rails else 0

    def rail(y: int) -> None:
        x = -int(rng.integers(0, bw // 2 + 1)) if rng.random() < 0.3 else 0
        while x < bw:
            length = bw if rng.random() < 0.6 else int(rng.integers(bw // 4 + 1, bw + 1))
            rect = (y, y + rw, max(x, 0), min(x + length, bw))
            label = band.add_line("rail", rw, rect, cfg.min_space)
            if label:
                _add_vias(band, rect, label, cfg)
            x += length + int(rng.integers(cfg.min_space, 4 * p + cfg.min_space + 1))

    if rails and rw <= bh:
        rail(0)
        y = rw + space
    else:
        rails = False
        y = space // 2
    segments: list[tuple[int, tuple[int, int, int, int]]] = []
    last_bottom = -1
    while y + w + (space + rw if rails else 0) <= bh:
        x = -int(rng.integers(0, cfg.segment_length[1] + 1))
        gap, near, prev = cfg.min_space, False, 0  # gap/near: the space before x; prev: label before it
        while x < bw:
            length = _length(rng, cfg.segment_length)
            label = 0
            if rng.random() < cfg.density:
                rect = (y, y + w, max(x, 0), min(x + length, bw))
                label = band.add_line("track", w, rect, min(gap, cfg.min_space))
                if label:
                    segments.append((label, rect))
                    if near and prev:
                        band.near_miss(rect, "l", gap)
            prev = label
            gap, near = _clearance(rng, cfg)
            if not near:
                gap = int(rng.integers(cfg.min_space, cfg.min_space + 2 * p + 1))
            x += length + gap
        last_bottom = y + w
        y += p
    if rails and last_bottom > 0:
        rail(last_bottom + space)
    for label, rect in segments:
        if rng.random() < cfg.stub_prob:
            _stub(band, rect, label, w, p, cfg)
        _add_vias(band, rect, label, cfg)


def _stub(
    band: _Band, rect: tuple[int, int, int, int], label: int, w: int, p: int, cfg: LayoutConfig
) -> None:
    """A short vertical stub of width w hanging off a horizontal segment, stopped short of other lines."""
    rng = band.rng
    y0, y1, x0, x1 = rect
    if x1 - x0 < w:
        return
    xs = int(rng.integers(x0, x1 - w + 1))
    base = (y0, y1, xs, xs + w)
    direction = "u" if rng.random() < 0.5 else "d"
    gap, near = _clearance(rng, cfg)
    want = int(rng.integers(max(2, w // 2), 2 * p + 1))
    free, blocked = band.run(base, direction, 4 * p if near else want, label, gap)
    if near and blocked and free >= 2:
        tip = band.extend(base, direction, free, label)
        band.near_miss(tip, direction, gap)
    elif not near and free >= 2:
        band.extend(base, direction, min(free, want), label)


def _route(band: _Band, cfg: LayoutConfig, p: int, kind: str = "route", start: tuple | None = None) -> None:
    """One Manhattan route: horizontal legs joined by vertical jogs of 1-3 pitches (L/Z bends)."""
    rng = band.rng
    bh, bw = band.shape
    w = _rint(rng, cfg.width, p - cfg.min_space)
    if start is None:
        if w > bh:
            return
        tracks = max(1, (bh - w) // p + 1)
        y = int(rng.integers(0, tracks)) * p + (bh - (tracks - 1) * p - w) // 2
        x = int(rng.integers(0, bw))
        label = band.add_line(kind, w, (y, y + w, x, x + w), cfg.min_space)
        if not label:
            return
        cur = (y, y + w, x, min(x + w, bw))
        direction = "r" if rng.random() < 0.5 else "l"
    else:
        label, cur, direction, w = start
    legs = int(rng.integers(1, 5))
    for leg in range(legs):
        want = 2 * _length(rng, cfg.segment_length)
        gap, near = _clearance(rng, cfg)
        free, blocked = band.run(cur, direction, 4 * want if near else want, label, gap)
        if near and not blocked:
            free = min(free, want)
        if free < 1:
            return
        leg_rect = band.extend(cur, direction, free, label)
        if blocked:
            if near:
                band.near_miss(leg_rect, direction, gap)
            return
        _add_vias(band, leg_rect, label, cfg)
        if leg == legs - 1 or free < want:  # last leg, or it ran off the image edge
            return
        y0, y1, x0, x1 = leg_rect
        corner = (y0, y1, x1 - w, x1) if direction == "r" else (y0, y1, x0, x0 + w)
        vdir = "d" if rng.random() < 0.5 else "u"
        drop = int(rng.integers(1, 4)) * p
        free, _ = band.run(corner, vdir, drop, label, cfg.min_space)
        if free < drop:
            if free >= 2:
                band.extend(corner, vdir, free, label)
            return
        band.extend(corner, vdir, drop, label)
        shift = drop if vdir == "d" else -drop
        cur = (corner[0] + shift, corner[1] + shift, corner[2], corner[3])


def _routes(band: _Band, cfg: LayoutConfig, with_pads: bool) -> None:
    """Fill a routing band, with a row of pads (via arrays, escape routes) first if `with_pads`."""
    rng = band.rng
    bh, bw = band.shape
    p = _rint(rng, cfg.pitch)
    if with_pads and bh >= cfg.pad_size[0]:
        x = int(rng.integers(0, cfg.pad_size[1] + 1))
        while x < bw:
            ph, pw = _rint(rng, cfg.pad_size, bh), _rint(rng, cfg.pad_size)
            y = int(rng.integers(0, bh - ph + 1))
            label = band.add_line("pad", min(ph, pw), (y, y + ph, x, x + pw), cfg.min_space)
            if label:
                _pad_vias(band, (y, y + ph, x, min(x + pw, bw)), label, cfg)
                for direction in ("l", "r"):
                    if rng.random() < 0.6:
                        _escape(band, (y, y + ph, x, min(x + pw, bw)), direction, label, p, cfg)
            x += pw + int(rng.integers(cfg.pad_size[0], 3 * cfg.pad_size[1] + 1))
    mean_leg = sum(cfg.segment_length)
    attempts = math.ceil(cfg.density * (bh / p) * bw / max(mean_leg, 1) * 1.5)
    for _ in range(attempts):
        _route(band, cfg, p)


def _pad_vias(band: _Band, rect: tuple[int, int, int, int], label: int, cfg: LayoutConfig) -> None:
    """A via array (2x2 up to 4x4) inside a pad: recorded as vias, the mask is already metal there."""
    y0, y1, x0, x1 = rect
    size = _rint(band.rng, cfg.via_size)
    ny = max(1, min(4, (y1 - y0) // (2 * size)))
    nx = max(1, min(4, (x1 - x0) // (2 * size)))
    for i in range(ny):
        for j in range(nx):
            cy = y0 + (i + 0.5) * (y1 - y0) / ny
            cx = x0 + (j + 0.5) * (x1 - x0) / nx
            band.vias.append((cx, cy, size / 2.0))


def _escape(
    band: _Band, pad: tuple[int, int, int, int], direction: str, label: int, p: int, cfg: LayoutConfig
) -> None:
    """An escape route leaving a pad sideways: it is part of the pad's line."""
    rng = band.rng
    y0, y1, x0, x1 = pad
    w = _rint(rng, cfg.width, min(p - cfg.min_space, y1 - y0))
    if w > y1 - y0:
        return
    ys = int(rng.integers(y0, y1 - w + 1))
    edge = (ys, ys + w, x0, x0 + w) if direction == "l" else (ys, ys + w, x1 - w, x1)
    _route(band, cfg, p, start=(label, edge, direction, w))


def generate_layout(
    height: int, width: int, cfg: LayoutConfig, rng: np.random.Generator, *, vertical: bool | None = None
) -> SynthLayout:
    """Generate a random Manhattan layout of (height, width) px.

    vertical: force (True/False) or draw (None, probability cfg.vertical_prob) the preferred direction.
    Memory: the mask plus one int32 label canvas per band (band height x image width).
    """
    if height < 1 or width < 1:
        raise ConfigError(f"layout size must be positive, got {height}x{width}")
    if vertical is None:
        vertical = bool(rng.random() < cfg.vertical_prob)
    rows, cols = (width, height) if vertical else (height, width)
    mask = np.zeros((height, width), np.uint8)
    lines: list[LineInfo] = []
    vias: list[tuple[float, float, float]] = []
    near: list[tuple[int, int, int]] = []
    y = int(rng.integers(0, cfg.min_space + 1))
    while y < rows:
        u = rng.random()
        kind = "pads" if u < cfg.pad_prob else "routes" if u < cfg.pad_prob + cfg.route_prob else "cells"
        if kind == "cells":
            want = 2 * cfg.rail_width[1] + int(rng.integers(3, 13)) * cfg.pitch[1]
        elif kind == "routes":
            want = int(rng.integers(6, 25)) * cfg.pitch[1]
        else:
            want = cfg.pad_size[1] + int(rng.integers(2, 6)) * cfg.pitch[1]
        band = _Band(min(want, rows - y), cols, rng)
        if kind == "cells":
            _cells(band, cfg)
        else:
            _routes(band, cfg, kind == "pads")
        filled = np.flatnonzero(band.lab.any(axis=1))
        used = int(filled[-1]) + 1 if filled.size else 0
        metal = band.lab[:used] != 0
        if vertical:
            mask[:, y : y + used] = metal.T
        else:
            mask[y : y + used] = metal
        for k, wdt, (b0, b1, b2, b3) in zip(band.kinds, band.widths, band.boxes, strict=True):
            box = (b1, b0 + y, b3, b2 + y) if vertical else (b0 + y, b1, b2 + y, b3)
            lines.append(LineInfo(k, box, wdt))
        for cx, cy, r in band.vias:  # band coordinates have pixel edges at integers; output: centres
            cx, cy = cx - 0.5, cy - 0.5 + y
            vias.append((cy, cx, r) if vertical else (cx, cy, r))
        for ny, nx, gap in band.near:
            near.append((nx, ny + y, gap) if vertical else (ny + y, nx, gap))
        y += used + int(rng.integers(cfg.min_space, cfg.min_space + cfg.pitch[1] + 1))
    return SynthLayout(
        mask=mask,
        lines=tuple(lines),
        vias=np.array(vias, np.float64).reshape(-1, 3),
        near_misses=np.array(near, np.int64).reshape(-1, 3),
        vertical=vertical,
    )
