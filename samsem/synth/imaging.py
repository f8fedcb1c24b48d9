"""A physically motivated SEM image model: metal mask -> grayscale image, in bounded memory.

Signal model, per pixel (secondary-electron yield, 1.0 = full scale), in this order:

1. base levels: dielectric_level, metal at metal_level times a per-line gain exp(voltage_contrast * N)
   (voltage contrast, one draw per 8-connected line; metal_level < dielectric_level gives an inverted,
   backscatter-like image); partly delayered lines stay metal in the ground truth: a line drawn
   outline-only (probability delayer_prob) has its interior at dielectric + delayer_level * (metal -
   dielectric), a patchy line (probability patchy_prob) keeps metal in smooth patches (size patch_scale)
   and falls to that level between them; a dome profile (edge_profile, profile_width) darkens the metal
   towards its edges; metal grain (grain, grain_size) and dielectric grain (bg_grain, bg_grain_size);
2. edge rim: + edge_gain * a rim of width edge_width along every metal edge (the SE edge effect;
   mostly on the metal side, a weaker tail on the dielectric; narrow lines get brighter as both rims
   overlap; a negative edge_gain darkens the edges);
3. vias: + via_contrast * a soft glow of radius via_halo around each via;
4. show-through: + ghost_contrast * a blurred second random layout (the layer below), visible through
   the dielectric only, amplified by (1 + ghost_charge_gain * charge region) under charging;
5. charging: + charging * local metal density (Gaussian radius charging_radius): large metal glows;
   + charge_regions * smooth random bright regions (size charge_scale); + a smooth additive shading
   field (ramp, vignette, bump) spanning +-shading;
6. surface: polishing streaks (polish, across-width polish_width, one random direction), scratches
   (scratches per megapixel, width scratch_width, bright or dark), residue film (residue: darkening by
   up to this fraction in smooth patches of size residue_scale); dust particles (dust_density per
   megapixel, radius ~dust_size, a fraction dust_dark of them dark) composited on top;
7. beam blur (Gaussian PSF, blur_sigma), detector lag along the scan (scan_lag px exponential tail),
   scan-line jitter (per-row horizontal shift, jitter px std), low-frequency drift (multiplicative field
   of relative amplitude drift, correlation length drift_scale; on images much smaller than drift_scale
   it mostly changes the overall gain), a smooth multiplicative shading field spanning +-shading_gain,
   per-row gain and offset noise (row_noise, row_offset);
8. shot noise: Poisson counts at `dose` electrons per pixel for full-scale signal (dose <= 0: off), plus
   Gaussian detector noise (read_noise);
9. output: clip(offset + gain * signal, 0, 1) scaled to the 8- or 16-bit range.

None of these changes the ground truth: show-through, charging, dust, scratches and residue are not
metal, delayered lines are. Every effect is off at its default value and an effect that is off draws no
random numbers, so adding effects leaves images made without them unchanged.

Lengths are in pixels at magnification 1 and are multiplied by `magnification` (a physical beam spot or
SE escape range covers more pixels at higher magnification). The image is rendered in horizontal strips
(with halo rows for the filters); noise is drawn per fixed 64-row block and per-line values come from a
hash of each line's first pixel, so the result does not depend on the strip size. Memory: the output, one
uint8 per-pixel line code array and O(strip) float32 work arrays (plus a 1/4-size ghost, 1/64-size
low-frequency fields and <= 1/9-size float16 noise fields).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, fields, replace

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.signal import lfilter
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from samsem.errors import ConfigError
from samsem.synth.layout import LayoutConfig, generate_layout

BLOCK_ROWS = 64  # noise is drawn per block of this many rows (strip boundaries are multiples of it)
DEFAULT_STRIP_PIXELS = 1 << 22  # work arrays cover about this many pixels (plus halo rows)
_FIELD_DS = 8  # low-frequency fields (drift, charging) are computed at 1/8 resolution
_GHOST_DS = 2  # the lower-layer ghost layout is generated at 1/2 resolution
_Q_LEVELS = 127  # per-line gain codes 1..127 (code bit 7 = outline-only) without patchy lines
_Q_RANGE = 3.0  # gain codes cover N in [-3, 3] standard deviations
_OUTER_RIM = 0.35  # the edge rim's strength on the dielectric side (the SE edge effect is mostly inside)
_LENGTHS = (
    "edge_width",
    "grain_size",
    "via_halo",
    "ghost_blur",
    "charging_radius",
    "drift_scale",
    "dust_size",
    "blur_sigma",
    "jitter",
    "profile_width",
    "patch_scale",
    "bg_grain_size",
    "charge_scale",
    "polish_width",
    "scratch_width",
    "residue_scale",
    "scan_lag",
)
_SIGNED = ("offset", "dose", "via_contrast", "charging", "edge_gain", "ghost_contrast")
_UNIT = (
    "delayer_prob",
    "patchy_prob",
    "ghost_parallel",
    "dust_dark",
    "edge_profile",
    "residue",
    "shading_gain",
)
_PATCH_LEVELS = 84  # per-line gain codes per kind when patchy lines exist (three kinds in a uint8)
# purposes of the independent random streams (entries of the SeedSequence spawn key)
_S_LINES, _S_GRAIN, _S_SHOT, _S_READ, _S_GHOST, _S_DRIFT, _S_DUST, _S_ROWS = range(8)
_S_PATCH, _S_BGGRAIN, _S_CHARGE, _S_SHADE, _S_POLISH, _S_SCRATCH, _S_RESIDUE = range(8, 15)


@dataclass(frozen=True)
class ImagingConfig:
    """SEM imaging effects; see the module docstring for the model. Levels are fractions of full scale,
    lengths are px at magnification 1, dose is electrons per pixel at full-scale signal."""

    magnification: float = 1.0
    dielectric_level: float = 0.18
    metal_level: float = 0.55
    edge_gain: float = 0.3
    edge_width: float = 1.2
    voltage_contrast: float = 0.08
    delayer_prob: float = 0.0
    delayer_level: float = 0.15
    grain: float = 0.03
    grain_size: float = 1.5
    via_contrast: float = 0.15
    via_halo: float = 2.0
    ghost_contrast: float = 0.0
    ghost_blur: float = 3.0
    charging: float = 0.0
    charging_radius: float = 40.0
    dust_density: float = 0.0
    dust_size: float = 5.0
    blur_sigma: float = 1.0
    jitter: float = 0.0
    drift: float = 0.0
    drift_scale: float = 400.0
    row_noise: float = 0.0
    dose: float = 50.0
    read_noise: float = 0.005
    offset: float = 0.0
    gain: float = 1.0

    # appended effects (all off by default; see the module docstring)
    edge_profile: float = 0.0
    profile_width: float = 3.0
    patchy_prob: float = 0.0
    patch_scale: float = 6.0
    bg_grain: float = 0.0
    bg_grain_size: float = 1.0
    ghost_parallel: float = 0.0
    ghost_charge_gain: float = 0.0
    charge_regions: float = 0.0
    charge_scale: float = 200.0
    shading: float = 0.0
    shading_gain: float = 0.0
    polish: float = 0.0
    polish_width: float = 1.0
    scratches: float = 0.0
    scratch_width: float = 1.5
    residue: float = 0.0
    residue_scale: float = 30.0
    dust_dark: float = 0.0
    scan_lag: float = 0.0
    row_offset: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigError(f"imaging {f.name}={value!r} must be a finite number")
        if self.magnification <= 0:
            raise ConfigError(f"imaging magnification={self.magnification} must be positive")
        if self.gain <= 0:
            raise ConfigError(f"imaging gain={self.gain} must be positive")
        for name in _UNIT:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"imaging {name}={getattr(self, name)} must lie in [0, 1]")
        negative = [f.name for f in fields(self) if f.name not in _SIGNED and getattr(self, f.name) < 0]
        if negative:
            raise ConfigError(f"imaging parameter(s) {negative} must be >= 0")

    def physical(self) -> ImagingConfig:
        """This config with lengths converted to output pixels (multiplied by magnification)."""
        m = self.magnification
        return replace(self, magnification=1.0, **{k: getattr(self, k) * m for k in _LENGTHS})

    def to_dict(self) -> dict:
        """All fields as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ImagingConfig:
        """Inverse of to_dict; unknown keys raise ConfigError."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown imaging parameter(s) {unknown}; valid: {sorted(names)}")
        return cls(**data)


# ------------------------------------------------------------------------------------------ randomness


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


def _hash_uniform(keys: np.ndarray, seed: int, stream: int) -> np.ndarray:
    """Counter-based uniforms in [0, 1) (float64) for uint64 keys: splitmix64 of key and stream salt."""
    salt = np.random.SeedSequence(seed, spawn_key=(_S_LINES, stream)).generate_state(1, np.uint64)[0]
    z = keys.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + salt
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _block_normal(seed: int, stream: int, r0: int, r1: int, width: int) -> np.ndarray:
    """Standard normal noise for rows r0..r1: (r1 - r0, width) float32, same values whatever the strips."""
    b0, b1 = r0 // BLOCK_ROWS, (r1 - 1) // BLOCK_ROWS + 1
    blocks = [_rng(seed, stream, b).standard_normal((BLOCK_ROWS, width), np.float32) for b in range(b0, b1)]
    full = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
    return full[r0 - b0 * BLOCK_ROWS : r1 - b0 * BLOCK_ROWS]


# --------------------------------------------------------------------------------------- line labelling


def _strips(height: int, width: int, max_pixels: int) -> list[tuple[int, int]]:
    rows = max(BLOCK_ROWS, (max_pixels // max(width, 1)) // BLOCK_ROWS * BLOCK_ROWS)
    return [(r, min(r + rows, height)) for r in range(0, height, rows)]


def _pieces(mask: np.ndarray, r0: int, r1: int) -> tuple[np.ndarray, np.ndarray]:
    """8-connected pieces of rows r0..r1: local labels (int32, 0 = background) and each piece's global
    raster index of its first pixel (int64, piece k at index k - 1)."""
    n, lab = cv2.connectedComponents(mask[r0:r1], connectivity=8, ltype=cv2.CV_32S)
    flat = lab.ravel()
    nz = np.flatnonzero(flat)
    first = np.full(n - 1, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first, (flat[nz] - 1).astype(np.intp), nz)
    return lab, first + r0 * mask.shape[1]


def _code_levels(cfg: ImagingConfig) -> int:
    """Voltage-contrast levels per line kind in the uint8 line codes (see line_codes)."""
    return _PATCH_LEVELS if cfg.patchy_prob > 0 else _Q_LEVELS


def line_codes(
    mask: np.ndarray, cfg: ImagingConfig, seed: int, max_strip_pixels: int = DEFAULT_STRIP_PIXELS
) -> tuple[np.ndarray, int]:
    """Per-pixel line codes and the number of 8-connected lines of `mask` ((H, W) uint8 {0,1}).

    Returns codes: (H, W) uint8, 0 = dielectric, else kind * (L + 1) + q with q = quantised
    voltage-contrast draw (1..L) and kind 0 = intact, 1 = outline-only, 2 = patchy (L = _code_levels:
    127, so bit 7 = outline-only, or 84 when patchy lines are possible); and the line count. Labelled
    in strips (pieces joined across strip boundaries), so memory is O(strip); each line's random draws
    depend only on its first pixel.
    """
    height, width = mask.shape
    strips = _strips(height, width, max_strip_pixels)
    firsts, tops, bottoms, bases = [], [], [], []
    base = 0
    for r0, r1 in strips:
        lab, first = _pieces(mask, r0, r1)
        bases.append(base)
        firsts.append(first)
        tops.append(np.where(lab[0] > 0, lab[0] + base - 1, -1))
        bottoms.append(np.where(lab[-1] > 0, lab[-1] + base - 1, -1))
        base += len(first)
    n_pieces = base
    edges = []
    for k in range(len(strips) - 1):
        lower, upper = bottoms[k], tops[k + 1]
        for dx in (-1, 0, 1):
            a = lower[max(0, -dx) : width - max(0, dx)]
            b = upper[max(0, dx) : width - max(0, -dx)]
            keep = (a >= 0) & (b >= 0)
            edges.append(np.stack([a[keep], b[keep]]))
    all_first = np.concatenate(firsts) if firsts else np.zeros(0, np.int64)
    if edges:
        e = np.concatenate(edges, axis=1)
        graph = coo_matrix((np.ones(e.shape[1], np.int8), (e[0], e[1])), shape=(n_pieces, n_pieces))
        n_lines, comp = connected_components(graph, directed=False)
    else:
        n_lines, comp = n_pieces, np.arange(n_pieces)
    key = np.full(n_lines, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(key, comp, all_first)
    u1, u2, u3 = (_hash_uniform(key, seed, s) for s in range(3))
    normal = np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)
    levels = _code_levels(cfg)
    q = np.clip(np.rint(normal * (levels // 2) / _Q_RANGE) + levels // 2 + 1, 1, levels)
    kind = np.where(u3 < cfg.delayer_prob, 1, 0)
    if cfg.patchy_prob > 0:
        kind[(kind == 0) & (_hash_uniform(key, seed, 3) < cfg.patchy_prob)] = 2
    code = (kind * (levels + 1) + q).astype(np.uint8)
    piece_code = code[comp]
    codes = np.zeros((height, width), np.uint8)
    for (r0, r1), base, first in zip(strips, bases, firsts, strict=True):
        lab, again = _pieces(mask, r0, r1)  # relabel; match pieces by first pixel (label order may vary)
        order = np.searchsorted(first, again, sorter=np.argsort(first))
        ids = np.argsort(first)[order] + base
        lut = np.concatenate([[0], piece_code[ids]]).astype(np.uint8)
        codes[r0:r1] = lut[lab]
    return codes, n_lines


def count_lines(mask: np.ndarray, max_strip_pixels: int = DEFAULT_STRIP_PIXELS) -> int:
    """Number of 8-connected components of a (H, W) uint8 {0,1} mask, in bounded memory."""
    return line_codes(mask, ImagingConfig(), 0, max_strip_pixels)[1]


# -------------------------------------------------------------------------------- low-resolution fields


def _rows_of(field: np.ndarray, height: int, width: int, r0: int, r1: int) -> np.ndarray:
    """Rows r0..r1 of `field` (h, w) bilinearly upsampled to (height, width): (r1 - r0, width) float32.

    Uses the cv2.resize pixel-centre convention in both axes, so strips agree with a whole-image resize.
    """
    fh = field.shape[0]
    ys = np.clip((np.arange(r0, r1) + 0.5) * (fh / height) - 0.5, 0, fh - 1)
    i0 = np.floor(ys).astype(np.intp)
    i1 = np.minimum(i0 + 1, fh - 1)
    t = (ys - i0).astype(np.float32)[:, None]
    rows = field[i0].astype(np.float32) * (1 - t) + field[i1].astype(np.float32) * t
    return cv2.resize(rows, (width, r1 - r0), interpolation=cv2.INTER_LINEAR)


def _density(mask: np.ndarray, ds: int) -> np.ndarray:
    """Metal fraction on a grid of ds x ds blocks: (ceil(H/ds), ceil(W/ds)) float32."""
    height, width = mask.shape
    fh, fw = -(-height // ds), -(-width // ds)
    out = np.zeros((fh, fw), np.float32)
    rows = 64 * ds
    for r0 in range(0, height, rows):
        part = (mask[r0 : r0 + rows] != 0).astype(np.float32)
        h = part.shape[0]
        pad = np.zeros((-(-h // ds) * ds, fw * ds), np.float32)
        pad[:h, :width] = part
        out[r0 // ds : r0 // ds + pad.shape[0] // ds] = pad.reshape(-1, ds, fw, ds).mean(axis=(1, 3))
    return out


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-correlated noise, each value standard normal (correlation length sigma): float32."""
    noise = rng.standard_normal(shape).astype(np.float32)
    if sigma > 0.3:
        noise = _blur(noise, sigma) * np.float32(2.0 * math.sqrt(math.pi) * sigma)
    return noise


