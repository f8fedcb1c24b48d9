"""Named appearance effects: switchable regions of the imaging parameter space.

An Effect owns a few ImagingConfig fields. `apply` switches it on by drawing those fields from the
effect's range (strengths relative to the metal/dielectric contrast where that is what matters), `remove`
switches it off by clamping them into the mild range, and `active` tells whether a config shows it. The
randomized mode (a preset with randomized=True, e.g. `random`) turns each effect on with its probability
`prob` per image; any preset accepts forced (`--effects`) and excluded (`--exclude-effects`) effects.
Effects are applied in registry order (contrast first, so that later effects can scale with it). Each
effect draws from its own random stream (keyed by its name), so leaving one effect out does not change
the draws of the others. None of the effects changes the ground truth (see samsem.synth.imaging).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from samsem.errors import ConfigError
from samsem.synth.imaging import ImagingConfig

Values = dict[str, float]
_K_EFFECTS = 16  # SeedSequence spawn key of the effect streams: (16, crc32(name))
_MILD_RATIO = 1.8  # contrast ratios below this are low contrast
_MILD_DOSE = 30.0  # doses (electrons per pixel at full scale) below this are noisy


@dataclass(frozen=True)
class Effect:
    """One named effect: apply(values, rng) switches it on, remove(values) off (both edit a dict of
    ImagingConfig fields in place), active(cfg) tells whether a config shows it; prob: its probability in
    the randomized mode."""

    name: str
    description: str
    prob: float
    apply: Callable[[Values, np.random.Generator], None]
    remove: Callable[[Values], None]
    active: Callable[[ImagingConfig], bool]


_REGISTRY: dict[str, Effect] = {}


def register_effect(effect: Effect) -> Effect:
    """Add an effect (applied after those registered before it); a duplicate name raises ConfigError."""
    if effect.name in _REGISTRY:
        raise ConfigError(f"effect {effect.name!r} is already registered")
    if not 0.0 <= effect.prob <= 1.0:
        raise ConfigError(f"effect {effect.name!r} probability {effect.prob} must lie in [0, 1]")
    _REGISTRY[effect.name] = effect
    return effect


def effect_names() -> tuple[str, ...]:
    """Registered effect names in application order."""
    return tuple(_REGISTRY)


def get_effect(name: str) -> Effect:
    """The effect called `name`; unknown names raise ConfigError listing the valid ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown effect {name!r}; valid effects: {', '.join(_REGISTRY)}") from None


def parse_effects(text: str | Iterable[str] | None) -> tuple[str, ...]:
    """Effect names from 'a,b' (or an iterable of names), checked, deduplicated, in registry order."""
    if text is None:
        return ()
    items = text.split(",") if isinstance(text, str) else list(text)
    names = {item.strip() for item in items if item.strip()}
    unknown = sorted(names - set(_REGISTRY))
    if unknown:
        raise ConfigError(f"unknown effect(s) {', '.join(unknown)}; valid effects: {', '.join(_REGISTRY)}")
    return tuple(n for n in _REGISTRY if n in names)


@dataclass(frozen=True)
class EffectSelection:
    """Effects forced on and excluded (switched off) for every image, on top of the preset's draw."""

    force: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "force", parse_effects(self.force))
        object.__setattr__(self, "exclude", parse_effects(self.exclude))
        both = sorted(set(self.force) & set(self.exclude))
        if both:
            raise ConfigError(f"effect(s) {', '.join(both)} both forced and excluded")

    def __bool__(self) -> bool:
        return bool(self.force or self.exclude)


def effect_rng(seed: int, name: str) -> np.random.Generator:
    """The random stream of effect `name` for an image seed (independent of every other effect)."""
    key = (_K_EFFECTS, zlib.crc32(name.encode()))
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def select_effects(
    imaging: ImagingConfig, seed: int, *, randomized: bool, selection: EffectSelection | None = None
) -> tuple[ImagingConfig, tuple[str, ...]]:
    """Apply the effects to one image's drawn parameters; return the config and its active effects.

    randomized: each effect is on with its probability (drawn from its own stream even when forced or
    excluded, so the other images' choices do not move), else off; without it the preset's draw is kept
    except for the forced (applied) and excluded (removed) effects.
    """
    selection = selection or EffectSelection()
    if not randomized and not selection:
        return imaging, active_effects(imaging)
    values = imaging.to_dict()
    for effect in _REGISTRY.values():
        rng = effect_rng(seed, effect.name)
        drawn = rng.random() < effect.prob
        if effect.name in selection.force or (randomized and drawn and effect.name not in selection.exclude):
            effect.apply(values, rng)
        elif randomized or effect.name in selection.exclude:
            effect.remove(values)
    cfg = ImagingConfig.from_dict(values)
    return cfg, active_effects(cfg)


