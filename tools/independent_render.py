#!/usr/bin/env python
"""Render held-out test images from existing masks with a renderer that is not samsem's.

samsem's own generator (``samsem synth``) made every training image; a model can learn its quirks.
This tool re-images the ground-truth masks of existing test sets with a separate, deliberately simple
physical model written for testing only (nothing in samsem imports it): a Gaussian beam over a
two-level surface with an edge term, then one imaging condition per output set:

  poisson      shot noise at 3-5 electrons per pixel at the metal level, Gaussian read noise
  lowcontrast  metal/background about 1.5:1, a gamma of 0.6-1.6, fine grain on both
  charging     bright smooth charge regions, per-row jitter of the scan position and row gain noise
  textured     clean lines, but half the field emptied (mask and image) and a fine dielectric texture
  inverted     metal darker than the background (use ``samsem segment --metal dark``)

Each output set is OUT/<condition>-<source set name> with images/ and masks/ (the mask as rendered:
for ``textured`` the emptied half is background in both). Deterministic for a seed.

    python tools/independent_render.py SET [SET ...] --out OUT [--conditions poisson,charging] [--seed 7]
"""

from __future__ import annotations

import argparse
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

CONDITIONS = ("poisson", "lowcontrast", "charging", "textured", "inverted")


def _surface(mask: np.ndarray, metal: float, dielectric: float, sigma: float) -> np.ndarray:
    """The beam-blurred two-level surface with a bright edge band: (H, W) float32."""
    m = mask.astype(np.float32)
    edge = cv2.morphologyEx(m, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
    surface = dielectric + (metal - dielectric) * m + 0.25 * (metal - dielectric) * edge
    return cv2.GaussianBlur(surface, (0, 0), sigma)


def _smooth_noise(shape: tuple[int, int], scale: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-std noise with features of about ``scale`` px: (H, W) float32."""
    noise = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), scale)
    return (noise - noise.mean()) / max(float(noise.std()), 1e-6)


def poisson(mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    electrons = rng.uniform(3.0, 5.0)
    signal = _surface(mask, 1.0, rng.uniform(0.2, 0.35), rng.uniform(0.8, 1.5))
    counts = rng.poisson(np.clip(signal, 0, None) * electrons).astype(np.float32)
    counts += rng.normal(0.0, 0.6, mask.shape).astype(np.float32)
    return counts / (electrons * 1.6), mask


def lowcontrast(mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    dielectric = rng.uniform(0.3, 0.4)
    signal = _surface(mask, dielectric * rng.uniform(1.4, 1.6), dielectric, rng.uniform(1.0, 2.0))
    signal = signal + 0.035 * _smooth_noise(mask.shape, 0.7, rng) + 0.01 * rng.standard_normal(mask.shape)
    return np.clip(signal, 0, 1) ** rng.uniform(0.6, 1.6), mask


def charging(mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    h, w = mask.shape
    signal = _surface(mask, 0.65, 0.2, rng.uniform(0.8, 1.5))
    charge = np.clip(_smooth_noise(mask.shape, rng.uniform(40, 90), rng), 0, None)
    signal = signal + rng.uniform(0.15, 0.35) * charge
    shifts = np.cumsum(rng.normal(0.0, 0.35, h))
    shifts = shifts - cv2.GaussianBlur(shifts.reshape(-1, 1), (0, 0), 25).ravel()
    xs = np.arange(w, dtype=np.float32)[None, :] + shifts[:, None].astype(np.float32)
    ys = np.repeat(np.arange(h, dtype=np.float32)[:, None], w, axis=1)
    signal = cv2.remap(signal.astype(np.float32), xs, ys, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    signal = signal * (1 + rng.normal(0, 0.03, (h, 1))) + rng.normal(0, 0.02, (h, 1))
    return signal + rng.normal(0, 0.03, mask.shape), mask


def textured(mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    h, w = mask.shape
    mask = mask.copy()
    if rng.random() < 0.5:
        mask[:, w // 4 : w // 4 + w // 2] = 0
    else:
        mask[h // 4 : h // 4 + h // 2, :] = 0
    signal = _surface(mask, 0.7, 0.2, rng.uniform(0.8, 1.2))
    texture = 0.05 * _smooth_noise(mask.shape, rng.uniform(1.0, 2.5), rng)
    signal = signal + texture * (1 - mask) + 0.01 * rng.standard_normal(mask.shape)
    return signal, mask


def inverted(mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    signal = _surface(mask, rng.uniform(0.15, 0.25), rng.uniform(0.55, 0.7), rng.uniform(0.8, 1.5))
    return signal + rng.normal(0, 0.03, mask.shape), mask


RENDERERS: dict[str, Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]] = {
    "poisson": poisson,
    "lowcontrast": lowcontrast,
    "charging": charging,
    "textured": textured,
    "inverted": inverted,
}


def render(mask: np.ndarray, condition: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Image (H, W) uint8 and its mask (H, W) uint8 {0, 1} of ``mask`` under ``condition``."""
    image, out_mask = RENDERERS[condition](mask.astype(np.uint8), np.random.default_rng(seed))
    return np.clip(np.asarray(image) * 255 + 0.5, 0, 255).astype(np.uint8), out_mask.astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    """Render every mask of the given sets under every condition; return the exit code."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "sets", nargs="+", type=Path, help="test sets with masks/ (e.g. make_heldout_sets.py output)"
    )
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--conditions", default=",".join(CONDITIONS), help=f"subset of {','.join(CONDITIONS)}")
    ap.add_argument("--seed", type=int, default=7, help="base seed (default 7)")
    args = ap.parse_args(argv)
    wanted = [c for c in args.conditions.split(",") if c]
    unknown = sorted(set(wanted) - set(CONDITIONS))
    if unknown:
        print(f"independent_render: error: unknown condition(s) {', '.join(unknown)}", file=sys.stderr)
        return 2
    for folder in args.sets:
        masks = sorted((folder / "masks").glob("*.png"))
        if not masks:
            print(f"independent_render: error: {folder}/masks: no PNG masks", file=sys.stderr)
            return 2
        for condition in wanted:
            out = args.out / f"{condition}-{folder.name}"
            (out / "images").mkdir(parents=True, exist_ok=True)
            (out / "masks").mkdir(parents=True, exist_ok=True)
            for path in masks:
                mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) > 0
                seed = zlib.crc32(f"{args.seed}/{condition}/{path.stem}".encode())
                image, out_mask = render(mask, condition, seed)
                cv2.imwrite(str(out / "images" / path.name), image)
                cv2.imwrite(str(out / "masks" / path.name), out_mask * 255)
            print(f"{out}: {len(masks)} images", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
