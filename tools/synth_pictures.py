#!/usr/bin/env python
"""Pictures of the synthetic SEM generator for docs/synth.md (and, optionally, a real-crop comparison).

Writes into OUT: effects.png (one tile per named effect, each alone on the same plain base image: the
window where it shows most),
random.png (images of the randomized mode) and real_like.png (real-like renderings of the HY5SYN layouts
at 1/2.4, or of procedural layouts when ../shared is absent). With --real CROP --compare PNG it also
writes the real crop beside a real-like rendering of the same size (for a report; the real crop must not
be committed). Deterministic. Usage:

    python tools/synth_pictures.py --out docs/img/synth
    python tools/synth_pictures.py --out /tmp/pics --real ../shared/data/real-sem/hy5syn_crop.png \\
        --compare /work/notes/real_vs_synth.png
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from samsem.synth.effects import EffectSelection, effect_names
from samsem.synth.generate import generate_sample
from samsem.synth.presets import get_preset

REPO = Path(__file__).resolve().parents[1]
LAYOUTS = REPO.parent / "shared" / "data" / "hy5syn-layouts"
TILE = 192


def _save(path: Path, image: np.ndarray) -> None:
    """Write a (H, W) uint8 picture as a maximally compressed PNG (docs pictures stay small)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image, [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise SystemExit(f"cannot write {path}")


def _label(img: np.ndarray, text: str) -> np.ndarray:
    """The tile with `text` on a dark band at its top: (H, W) uint8."""
    out = img.copy()
    out[:18] = (out[:18] * 0.35).astype(np.uint8)
    cv2.putText(out, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, 255, 1, cv2.LINE_AA)
    return out


def _sheet(tiles: list[np.ndarray], cols: int) -> np.ndarray:
    """Tiles (equal shapes) in rows of `cols`, 2-px grey gaps: (H, W) uint8."""
    h, w = tiles[0].shape
    rows = -(-len(tiles) // cols)
    sheet = np.full((rows * (h + 2) - 2, cols * (w + 2) - 2), 128, np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, cols)
        sheet[r * (h + 2) : r * (h + 2) + h, c * (w + 2) : c * (w + 2) + w] = tile
    return sheet


def _most_changed(plain: np.ndarray, image: np.ndarray) -> tuple[int, int]:
    """Top-left corner of the TILE x TILE window where `image` differs most from `plain` (compared
    after a blur, so that differences of the shot-noise draw do not count)."""
    smooth = [cv2.GaussianBlur(im.astype(np.float32), (0, 0), 3.0) for im in (image, plain)]
    diff = cv2.absdiff(*smooth)
    box = cv2.boxFilter(diff, -1, (TILE, TILE), anchor=(0, 0), normalize=True, borderType=cv2.BORDER_CONSTANT)
    box = box[: diff.shape[0] - TILE + 1, : diff.shape[1] - TILE + 1]
    y, x = np.unravel_index(int(np.argmax(box)), box.shape)
    return int(y), int(x)


def effects_sheet(seed: int = 4, size: int = 1024) -> np.ndarray:
    """The ground truth, a plain image of the randomized preset and the same image with each named effect
    alone: per effect the TILE-px window where it changes the image most."""
    base = get_preset("random")
    fixed = replace(
        base,
        imaging=replace(base.imaging, magnification=1.2, metal_level=0.55, dielectric_level=0.2),
        imaging_high=replace(base.imaging_high, magnification=1.2, metal_level=0.55, dielectric_level=0.2),
        layout_variants=(base.layout_variants[0],),
    )
    names = effect_names()
    plain = generate_sample(fixed, size, size, seed, effects=EffectSelection(exclude=names))
    c = (size - TILE) // 2
    tiles = [
        _label(plain.mask[c : c + TILE, c : c + TILE] * np.uint8(255), "ground truth"),
        _label(plain.image[c : c + TILE, c : c + TILE], "plain"),
    ]
    for name in names:
        others = tuple(n for n in names if n != name)
        s = generate_sample(fixed, size, size, seed, effects=EffectSelection(force=(name,), exclude=others))
        assert np.array_equal(s.mask, plain.mask)  # no effect changes the ground truth
        y, x = _most_changed(plain.image, s.image)
        tiles.append(_label(s.image[y : y + TILE, x : x + TILE], name))
    return _sheet(tiles, 5)


def random_sheet(count: int = 8, seed0: int = 216, size: int = 256) -> np.ndarray:
    """Images of the randomized mode (each with its own effects), labelled with their magnification."""
    tiles = []
    for k in range(count):
        s = generate_sample("random", size, size, seed0 + k)
        tiles.append(
            _label(s.image, f"seed {seed0 + k}, magnification {s.meta['imaging']['magnification']:.1f}")
        )
    return _sheet(tiles, 4)


def real_like(height: int, width: int, seed: int, layout: Path | None) -> np.ndarray:
    """One real-like rendering: of an SVG layout at 1/2.4 when given, else of a procedural layout."""
    if layout is None:
        return generate_sample("real-like", height, width, seed).image
    from samsem.svg import read_layout

    return generate_sample(
        "real-like", height, width, seed, source=read_layout(layout), source_name=layout.name
    ).image


def main() -> None:
    """Write the pictures named in the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path, help="output folder")
    ap.add_argument("--real", type=Path, help="a real SEM crop to compare with (never committed)")
    ap.add_argument("--compare", type=Path, help="where to write the real crop beside a rendering")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    _save(args.out / "effects.png", effects_sheet())
    _save(args.out / "random.png", random_sheet())
    layouts = sorted(LAYOUTS.glob("*.svg")) if LAYOUTS.is_dir() else []
    if not layouts:
        print(f"{LAYOUTS} is absent: real-like pictures from procedural layouts")
    tiles = [real_like(288, 288, 7 + k, layouts[k % len(layouts)] if layouts else None) for k in range(3)]
    _save(args.out / "real_like.png", _sheet(tiles, 3))
    if args.real and args.compare:
        real = cv2.imread(str(args.real), cv2.IMREAD_GRAYSCALE)
        if real is None:
            raise SystemExit(f"cannot read {args.real}")
        h, w = real.shape
        svg = layouts[-1] if layouts else None  # label0004, held out from training
        tiles = [
            _label(real, "real SEM crop"),
            _label(real_like(h, w, 20, svg), "samsem real-like, " + (svg.stem if svg else "procedural")),
            _label(real_like(h, w, 21, svg), "samsem real-like, " + (svg.stem if svg else "procedural")),
            _label(real_like(h, w, 22, None), "samsem real-like, procedural"),
        ]
        side = _sheet(tiles, 4)
        args.compare.parent.mkdir(parents=True, exist_ok=True)
        _save(args.compare, side)
        print(f"wrote {args.compare}")
    print(f"wrote {args.out}/effects.png, random.png, real_like.png")


if __name__ == "__main__":
    main()