def active_effects(cfg: ImagingConfig) -> tuple[str, ...]:
    """Names of the effects a config shows, in registry order."""
    return tuple(name for name, effect in _REGISTRY.items() if effect.active(cfg))


# ------------------------------------------------------------------------------------------- helpers


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _log_u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _contrast(v: Values | ImagingConfig) -> float:
    """|metal - dielectric| (at least 0.01, so relative strengths stay defined)."""
    m, d = (
        (v["metal_level"], v["dielectric_level"])
        if isinstance(v, dict)
        else (v.metal_level, v.dielectric_level)
    )
    return max(abs(m - d), 0.01)


def _ratio(cfg: ImagingConfig) -> float:
    lo, hi = sorted((cfg.metal_level, cfg.dielectric_level))
    return math.inf if lo <= 0 else hi / lo


def _set_ratio(v: Values, ratio: float, dark_level: float | None = None) -> None:
    """Set the brighter level to ratio x the darker one (<= 0.95; the darker one to dark_level when
    given), scaling the contrast-relative strengths (edge rim, vias, show-through) with the contrast."""
    old = _contrast(v)
    bright, dark = ("metal_level", "dielectric_level")
    if v["metal_level"] < v["dielectric_level"]:
        bright, dark = dark, bright
    v[dark] = min(max(v[dark] if dark_level is None else dark_level, 0.05), 0.95 / ratio)
    v[bright] = v[dark] * ratio
    scale = _contrast(v) / old
    for name in ("edge_gain", "via_contrast", "ghost_contrast", "polish", "bg_grain"):
        v[name] *= scale


def _clamp(v: Values, name: str, limit: float) -> None:
    v[name] = float(np.clip(v[name], -limit, limit))


# ------------------------------------------------------------------------------------------- effects


def _low_contrast(v: Values, rng: np.random.Generator) -> None:
    _set_ratio(v, _u(rng, 1.3, 1.7), dark_level=_u(rng, 0.15, 0.45))  # grey on grey


def _no_low_contrast(v: Values) -> None:
    cfg = ImagingConfig.from_dict(v)
    if _ratio(cfg) < _MILD_RATIO:
        _set_ratio(v, _MILD_RATIO)


def _inverted(v: Values, rng: np.random.Generator) -> None:
    if v["metal_level"] > v["dielectric_level"]:
        v["metal_level"], v["dielectric_level"] = v["dielectric_level"], v["metal_level"]
    v["edge_gain"] = abs(v["edge_gain"])  # the SE edge effect stays bright


def _not_inverted(v: Values) -> None:
    if v["metal_level"] < v["dielectric_level"]:
        v["metal_level"], v["dielectric_level"] = v["dielectric_level"], v["metal_level"]


def _voltage_contrast(v: Values, rng: np.random.Generator) -> None:
    v["voltage_contrast"] = _u(rng, 0.1, 0.35)


def _edge_rim(v: Values, rng: np.random.Generator) -> None:
    sign = -1.0 if rng.random() < 0.2 else 1.0  # mostly the bright SE edge effect, sometimes a dark rim
    v["edge_gain"] = sign * _u(rng, 0.25, 0.7) * _contrast(v)
    v["edge_width"] = _u(rng, 0.8, 2.5)


def _soft_edges(v: Values, rng: np.random.Generator) -> None:
    v["blur_sigma"] = _u(rng, 1.8, 4.0)
    v["edge_profile"] = _u(rng, 0.2, 0.7) if rng.random() < 0.5 else 0.0
    v["profile_width"] = _u(rng, 1.5, 5.0)


def _no_soft_edges(v: Values) -> None:
    v["blur_sigma"] = min(v["blur_sigma"], 1.5)
    v["edge_profile"] = 0.0


def _bright_vias(v: Values, rng: np.random.Generator) -> None:
    v["via_contrast"] = min(_u(rng, 0.8, 3.0) * _contrast(v), 0.85)
    v["via_halo"] = _u(rng, 1.0, 4.0)


def _show_through(v: Values, rng: np.random.Generator) -> None:
    sign = 1.0 if v["metal_level"] >= v["dielectric_level"] else -1.0  # looks like (faint) metal
    v["ghost_contrast"] = sign * _log_u(rng, 0.08, 0.5) * _contrast(v)
    v["ghost_blur"] = _u(rng, 0.7, 4.0)
    v["ghost_parallel"] = 0.35


def _no_show_through(v: Values) -> None:
    v["ghost_contrast"] = 0.0
    v["ghost_parallel"] = 0.0