def _stationary_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Like _smooth_noise, but drawn on a grid padded by 4 sigma and cropped, so that the values keep
    unit variance even where sigma is large against the field (no border reflection): float32."""
    pad = math.ceil(4 * sigma)
    noise = _smooth_noise(rng, (shape[0] + 2 * pad, shape[1] + 2 * pad), sigma)
    return np.ascontiguousarray(noise[pad : pad + shape[0], pad : pad + shape[1]])


def _smooth_noise_1d(rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
    """Gaussian-correlated 1-D noise, each value standard normal (correlation length sigma): (n,) float32."""
    noise = rng.standard_normal(n).astype(np.float32)
    if sigma > 0.3:
        noise = gaussian_filter1d(noise, sigma, mode="reflect", truncate=4.0)
        noise *= np.float32(math.sqrt(2.0 * math.sqrt(math.pi) * sigma))
    return noise


def _noise_field(seed: int, stream: int, height: int, width: int, scale: float) -> np.ndarray:
    """Smooth standard-normal noise of correlation length `scale` px on a coarse grid (ds = scale / 4
    clipped to 3..64 px per cell): float16 (ceil(H / ds), ceil(W / ds)); upsample rows with _rows_of."""
    ds = int(np.clip(round(scale / 4), 3, 64))
    shape = (-(-height // ds), -(-width // ds))
    return _stationary_noise(_rng(seed, stream), shape, scale / ds).astype(np.float16)


def _region(noise: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Smooth step of `noise` from 0 (<= lo) to 1 (>= hi): same shape, float32."""
    t = np.clip((noise - np.float32(lo)) * np.float32(1.0 / (hi - lo)), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _shade_pattern(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A smooth field of peak-to-peak 1 around 0: a random mix of a ramp, an off-centre vignette and a
    broad bump. (h, w) float32."""
    fh, fw = shape
    yy, xx = np.mgrid[0:fh, 0:fw].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * xx / max(fw, 1) + np.sin(angle) * yy / max(fh, 1)
    cy, cx = rng.uniform(0.2, 0.8) * fh, rng.uniform(0.2, 0.8) * fw
    vignette = -(((yy - cy) / max(fh, 1)) ** 2 + ((xx - cx) / max(fw, 1)) ** 2)
    coarse = _stationary_noise(rng, (16, 16), 4.8)  # correlation 0.3 x the field, drawn on a 16 x 16 grid
    bump = cv2.resize(coarse, (fw, fh), interpolation=cv2.INTER_LINEAR)
    weights = rng.dirichlet((1.0, 1.0, 1.0))
    mix = sum(
        w * (f - f.mean()) / max(float(np.ptp(f)), 1e-6)
        for w, f in zip(weights, (ramp, vignette, bump), strict=True)
    )
    return (mix / max(float(np.ptp(mix)), 1e-6)).astype(np.float32)


def _fields(mask: np.ndarray, cfg: ImagingConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Low-resolution additive (charging, shading) and multiplicative (drift, shading_gain) fields:
    1/8-size float32 each."""
    density = _density(mask, _FIELD_DS)
    add = np.zeros_like(density)
    if cfg.charging != 0:
        sigma = cfg.charging_radius / _FIELD_DS
        add = cfg.charging * cv2.GaussianBlur(density, (0, 0), max(sigma, 0.3), borderType=cv2.BORDER_REFLECT)
    mul = np.ones_like(density)
    if cfg.drift > 0:
        rng = _rng(seed, _S_DRIFT)
        noise = _smooth_noise(rng, density.shape, cfg.drift_scale / _FIELD_DS)
        yy, xx = np.mgrid[0 : density.shape[0], 0 : density.shape[1]].astype(np.float32)
        angle = rng.uniform(0, 2 * np.pi)
        ramp = np.cos(angle) * xx / max(density.shape[1], 1) + np.sin(angle) * yy / max(density.shape[0], 1)
        mul = 1.0 + cfg.drift * (0.7 * noise + 0.6 * (ramp - ramp.mean()))
        mul = np.maximum(mul, 0.05).astype(np.float32)
    if cfg.shading != 0 or cfg.shading_gain != 0:
        rng = _rng(seed, _S_SHADE)
        add = add + np.float32(2 * cfg.shading) * _shade_pattern(rng, density.shape)
        mul = mul * (1 + np.float32(2 * cfg.shading_gain) * _shade_pattern(rng, density.shape))
    return add, mul


def _ghost(
    height: int,
    width: int,
    cfg: ImagingConfig,
    seed: int,
    layout_cfg: LayoutConfig,
    magnification: float,
    vertical: bool | None,
) -> np.ndarray | None:
    """Blurred lower-layer layout at 1/2 resolution: uint8 (0..255 = 0..1), or None when disabled."""
    if cfg.ghost_contrast == 0:
        return None
    gh, gw = -(-height // _GHOST_DS), -(-width // _GHOST_DS)
    rng = _rng(seed, _S_GHOST)
    lower = generate_layout(gh, gw, layout_cfg.scaled(magnification / _GHOST_DS), rng, vertical=vertical)
    ghost = lower.mask * np.uint8(255)
    return _blur(ghost, cfg.ghost_blur / _GHOST_DS)  # uint8 in, uint8 out: 1 byte per ghost pixel


def _dust(height: int, width: int, cfg: ImagingConfig, seed: int) -> np.ndarray:
    """Dust particles: (N, 6) float64 rows (cy, cx, semi-axis a, semi-axis b, angle deg, level), by cy."""
    rng = _rng(seed, _S_DUST)
    n = int(rng.poisson(cfg.dust_density * height * width / 1e6)) if cfg.dust_density > 0 else 0
    if n == 0:
        return np.zeros((0, 6))
    a = cfg.dust_size * rng.lognormal(0.0, 0.5, n)
    parts = np.stack(
        [
            rng.uniform(0, height, n),
            rng.uniform(0, width, n),
            a,
            a * rng.uniform(0.4, 1.0, n),
            rng.uniform(0, 180, n),
            rng.uniform(0.55, 1.0, n),
        ],
        axis=1,
    )
    if cfg.dust_dark > 0:  # dark particles (organic residue, shadowed flakes)
        dark = rng.random(n) < cfg.dust_dark
        parts[dark, 5] = rng.uniform(0.0, 0.1, int(dark.sum()))
    return parts[np.argsort(parts[:, 0])]


@dataclass(frozen=True)
class _Scratch:
    """One scratch: polyline vertices (K, 2) float64 (x, y), width px, additive level."""

    points: np.ndarray
    width: float
    level: float


def _scratches(height: int, width: int, cfg: ImagingConfig, seed: int) -> tuple[_Scratch, ...]:
    """Long, gently curved scratches: a Poisson number (scratches per megapixel), bright or dark."""
    if cfg.scratches <= 0:
        return ()
    rng = _rng(seed, _S_SCRATCH)
    n = int(rng.poisson(cfg.scratches * height * width / 1e6))
    diag = math.hypot(height, width)
    out = []
    for _ in range(n):
        length = min(diag * rng.lognormal(-1.2, 0.6), 2 * diag)
        steps = 8
        angle = rng.uniform(0, np.pi) + np.cumsum(rng.normal(0, 0.03, steps))
        seg = length / steps
        xy = np.cumsum(np.stack([seg * np.cos(angle), seg * np.sin(angle)], axis=1), axis=0)
        start = np.array([rng.uniform(0, width), rng.uniform(0, height)]) - xy[steps // 2]
        pts = np.vstack([start, start + xy])
        w = max(0.7, cfg.scratch_width * rng.lognormal(0.0, 0.3))
        level = rng.uniform(0.06, 0.3) * (1.0 if rng.random() < 0.6 else -1.0)
        out.append(_Scratch(pts, float(w), float(level)))
    return tuple(out)


@dataclass(frozen=True)
class _Polish:
    """Polishing streaks: direction (cos, sin), a 1-D streak profile along the normal coordinate
    t = x cos + y sin - t0 (float32, unit step) and a coarse envelope field (float32)."""

    cos: float
    sin: float
    t0: float
    profile: np.ndarray
    envelope: np.ndarray


def _polish(height: int, width: int, cfg: ImagingConfig, seed: int) -> _Polish | None:
    """Parallel polishing streaks in one random direction, fading in and out along the field."""
    if cfg.polish <= 0:
        return None
    rng = _rng(seed, _S_POLISH)
    angle = rng.uniform(0, np.pi)
    c, s = math.cos(angle), math.sin(angle)
    corners = [x * c + y * s for x in (0, width) for y in (0, height)]
    t0, t1 = min(corners) - 2, max(corners) + 2
    n = math.ceil(t1 - t0) + 2
    fine = _smooth_noise_1d(rng, n, cfg.polish_width)
    strength = np.exp(0.3 * _smooth_noise_1d(rng, n, 20.0 * max(cfg.polish_width, 1.0)) - 0.045)  # mean 1
    profile = (fine * strength).astype(np.float32)
    envelope = 0.6 + 0.4 * np.tanh(_noise_field(seed, _S_POLISH, height, width, 300.0).astype(np.float32))
    return _Polish(c, s, t0, profile, envelope.astype(np.float32))


def _row_effects(height: int, cfg: ImagingConfig, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row horizontal jitter shift (px), gain and additive offset: (H,) float32 each."""
    rng = _rng(seed, _S_ROWS)
    shift = np.zeros(height, np.float32)
    if cfg.jitter > 0:
        ar = lfilter([0.6], [1.0, -0.8], rng.standard_normal(height))  # AR(1): correlated scan lines
        period = rng.uniform(20, 200)
        mains = np.sin(2 * np.pi * np.arange(height) / period + rng.uniform(0, 2 * np.pi))
        shift = (cfg.jitter * (0.8 * ar + 0.6 * mains)).astype(np.float32)
    gain = np.ones(height, np.float32)
    if cfg.row_noise > 0:
        gain = (1.0 + cfg.row_noise * rng.standard_normal(height)).astype(np.float32)
    offset = np.zeros(height, np.float32)
    if cfg.row_offset > 0:  # correlated row offsets plus a few bright or dark streak rows
        base = lfilter([0.87], [1.0, -0.5], rng.standard_normal(height))
        spikes = (rng.random(height) < 0.003) * rng.normal(0.0, 4.0, height)
        offset = (cfg.row_offset * (base + spikes)).astype(np.float32)
    return shift, gain, offset


@dataclass(frozen=True)
class _Scene:
    """Image-wide data drawn once per image; strips read the rows they need (see render_sem)."""

    vias: np.ndarray
    dust: np.ndarray
    ghost: np.ndarray | None
    add_field: np.ndarray
    mul_field: np.ndarray
    patch: np.ndarray | None
    charge: np.ndarray | None
    residue: np.ndarray | None
    polish: _Polish | None
    scratches: tuple[_Scratch, ...]


# ------------------------------------------------------------------------------------------- rendering


def _halo(cfg: ImagingConfig) -> int:
    """Rows of context a strip needs on each side: the supports (4 sigma) of the erosion, rim, profile
    and grain filters followed by the beam blur. Vias, dust, ghost and fields are drawn from global data."""
    local = max(1 + 4 * cfg.edge_width, 4 * cfg.grain_size)
    if cfg.edge_profile > 0:
        local = max(local, 4 * cfg.profile_width)
    if cfg.bg_grain > 0:
        local = max(local, 4 * cfg.bg_grain_size)
    return math.ceil(local + 4 * cfg.blur_sigma) + 2


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0.3:
        return img
    return cv2.GaussianBlur(img, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


def _unit_grain(seed: int, stream: int, a: int, b: int, width: int, size: float) -> np.ndarray:
    """Correlated standard-normal grain of rows a..b: (b - a, W) float32."""
    g = _block_normal(seed, stream, a, b, width)
    if size > 0.3:
        g = _blur(g, size) * (2.0 * math.sqrt(math.pi) * size)  # unit std again
    return g


def _draw_scratches(sig: np.ndarray, scratches: tuple[_Scratch, ...], a: int) -> None:
    """Add the scratches to `sig`, rows a.. of the image (in place). Each segment (a filled quad with
    round ends) is drawn whole on its own canvas anchored at integer image coordinates, so the pixels do
    not depend on the strip; bright scratches combine by maximum, dark ones by minimum."""
    height, width = sig.shape
    bright = np.zeros_like(sig)
    dark = np.zeros_like(sig)
    for sc in scratches:
        half = sc.width / 2
        pad = math.ceil(half) + 2
        target = bright if sc.level > 0 else dark
        for p, q in itertools.pairwise(sc.points):
            y0, y1 = math.floor(min(p[1], q[1])) - pad, math.ceil(max(p[1], q[1])) + pad + 1
            x0, x1 = math.floor(min(p[0], q[0])) - pad, math.ceil(max(p[0], q[0])) + pad + 1
            if y1 <= a or y0 >= a + height or x1 <= 0 or x0 >= width:
                continue
            local = np.zeros((y1 - y0, x1 - x0), np.float32)
            d = q - p
            n = np.array([-d[1], d[0]]) * (half / max(float(np.hypot(*d)), 1e-9))
            quad = np.rint((np.array([p + n, q + n, q - n, p - n]) - (x0, y0)) * 16).astype(np.int32)
            cv2.fillConvexPoly(local, quad, 1.0, cv2.LINE_8, 4)
            for end in (p, q):
                centre = (round((end[0] - x0) * 16), round((end[1] - y0) * 16))
                cv2.circle(local, centre, max(round(half * 16), 8), 1.0, -1, cv2.LINE_8, 4)
            ly0, ly1 = max(a - y0, 0), min(a + height - y0, y1 - y0)
            lx0, lx1 = max(-x0, 0), min(width - x0, x1 - x0)
            window = target[y0 + ly0 - a : y0 + ly1 - a, x0 + lx0 : x0 + lx1]
            piece = local[ly0:ly1, lx0:lx1] * np.float32(sc.level)
            if sc.level > 0:
                np.maximum(window, piece, out=window)
            else:
                np.minimum(window, piece, out=window)
    sig += bright
    sig += dark


def _signal_window(
    codes: np.ndarray, cfg: ImagingConfig, seed: int, a: int, b: int, scene: _Scene
) -> np.ndarray:
    """Noise-free SE yield of rows a..b before the beam blur: (b - a, W) float32."""
    height, width = codes.shape
    code = codes[a:b]
    metal = code > 0
    levels = _code_levels(cfg)
    c = np.arange(256)
    kind = c // (levels + 1)
    q = (c % (levels + 1)).astype(np.float32)
    normal = (q - (levels // 2 + 1)) * (_Q_RANGE / (levels // 2))
    contrast = cfg.metal_level - cfg.dielectric_level
    lut = contrast * np.exp(cfg.voltage_contrast * normal)
    lut[kind == 1] *= cfg.delayer_level
    lut[q == 0] = 0.0
    excess = lut.astype(np.float32)[code]  # metal signal above the dielectric
    if scene.patch is not None:
        patchy = kind[code] == 2
        if patchy.any():
            keep = _region(_rows_of(scene.patch, height, width, a, b), -0.3, 0.5)
            mix = cfg.delayer_level + (1 - cfg.delayer_level) * keep
            excess[patchy] *= mix[patchy]
    if cfg.edge_profile > 0:  # dome: full level from profile_width inside the edge, lower at the edge
        depth = np.clip(2 * _blur(metal.astype(np.float32), cfg.profile_width) - 1, 0.0, 1.0)
        excess *= 1 - np.float32(cfg.edge_profile) * (1 - depth)
    sig = cfg.dielectric_level + excess
    if cfg.grain > 0:
        g = _unit_grain(seed, _S_GRAIN, a, b, width, cfg.grain_size)
        g *= np.float32(cfg.grain * cfg.metal_level)
        g *= metal
        sig += g
    if cfg.bg_grain > 0:
        g = _unit_grain(seed, _S_BGGRAIN, a, b, width, cfg.bg_grain_size)
        g *= np.float32(cfg.bg_grain)
        g[metal] = 0.0
        sig += g
    if cfg.edge_gain != 0:
        m8 = metal.view(np.uint8)
        inner = cv2.subtract(m8, cv2.erode(m8, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE))
        s = cfg.edge_width
        rim = _blur(inner.astype(np.float32), s)
        if s > 0.3:
            rim *= np.float32(math.sqrt(2 * math.pi) * s)  # a straight edge peaks at 1
        np.minimum(rim, np.float32(1.25), out=rim)
        rim[~metal] *= np.float32(_OUTER_RIM)
        rim *= np.float32(cfg.edge_gain)
        sig += rim
    vias = scene.vias
    if len(vias) and cfg.via_contrast != 0:
        plug = np.zeros_like(sig)
        reach = float(vias[:, 2].max()) + 4 * cfg.via_halo + 2
        lo, hi = np.searchsorted(vias[:, 1], [a - reach, b + reach])
        for cx, cy, r in vias[lo:hi]:
            cv2.circle(
                plug, (round(cx * 16), round((cy - a) * 16)), max(round(r * 16), 8), 1.0, -1, cv2.LINE_8, 4
            )
        glow = _blur(plug, cfg.via_halo)
        sig += cfg.via_contrast * np.maximum(plug, glow)
    charge = None if scene.charge is None else _region(_rows_of(scene.charge, height, width, a, b), 0.3, 1.3)
    if scene.ghost is not None:
        lower = _rows_of(scene.ghost, height, width, a, b)
        lower *= np.float32(cfg.ghost_contrast / 255.0)
        if charge is not None and cfg.ghost_charge_gain > 0:
            lower *= 1 + np.float32(cfg.ghost_charge_gain) * charge
        lower[metal] = 0.0
        sig += lower
    if cfg.charging != 0 or cfg.shading != 0:
        sig += _rows_of(scene.add_field, height, width, a, b)
    if charge is not None:
        sig += np.float32(cfg.charge_regions) * charge
    if scene.polish is not None:
        pol = scene.polish
        t = (np.arange(width, dtype=np.float32)[None, :] * np.float32(pol.cos)) + (
            np.arange(a, b, dtype=np.float32)[:, None] * np.float32(pol.sin) - np.float32(pol.t0)
        )
        i = np.floor(t).astype(np.intp)
        f = t - i
        streak = pol.profile[i] * (1 - f) + pol.profile[i + 1] * f
        streak *= _rows_of(pol.envelope, height, width, a, b)
        sig += np.float32(cfg.polish) * streak
    if scene.residue is not None:
        film = _region(_rows_of(scene.residue, height, width, a, b), -0.2, 1.2)
        sig *= 1 - np.float32(cfg.residue) * film
    if scene.scratches:
        _draw_scratches(sig, scene.scratches, a)
    dust = scene.dust
    if len(dust):
        alpha = np.zeros_like(sig)
        level = np.zeros_like(sig)
        reach = float(dust[:, 2].max()) + 2
        lo, hi = np.searchsorted(dust[:, 0], [a - reach, b + reach])
        for cy, cx, ra, rb, ang, lev in dust[lo:hi]:
            at = (round(cx * 16), round((cy - a) * 16))
            axes = (max(round(ra * 16), 8), max(round(rb * 16), 8))
            cv2.ellipse(alpha, at, axes, float(ang), 0, 360, 1.0, -1, cv2.LINE_8, 4)
            cv2.ellipse(level, at, axes, float(ang), 0, 360, float(lev), -1, cv2.LINE_8, 4)
            rim_axes = (max(round(ra * 13), 4), max(round(rb * 13), 4))
            cv2.ellipse(level, at, rim_axes, float(ang), 0, 360, float(lev) * 0.8, -1, cv2.LINE_8, 4)
        sig = sig * (1.0 - alpha) + level
    return sig


def render_sem(
    mask: np.ndarray,
    cfg: ImagingConfig,
    seed: int,
    *,
    vias: np.ndarray | None = None,
    bit_depth: int = 8,
    ghost_layout: LayoutConfig | None = None,
    ghost_vertical: bool | None = None,
    max_strip_pixels: int = DEFAULT_STRIP_PIXELS,
) -> np.ndarray:
    """Render a metal mask as an SEM image.

    mask: (H, W) uint8 {0,1} at image resolution. vias: (M, 3) float64 rows (cx, cy, r) in pixels (pixel
    centres at integers) or None. ghost_layout: geometry of the lower-layer ghost (default LayoutConfig(),
    scaled by the magnification); ghost_vertical: its preferred direction (None: drawn; lower layers
    usually run perpendicular to the imaged one). Returns (H, W) uint8 (bit_depth 8) or uint16 (16).
    Deterministic in `seed` and independent of max_strip_pixels (the work-array size).
    """
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.dtype != np.uint8 or mask.size == 0:
        raise ConfigError(
            f"mask must be a non-empty (H, W) uint8 {{0,1}} array, got {mask.shape} {mask.dtype}"
        )
    if bit_depth not in (8, 16):
        raise ConfigError(f"bit depth must be 8 or 16, got {bit_depth}")
    height, width = mask.shape
    phys = cfg.physical()
    via_arr = np.zeros((0, 3)) if vias is None else np.asarray(vias, np.float64).reshape(-1, 3)
    via_arr = via_arr[np.argsort(via_arr[:, 1])]
    codes, _ = line_codes(mask, phys, seed, max_strip_pixels)
    add_field, mul_field = _fields(mask, phys, seed)
    lower = ghost_layout or LayoutConfig()
    scene = _Scene(
        vias=via_arr,
        dust=_dust(height, width, phys, seed),
        ghost=_ghost(height, width, phys, seed, lower, cfg.magnification, ghost_vertical),
        add_field=add_field,
        mul_field=mul_field,
        patch=None
        if phys.patchy_prob <= 0
        else _noise_field(seed, _S_PATCH, height, width, phys.patch_scale),
        charge=None
        if phys.charge_regions == 0 and phys.ghost_charge_gain == 0
        else _noise_field(seed, _S_CHARGE, height, width, phys.charge_scale),
        residue=None
        if phys.residue <= 0
        else _noise_field(seed, _S_RESIDUE, height, width, phys.residue_scale),
        polish=_polish(height, width, phys, seed),
        scratches=_scratches(height, width, phys, seed),
    )
    shift, row_gain, row_offset = _row_effects(height, phys, seed)
    halo = _halo(phys)
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    top = float(np.iinfo(dtype).max)
    out = np.empty((height, width), dtype)
    xs = np.arange(width, dtype=np.float32)
    lag = math.exp(-1.0 / phys.scan_lag) if phys.scan_lag > 0.05 else 0.0
    for r0, r1 in _strips(height, width, max_strip_pixels):
        a, b = max(r0 - halo, 0), min(r1 + halo, height)
        sig = _signal_window(codes, phys, seed, a, b, scene)
        sig = _blur(sig, phys.blur_sigma)[r0 - a : r1 - a]
        if lag > 0:  # detector lag: an exponential tail along each scan line, starting settled
            sig = lfilter([1 - lag], [1.0, -lag], sig, axis=1, zi=lag * sig[:, :1])[0].astype(np.float32)
        if phys.jitter > 0:
            map_x = xs[None, :] - shift[r0:r1, None]
            map_y = np.broadcast_to(np.arange(r1 - r0, dtype=np.float32)[:, None], map_x.shape)
            sig = cv2.remap(
                sig, map_x, np.ascontiguousarray(map_y), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
            )
        sig *= _rows_of(mul_field, height, width, r0, r1)
        sig *= row_gain[r0:r1, None]
        if phys.row_offset > 0:
            sig += row_offset[r0:r1, None]
        if phys.dose > 0:
            lam = np.maximum(sig, 0.0).astype(np.float64) * phys.dose
            for k0 in range(r0, r1, BLOCK_ROWS):
                k1 = min(k0 + BLOCK_ROWS, r1)
                rng = _rng(seed, _S_SHOT, k0 // BLOCK_ROWS)
                sig[k0 - r0 : k1 - r0] = rng.poisson(lam[k0 - r0 : k1 - r0]) / phys.dose
        if phys.read_noise > 0:
            sig += phys.read_noise * _block_normal(seed, _S_READ, r0, r1, width)
        sig = np.clip(phys.offset + phys.gain * sig, 0.0, 1.0)
        out[r0:r1] = np.rint(sig * top).astype(dtype)
    return out
