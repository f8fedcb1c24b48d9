"""Named synthesis presets (layout geometry + ranges of imaging effects), from easy to extreme.

A preset is a SynthConfig: one LayoutConfig and two ImagingConfigs bounding the per-image parameter draw
(each field uniform between them; dose and magnification log-uniform). Presets are held in a registry
that refuses duplicate names; unknown names raise ConfigError listing the valid ones.

`random` is the randomized mode: its ranges are the mild base appearance, every named effect
(samsem.synth.effects) is switched on per image with its own probability, the layout geometry is drawn
from four variants and magnification spans 0.45-6.5 (line widths about 2-60 px). `real-like` imitates
the real HY5SYN SEM crop (grey-on-grey, saturated via pairs, soft edges, smooth shading); its lengths are
in pixels of the full-resolution HY5SYN layouts, rendered at about 1/2.4 like that crop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import numpy as np

from samsem.errors import ConfigError
from samsem.synth.imaging import ImagingConfig
from samsem.synth.layout import LayoutConfig

_LOG_UNIFORM = ("dose", "magnification")


@dataclass(frozen=True)
class SynthConfig:
    """A synthesis recipe: layout geometry and the range [imaging, imaging_high] of imaging parameters
    (imaging_high None = fixed parameters).

    randomized: switch every named effect on per image with its probability (samsem.synth.effects).
    layout_variants: when given, each image draws its layout geometry (and that of the layer below)
    from these instead of `layout`. svg_scale: an SVG layout is scaled by magnification x svg_scale (its
    pixels are svg_scale layout units), so that imaging lengths mean the same for both sources.
    """

    name: str
    layout: LayoutConfig
    imaging: ImagingConfig
    imaging_high: ImagingConfig | None = None
    description: str = ""
    randomized: bool = False
    layout_variants: tuple[LayoutConfig, ...] = ()
    svg_scale: float = 1.0

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"preset name {self.name!r} must be non-empty letters, digits, '-' or '_'")
        if not self.svg_scale > 0:
            raise ConfigError(f"preset svg_scale={self.svg_scale} must be positive")

    def sample_imaging(self, rng: np.random.Generator) -> ImagingConfig:
        """Draw one image's imaging parameters from the preset's ranges."""
        if self.imaging_high is None:
            return self.imaging
        values = {}
        for f in fields(ImagingConfig):
            lo, hi = sorted((getattr(self.imaging, f.name), getattr(self.imaging_high, f.name)))
            u = rng.random()
            if lo == hi:
                values[f.name] = lo
            elif f.name in _LOG_UNIFORM and lo > 0:
                values[f.name] = float(math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))))
            else:
                values[f.name] = float(lo + u * (hi - lo))
        return ImagingConfig(**values)

    def to_dict(self) -> dict:
        """JSON-ready description of the whole recipe."""
        return {
            "name": self.name,
            "layout": self.layout.to_dict(),
            "imaging": self.imaging.to_dict(),
            "imaging_high": None if self.imaging_high is None else self.imaging_high.to_dict(),
            "randomized": self.randomized,
            "layout_variants": [v.to_dict() for v in self.layout_variants],
            "svg_scale": self.svg_scale,
        }


_REGISTRY: dict[str, SynthConfig] = {}


def register_preset(cfg: SynthConfig) -> SynthConfig:
    """Add a preset; a name that is already registered raises ConfigError."""
    if cfg.name in _REGISTRY:
        raise ConfigError(f"preset {cfg.name!r} is already registered")
    _REGISTRY[cfg.name] = cfg
    return cfg


def preset_names() -> tuple[str, ...]:
    """Registered preset names in registration order (easy to extreme first)."""
    return tuple(_REGISTRY)


def get_preset(name: str | SynthConfig) -> SynthConfig:
    """The preset called `name` (a SynthConfig is returned as is); unknown names raise ConfigError."""
    if isinstance(name, SynthConfig):
        return name
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; valid presets: {', '.join(_REGISTRY)}") from None


def _range(**pairs: tuple[float, float]) -> tuple[ImagingConfig, ImagingConfig]:
    """Two ImagingConfigs from field=(lo, hi) pairs (other fields keep their defaults)."""
    return (
        ImagingConfig(**{k: v[0] for k, v in pairs.items()}),
        ImagingConfig(**{k: v[1] for k, v in pairs.items()}),
    )


register_preset(
    SynthConfig(
        "easy",
        LayoutConfig(pitch=(14, 22), width=(5, 10), min_space=5, near_miss_prob=0.02, stub_prob=0.2),
        *_range(
            magnification=(1.1, 1.5),
            dielectric_level=(0.15, 0.2),
            metal_level=(0.55, 0.65),
            edge_gain=(0.2, 0.3),
            edge_width=(1.0, 1.3),
            voltage_contrast=(0.02, 0.05),
            grain=(0.01, 0.03),
            blur_sigma=(0.6, 0.9),
            jitter=(0.0, 0.1),
            drift=(0.0, 0.03),
            dose=(150.0, 400.0),
            offset=(0.0, 0.03),
            gain=(0.9, 1.1),
        ),
        description="clean, high dose, large features, mild blur",
    )
)
register_preset(
    SynthConfig(
        "medium",
        LayoutConfig(near_miss_prob=0.05),
        *_range(
            magnification=(0.9, 1.3),
            dielectric_level=(0.15, 0.24),
            metal_level=(0.5, 0.62),
            edge_gain=(0.25, 0.45),
            edge_width=(1.0, 1.6),
            voltage_contrast=(0.05, 0.12),
            delayer_prob=(0.0, 0.03),
            grain=(0.02, 0.05),
            ghost_contrast=(0.01, 0.04),
            charging=(0.0, 0.05),
            dust_density=(0.0, 2.0),
            blur_sigma=(0.9, 1.4),
            jitter=(0.1, 0.4),
            drift=(0.02, 0.08),
            row_noise=(0.003, 0.012),
            dose=(40.0, 120.0),
            offset=(-0.02, 0.04),
            gain=(0.85, 1.15),
        ),
        description="moderate noise and blur, faint ghosts, some dust",
    )
)
register_preset(
    SynthConfig(
        "hard",
        LayoutConfig(near_miss_prob=0.1, via_prob=0.35),
        *_range(
            magnification=(0.7, 1.1),
            dielectric_level=(0.18, 0.28),
            metal_level=(0.45, 0.58),
            edge_gain=(0.25, 0.5),
            edge_width=(1.2, 2.0),
            voltage_contrast=(0.08, 0.2),
            delayer_prob=(0.03, 0.1),
            grain=(0.03, 0.07),
            ghost_contrast=(0.03, 0.07),
            charging=(0.03, 0.1),
            dust_density=(1.0, 5.0),
            blur_sigma=(1.4, 2.2),
            jitter=(0.3, 0.8),
            drift=(0.05, 0.15),
            row_noise=(0.01, 0.03),
            dose=(12.0, 40.0),
            offset=(-0.03, 0.04),
            gain=(0.8, 1.1),
        ),
        description="low dose, strong blur, ghosts, jitter, partly delayered lines, near-miss spacings",
    )
)
register_preset(
    SynthConfig(
        "extreme",
        LayoutConfig(near_miss_prob=0.15, via_prob=0.4),
        *_range(
            magnification=(0.5, 0.8),
            dielectric_level=(0.2, 0.3),
            metal_level=(0.42, 0.52),
            edge_gain=(0.25, 0.5),
            edge_width=(1.5, 2.5),
            voltage_contrast=(0.15, 0.3),
            delayer_prob=(0.08, 0.2),
            grain=(0.05, 0.1),
            ghost_contrast=(0.05, 0.12),
            charging=(0.05, 0.15),
            dust_density=(3.0, 10.0),
            blur_sigma=(2.2, 3.2),
            jitter=(0.6, 1.5),
            drift=(0.1, 0.25),
            row_noise=(0.02, 0.05),
            dose=(5.0, 15.0),
            offset=(-0.02, 0.04),
            gain=(0.7, 1.0),
        ),
        description="very low dose, heavy blur and jitter, strong charging; small features",
    )
)
register_preset(
    SynthConfig(
        "dense",
        LayoutConfig(
            pitch=(8, 13),
            width=(3, 7),
            min_space=3,
            density=0.85,
            segment_length=(16, 240),
            route_prob=0.2,
            pad_prob=0.05,
            near_miss_prob=0.1,
        ),
        *_range(
            magnification=(0.9, 1.2),
            dielectric_level=(0.15, 0.24),
            metal_level=(0.5, 0.62),
            edge_gain=(0.25, 0.45),
            edge_width=(0.8, 1.3),
            voltage_contrast=(0.05, 0.12),
            grain=(0.02, 0.05),
            ghost_contrast=(0.0, 0.03),
            blur_sigma=(0.8, 1.3),
            jitter=(0.1, 0.3),
            drift=(0.02, 0.06),
            row_noise=(0.003, 0.01),
            dose=(40.0, 120.0),
            offset=(-0.02, 0.04),
            gain=(0.85, 1.15),
        ),
        description="tight pitch (8-13 px) standard-cell rows at medium imaging quality",
    )
)

_SPARSE = LayoutConfig(
    pitch=(16, 28),
    width=(5, 9),
    min_space=6,
    density=0.45,
    segment_length=(30, 600),
    stub_prob=0.35,
    route_prob=0.45,
    pad_prob=0.02,
    rail_prob=0.15,
    near_miss_prob=0.03,
    via_prob=0.6,
    via_size=(5, 9),
    via_pair_prob=0.7,
)
register_preset(
    SynthConfig(
        "random",
        LayoutConfig(),
        *_range(
            magnification=(0.45, 6.5),
            dielectric_level=(0.08, 0.28),
            metal_level=(0.45, 0.75),
            edge_gain=(0.0, 0.04),
            edge_width=(0.8, 2.0),
            voltage_contrast=(0.0, 0.05),
            grain=(0.0, 0.03),
            grain_size=(1.0, 2.0),
            via_contrast=(0.0, 0.15),
            via_halo=(1.0, 3.0),
            blur_sigma=(0.5, 1.5),
            jitter=(0.0, 0.1),
            drift=(0.0, 0.02),
            drift_scale=(200.0, 600.0),
            row_noise=(0.0, 0.003),
            dose=(30.0, 400.0),
            read_noise=(0.002, 0.01),
            offset=(-0.02, 0.03),
            gain=(0.9, 1.1),
        ),
        description="randomized: every named effect on with its own probability per image, 4 layout "
        "styles, line widths ~2-60 px",
        randomized=True,
        layout_variants=(
            LayoutConfig(),
            LayoutConfig(pitch=(14, 22), width=(5, 10), min_space=5, stub_prob=0.2),
            get_preset("dense").layout,
            _SPARSE,
        ),
        svg_scale=0.3,
    )
)
_RANDOM = get_preset("random")
register_preset(
    replace(
        _RANDOM,
        name="random-sparse",
        description="the random preset on nearly empty fields (a few lines, no pads): hard negatives, "
        "so that a model learns what empty noisy, grainy, charged or dusty dielectric looks like",
        layout=replace(_RANDOM.layout, density=0.06, pad_prob=0.0, rail_prob=0.05),
        layout_variants=tuple(
            replace(v, density=0.06, pad_prob=0.0, rail_prob=0.05, route_prob=0.2)
            for v in _RANDOM.layout_variants
        ),
    )
)
register_preset(
    SynthConfig(
        "real-like",
        LayoutConfig(
            pitch=(44, 64),
            width=(24, 32),
            min_space=16,
            density=0.7,
            segment_length=(60, 1200),
            stub_prob=0.4,
            route_prob=0.5,
            pad_prob=0.0,
            rail_prob=0.1,
            rail_width=(30, 50),
            near_miss_prob=0.02,
            via_prob=0.6,
            via_size=(16, 22),
            via_pair_prob=0.75,
            vertical_prob=0.1,
        ),
        *_range(
            magnification=(0.38, 0.46),
            dielectric_level=(0.16, 0.19),
            metal_level=(0.34, 0.4),
            edge_gain=(0.0, 0.02),
            edge_width=(2.0, 3.0),
            edge_profile=(0.0, 0.15),
            profile_width=(5.0, 8.0),
            voltage_contrast=(0.03, 0.08),
            grain=(0.01, 0.03),
            grain_size=(2.0, 3.0),
            bg_grain=(0.002, 0.006),
            bg_grain_size=(3.0, 5.0),
            via_contrast=(0.6, 0.85),
            via_halo=(3.0, 6.0),
            blur_sigma=(3.2, 4.2),
            shading=(0.02, 0.05),
            shading_gain=(0.03, 0.08),
            drift=(0.0, 0.02),
            drift_scale=(300.0, 800.0),
            dose=(1500.0, 5000.0),
            read_noise=(0.002, 0.004),
        ),
        description="like the real HY5SYN crop at 1/2.4: grey on grey, saturated via pairs, soft edges, "
        "shading (full-resolution HY5SYN units; use with --layouts or procedural)",
    )
)