def _charging(v: Values, rng: np.random.Generator) -> None:
    v["charge_regions"] = _u(rng, 0.2, 1.0) * _contrast(v)
    v["charge_scale"] = _log_u(rng, 60.0, 400.0)
    v["charging"] = _u(rng, 0.0, 0.1)
    # under charging the layer below (if shown) peaks at 0.5-0.95x the metal contrast: nearly metal-bright
    peak = _u(rng, 0.5, 0.95) * _contrast(v)
    ghost = abs(v["ghost_contrast"])
    v["ghost_charge_gain"] = max(peak / ghost - 1.0, 0.0) if ghost > 0 else 0.0


def _no_charging(v: Values) -> None:
    v["charge_regions"] = v["charging"] = v["ghost_charge_gain"] = 0.0


def _shading(v: Values, rng: np.random.Generator) -> None:
    v["shading"] = _u(rng, 0.15, 0.5) * min(v["metal_level"], v["dielectric_level"])  # stays positive
    v["shading_gain"] = _u(rng, 0.05, 0.3)


def _no_shading(v: Values) -> None:
    v["shading"] = v["shading_gain"] = 0.0
    v["drift"] = min(v["drift"], 0.03)


def _grain(v: Values, rng: np.random.Generator) -> None:
    v["grain"] = _u(rng, 0.04, 0.08)
    v["grain_size"] = _u(rng, 0.7, 2.0)
    v["bg_grain"] = 0.003 + _u(rng, 0.03, 0.15) * _contrast(v)
    v["bg_grain_size"] = _u(rng, 0.7, 2.0)


def _no_grain(v: Values) -> None:
    v["grain"] = min(v["grain"], 0.03)
    v["bg_grain"] = 0.0


def _polish(v: Values, rng: np.random.Generator) -> None:
    v["polish"] = _u(rng, 0.04, 0.15) * _contrast(v)
    v["polish_width"] = _u(rng, 0.6, 2.0)


def _dust(v: Values, rng: np.random.Generator) -> None:
    v["dust_density"] = _log_u(rng, 2.0, 40.0)
    v["dust_size"] = _u(rng, 2.0, 12.0)
    v["dust_dark"] = _u(rng, 0.0, 0.6)


def _scratches(v: Values, rng: np.random.Generator) -> None:
    v["scratches"] = _log_u(rng, 1.0, 10.0)
    v["scratch_width"] = _u(rng, 0.7, 3.0)


def _residue(v: Values, rng: np.random.Generator) -> None:
    v["residue"] = _u(rng, 0.1, 0.4)
    v["residue_scale"] = _log_u(rng, 20.0, 120.0)


def _delayered(v: Values, rng: np.random.Generator) -> None:
    v["delayer_prob"] = _u(rng, 0.05, 0.4)
    v["patchy_prob"] = _u(rng, 0.1, 0.5)
    v["delayer_level"] = _u(rng, 0.0, 0.4)
    v["patch_scale"] = _u(rng, 3.0, 15.0)


def _no_delayered(v: Values) -> None:
    v["delayer_prob"] = v["patchy_prob"] = 0.0


def _scan(v: Values, rng: np.random.Generator) -> None:
    v["jitter"] = _u(rng, 0.3, 1.0)
    v["row_noise"] = _u(rng, 0.005, 0.04)
    v["row_offset"] = _u(rng, 0.005, 0.03)
    v["scan_lag"] = _u(rng, 0.3, 1.5) if rng.random() < 0.6 else 0.0


def _no_scan(v: Values) -> None:
    v["jitter"] = min(v["jitter"], 0.15)
    v["row_noise"] = min(v["row_noise"], 0.005)
    v["row_offset"] = v["scan_lag"] = 0.0


def _noise(v: Values, rng: np.random.Generator) -> None:
    # about a per-pixel SNR of 1 between metal and dielectric at least, so that low contrast stays
    # visible, and a higher floor under a strong blur (which lowers the contrast of narrow lines)
    snr_dose = max(v["metal_level"], v["dielectric_level"]) / _contrast(v) ** 2
    floor = min(3.0 * max(1.0, v["blur_sigma"] / 1.5) ** 2, 15.0)
    v["dose"] = max(_log_u(rng, floor, 20.0), min(snr_dose, 25.0))
    v["read_noise"] = _u(rng, 0.005, 0.03) * min(1.0, _contrast(v) / 0.2)


def _no_noise(v: Values) -> None:
    if v["dose"] > 0:
        v["dose"] = max(v["dose"], _MILD_DOSE)
    v["read_noise"] = min(v["read_noise"], 0.01)


def _zero(*names: str) -> Callable[[Values], None]:
    def remove(v: Values) -> None:
        for name in names:
            v[name] = 0.0

    return remove


