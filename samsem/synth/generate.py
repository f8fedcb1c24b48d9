"""Synthetic samples and data sets: layout (procedural or SVG crop) -> SEM image + exact ground truth.

generate_sample is the Python API used by training, tests and benchmarks; generate_dataset writes
DIR/images/NAME.(png|tif), DIR/masks/NAME.(png|tif) and DIR/manifest.json, one image at a time, resumable.
Every image gets its own seed derived from (base seed, index) with numpy's SeedSequence, so a data set is
reproducible byte for byte and no global random state is used.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from samsem.errors import ConfigError, InputError
from samsem.synth.effects import EffectSelection, select_effects
from samsem.synth.imaging import count_lines, render_sem
from samsem.synth.layout import generate_layout
from samsem.synth.presets import SynthConfig, get_preset

MAX_SIZE = 16384  # largest supported image side (px)
PNG_MAX_SIDE = 8192  # larger images (and their masks) are written as TIFF
MANIFEST = "manifest.json"
MANIFEST_INTERVAL_S = 1.0  # the manifest is rewritten at most this often while generating
# SeedSequence spawn keys of one sample's streams (the effects use (16, crc32(name)), see effects.py)
_K_PARAMS, _K_LAYOUT, _K_CROP, _K_RENDER, _K_VARIANT, _K_GHOST = range(6)


@dataclass(frozen=True)
class SynthSample:
    """image: (H, W) uint8 or uint16; mask: (H, W) uint8 {0,1} exact ground truth; meta: JSON-ready
    parameters (preset, seed, size, bit depth, imaging and layout parameters, line count, source)."""

    image: np.ndarray
    mask: np.ndarray
    meta: dict[str, Any]


def check_size(height: int, width: int) -> None:
    """Raise ConfigError unless 1 <= height, width <= MAX_SIZE."""
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, int | np.integer) or not 1 <= value <= MAX_SIZE:
            raise ConfigError(f"image {name} must be an integer between 1 and {MAX_SIZE} px, got {value!r}")


def _stream(seed: int, key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(key,)))


def _svg_mask(
    source: Any, height: int, width: int, magnification: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, float, tuple[int, int]]:
    """Rasterize a random (height, width) crop of an SVG layout (samsem.svg.Layout) at `magnification`,
    raised where needed so the crop fits. Returns (mask, vias (M, 3) cx cy r, magnification, (y0, x0))."""
    from samsem.svg import Layout, rasterize

    mag = max(magnification, height / source.height, width / source.width)
    full_h = max(round(source.height * mag), height)
    full_w = max(round(source.width * mag), width)
    y0 = int(rng.integers(0, full_h - height + 1))
    x0 = int(rng.integers(0, full_w - width + 1))
    offset = np.array([x0, y0], np.float64)

    def to_crop(xy: np.ndarray) -> np.ndarray:
        # rasterize's scaling, then an integer shift (exact in float): the crop is the same window of the
        # whole layout rasterized at `mag`, up to cv2 clipping polygons cut by the crop border
        return (xy if mag == 1 else (xy + 0.5) * mag - 0.5) - offset

    vias = source.circles.copy()
    vias[:, :2] = to_crop(vias[:, :2])
    vias[:, 2] *= mag
    crop = Layout(
        width=width,
        height=height,
        polygons=tuple(to_crop(p) for p in source.polygons),
        circles=vias,
        regions=tuple(tuple(to_crop(r) for r in rings) for rings in source.regions),
    )
    mask = rasterize(crop, shape=(height, width), scale=1.0)
    inside = (
        (vias[:, 0] + vias[:, 2] >= 0)
        & (vias[:, 0] - vias[:, 2] < width)
        & (vias[:, 1] + vias[:, 2] >= 0)
        & (vias[:, 1] - vias[:, 2] < height)
    )
    return mask, vias[inside], mag, (y0, x0)


def _preferred_vertical(mask: np.ndarray) -> bool:
    """True when the metal of a (H, W) uint8 mask runs mostly vertically (more vertical edge length)."""
    horizontal_edges = np.count_nonzero(mask[1:] != mask[:-1])
    vertical_edges = np.count_nonzero(mask[:, 1:] != mask[:, :-1])
    return bool(vertical_edges > horizontal_edges)


def generate_sample(
    preset: str | SynthConfig,
    height: int,
    width: int,
    seed: int,
    bit_depth: int = 8,
    *,
    source: Any = None,
    source_name: str | None = None,
    effects: EffectSelection | None = None,
) -> SynthSample:
    """Generate one synthetic SEM image with its exact metal mask.

    preset: a registered preset name or a SynthConfig. source: optional samsem.svg.Layout used as the
    mask source instead of a procedural layout: a random crop at the drawn magnification x the preset's
    svg_scale (raised to the smallest that covers height x width); its circles are the vias. source_name
    is recorded in meta. effects: named effects forced on / excluded (samsem.synth.effects); a randomized
    preset draws the others per image. meta["effects"] lists the effects the image shows.
    The result depends only on the arguments (same seed -> same arrays).
    """
    cfg = get_preset(preset)
    selection = effects or EffectSelection()
    check_size(height, width)
    if bit_depth not in (8, 16):
        raise ConfigError(f"bit depth must be 8 or 16, got {bit_depth}")
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    imaging = cfg.sample_imaging(_stream(seed, _K_PARAMS))
    imaging, active = select_effects(imaging, seed, randomized=cfg.randomized, selection=selection)
    geometry = cfg.layout
    if cfg.layout_variants:
        geometry = cfg.layout_variants[int(_stream(seed, _K_VARIANT).integers(len(cfg.layout_variants)))]
    meta: dict[str, Any] = {"preset": cfg.name, "seed": seed, "height": height, "width": width}
    meta["bit_depth"] = bit_depth
    if source is None:
        layout_cfg = geometry.scaled(imaging.magnification)
        lay = generate_layout(height, width, layout_cfg, _stream(seed, _K_LAYOUT))
        mask, vias, n_lines = lay.mask, lay.vias, len(lay.lines)
        kinds = [line.kind for line in lay.lines]
        meta["source"] = {"kind": "procedural", "vertical": lay.vertical}
        meta["layout"] = layout_cfg.to_dict()
        meta["line_kinds"] = {k: kinds.count(k) for k in sorted(set(kinds))}
        meta["near_miss_count"] = len(lay.near_misses)
        vertical: bool | None = lay.vertical
    else:
        mask, vias, mag, (y0, x0) = _svg_mask(
            source, height, width, imaging.magnification * cfg.svg_scale, _stream(seed, _K_CROP)
        )
        imaging = replace(imaging, magnification=mag / cfg.svg_scale)
        n_lines = count_lines(mask)
        meta["source"] = {"kind": "svg", "file": source_name, "crop_yx": [y0, x0], "scale": mag}
        meta["layout"] = None
        # the direction of an SVG crop is only estimated where show-through may run parallel to it
        vertical = _preferred_vertical(mask) if imaging.ghost_parallel > 0 else None
    ghost_vertical = None if vertical is None else not vertical  # the layer below runs perpendicular
    if (
        vertical is not None
        and imaging.ghost_contrast != 0
        and imaging.ghost_parallel > 0
        and _stream(seed, _K_GHOST).random() < imaging.ghost_parallel
    ):
        ghost_vertical = vertical
    render_seed = _derived_seed(seed, _K_RENDER)
    image = render_sem(
        mask,
        imaging,
        render_seed,
        vias=vias,
        bit_depth=bit_depth,
        ghost_layout=geometry,
        ghost_vertical=ghost_vertical,
    )
    meta["imaging"] = imaging.to_dict()
    meta["effects"] = list(active)
    if selection:
        meta["effects_forced"] = list(selection.force)
        meta["effects_excluded"] = list(selection.exclude)
    if ghost_vertical is not None and imaging.ghost_contrast != 0:
        meta["show_through"] = "parallel" if ghost_vertical == vertical else "perpendicular"
    meta["line_count"] = int(n_lines)
    meta["via_count"] = len(vias)
    meta["metal_fraction"] = round(float(np.count_nonzero(mask)) / mask.size, 6)
    return SynthSample(image=image, mask=mask, meta=meta)


def _derived_seed(seed: int, key: int) -> int:
    """A 63-bit integer seed from SeedSequence(seed) spawned with `key`."""
    return int(np.random.SeedSequence(seed, spawn_key=(key,)).generate_state(1, np.uint64)[0] >> 1)


def image_seed(base_seed: int, index: int) -> int:
    """The seed of image `index` of a data set with `base_seed` (SeedSequence spawn key (index,))."""
    return _derived_seed(base_seed, index)


def find_layouts(inputs: Sequence[str | Path]) -> list[Path]:
    """Expand SVG files and directories (their *.svg, sorted) into a list; missing/empty raise InputError."""
    found: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() == ".svg")
            if not files:
                raise InputError(p, "directory contains no SVG layouts", "*.svg files")
            found.extend(files)
        elif p.is_file():
            if p.suffix.lower() != ".svg":
                raise InputError(p, f"not an SVG layout (suffix {p.suffix or '(none)'!r})", ".svg")
            found.append(p)
        else:
            raise InputError(p, "layout file or directory not found")
    return found


def _load_manifest(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"generator": "samsem.synth", "presets": {}, "images": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(
            path, f"cannot read the existing manifest ({exc}); delete it to start over"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), dict):
        raise InputError(path, "existing manifest has no 'images' table; delete it to start over")
    data.setdefault("presets", {})
    return data


@dataclass(frozen=True)
class DatasetSummary:
    """What generate_dataset did: the output directory and the names written and skipped (resumed)."""

    out: Path
    written: tuple[str, ...]
    skipped: tuple[str, ...]


def generate_dataset(
    out: str | Path,
    preset: str | SynthConfig,
    count: int,
    height: int,
    width: int,
    *,
    seed: int = 0,
    bit_depth: int = 8,
    layouts: Sequence[str | Path] = (),
    progress: bool = True,
    effects: EffectSelection | None = None,
) -> DatasetSummary:
    """Write `count` samples to out/images, out/masks and out/manifest.json.

    Image i is named '{preset}_s{seed}_{i:05d}', uses seed image_seed(seed, i) and, with layouts, the SVG
    layouts[i % len(layouts)]. Images whose files exist and whose manifest request matches are skipped
    (resume); forced and excluded effects are part of the request. The manifest is rewritten atomically
    after an image when MANIFEST_INTERVAL_S have passed since the last write, after the last image and on
    interruption; an image written without its entry is simply regenerated (identically) on resume.
    Sides > PNG_MAX_SIDE use .tif instead of .png.
    """
    from tqdm import tqdm

    from samsem.io import write_image, write_mask
    from samsem.svg import read_layout

    cfg = get_preset(preset)
    selection = effects or EffectSelection()
    check_size(height, width)
    if bit_depth not in (8, 16):
        raise ConfigError(f"bit depth must be 8 or 16, got {bit_depth}")
    if not isinstance(count, int | np.integer) or count < 1:
        raise ConfigError(f"count must be a positive integer, got {count!r}")
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    files = find_layouts(layouts) if layouts else []
    parsed = {f: read_layout(f) for f in files}
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(out, "output path exists and is not a directory")
    manifest_path = out / MANIFEST
    manifest = _load_manifest(manifest_path)
    recipe = cfg.to_dict()
    manifest["presets"][cfg.name] = recipe
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    suffix = ".tif" if max(height, width) > PNG_MAX_SIDE else ".png"
    written: list[str] = []
    skipped: list[str] = []
    dirty, last_write = False, time.monotonic()
    try:
        for i in tqdm(range(count), desc=f"synth {cfg.name}", unit="img", disable=None if progress else True):
            name = f"{cfg.name}_s{seed}_{i:05d}"
            layout_file = files[i % len(files)] if files else None
            request = {
                "preset": cfg.name,
                "preset_digest": digest,
                "base_seed": int(seed),
                "index": i,
                "height": height,
                "width": width,
                "bit_depth": bit_depth,
                "layout_file": None if layout_file is None else str(layout_file.resolve()),
            }
            if selection:  # absent otherwise, so that older data sets still resume
                request["effects"] = list(selection.force)
                request["exclude_effects"] = list(selection.exclude)
            image_rel, mask_rel = f"images/{name}{suffix}", f"masks/{name}{suffix}"
            entry = manifest["images"].get(name)
            if (
                entry is not None
                and entry.get("request") == request
                and (out / image_rel).is_file()
                and (out / mask_rel).is_file()
            ):
                skipped.append(name)
                continue
            sample = generate_sample(
                cfg,
                height,
                width,
                image_seed(seed, i),
                bit_depth,
                source=None if layout_file is None else parsed[layout_file],
                source_name=None if layout_file is None else layout_file.name,
                effects=selection,
            )
            write_image(out / image_rel, sample.image)
            write_mask(out / mask_rel, sample.mask)
            manifest["images"][name] = {
                "image": image_rel,
                "mask": mask_rel,
                "request": request,
                **sample.meta,
            }
            written.append(name)
            dirty = True
            if time.monotonic() - last_write >= MANIFEST_INTERVAL_S:
                _write_manifest(manifest_path, manifest)
                dirty, last_write = False, time.monotonic()
    finally:
        if dirty or not manifest_path.exists():
            _write_manifest(manifest_path, manifest)
    return DatasetSummary(out=out, written=tuple(written), skipped=tuple(skipped))


def _write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    from samsem.io import write_json

    manifest["images"] = dict(sorted(manifest["images"].items()))
    write_json(path, manifest)