for _effect in (
    Effect(
        "low-contrast",
        "grey on grey: metal/background ratio 1.3-1.7 (otherwise >= 1.8), darker level 0.15-0.45; rim, "
        "vias and textures scale along",
        0.3,
        _low_contrast,
        _no_low_contrast,
        lambda c: _ratio(c) < _MILD_RATIO,
    ),
    Effect(
        "inverted",
        "metal darker than the background (as in some backscatter images)",
        0.15,
        _inverted,
        _not_inverted,
        lambda c: c.metal_level < c.dielectric_level,
    ),
    Effect(
        "voltage-contrast",
        "per-line brightness spread exp(0.1-0.35 N) (floating vs grounded lines)",
        0.4,
        _voltage_contrast,
        lambda v: v.update(voltage_contrast=min(v["voltage_contrast"], 0.05)),
        lambda c: c.voltage_contrast > 0.05,
    ),
    Effect(
        "edge-rim",
        "SE edge brightening (or, 1 in 5, a dark rim) of 0.25-0.7x the contrast, width 0.8-2.5 px",
        0.5,
        _edge_rim,
        lambda v: _clamp(v, "edge_gain", 0.15 * _contrast(v)),
        lambda c: abs(c.edge_gain) > 0.15 * _contrast(c),
    ),
    Effect(
        "soft-edges",
        "beam blur sigma 1.8-4 px (x magnification), half of the time a dome-shaped line profile",
        0.35,
        _soft_edges,
        _no_soft_edges,
        lambda c: c.blur_sigma >= 1.8 or c.edge_profile > 0,
    ),
    Effect(
        "bright-vias",
        "vias 0.8-3x the line contrast brighter than the line they sit on (often saturating), with a glow",
        0.5,
        _bright_vias,
        lambda v: _clamp(v, "via_contrast", 0.5 * _contrast(v)),
        lambda c: c.via_contrast > 0.5 * _contrast(c),
    ),
    Effect(
        "show-through",
        "the layer below shows through the dielectric (perpendicular, 35 % parallel), 0.08-0.5x the "
        "contrast; not metal",
        0.4,
        _show_through,
        _no_show_through,
        lambda c: c.ghost_contrast != 0,
    ),
    Effect(
        "charging",
        "bright low-frequency charge regions (+0.2-1x the contrast) and glow around large metal; "
        "show-through grows to 0.5-0.95x the metal contrast inside them",
        0.3,
        _charging,
        _no_charging,
        lambda c: c.charge_regions > 0 or c.charging != 0,
    ),
    Effect(
        "shading",
        "smooth shading across the field: additive (+-0.15-0.5x the darker level) and multiplicative "
        "(+-5-30 %), each a mix of ramp, vignette and bump",
        0.5,
        _shading,
        _no_shading,
        lambda c: c.shading != 0 or c.shading_gain != 0 or c.drift > 0.03,
    ),
    Effect(
        "grain",
        "dielectric grain (std 0.03-0.15x the contrast) and stronger metal grain (4-8 %)",
        0.5,
        _grain,
        _no_grain,
        lambda c: c.bg_grain > 0 or c.grain > 0.03,
    ),
    Effect(
        "polish",
        "parallel polishing streaks in one direction, std 0.04-0.15x the contrast",
        0.25,
        _polish,
        _zero("polish"),
        lambda c: c.polish > 0,
    ),
    Effect(
        "dust",
        "bright and dark particles, 2-40 per megapixel; not metal",
        0.3,
        _dust,
        _zero("dust_density"),
        lambda c: c.dust_density > 0,
    ),
    Effect(
        "scratches",
        "long, gently curved bright or dark scratches, 1-10 per megapixel; not metal",
        0.2,
        _scratches,
        _zero("scratches"),
        lambda c: c.scratches > 0,
    ),
    Effect(
        "residue",
        "darker film patches (10-40 %) over metal and dielectric; not metal",
        0.2,
        _residue,
        _zero("residue"),
        lambda c: c.residue > 0,
    ),
    Effect(
        "delayered",
        "partly delayered lines: outline-only or patchy interiors (ground truth: the whole line)",
        0.25,
        _delayered,
        _no_delayered,
        lambda c: c.delayer_prob > 0 or c.patchy_prob > 0,
    ),
    Effect(
        "scan",
        "scan artefacts: line jitter 0.3-1 px, row gain and offset noise, detector lag along the scan",
        0.35,
        _scan,
        _no_scan,
        lambda c: c.jitter > 0.15 or c.row_noise > 0.005 or c.row_offset > 0 or c.scan_lag > 0,
    ),
    Effect(
        "noise",
        f"low dose: 3-20 electrons per pixel at full scale (otherwise >= {_MILD_DOSE:g}; higher floors under "
        "strong blur or very low contrast), more read noise",
        0.35,
        _noise,
        _no_noise,
        lambda c: 0 < c.dose < _MILD_DOSE or c.read_noise > 0.01,
    ),
):
    register_effect(_effect)
