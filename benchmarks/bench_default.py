"""Quality and CPU throughput of a model against the classical segmenters, per held-out test set.

For every test folder (``samsem synth`` output or images/ + masks/; e.g. the sets written by
``tools/make_heldout_sets.py``) it segments each image with

  * the model through the two-scale pipeline with the defaults (robust decision, background
    flattening, faint-component filter), without flattening, without the filter, with the SAMSEM
    paper's behaviour (its rule and Sauvola fallback, neither flattening nor filter), and with each
    single scale alone,
  * the classical segmenters (Otsu, Sauvola, 5x5 median + Otsu; patch-wise at native resolution, no
    flattening or filter: the plain thresholds),

then prints per set and method the ESD rate (errors / ground-truth lines, default ESD rules), opens,
shorts, false positives and negatives, the share of lines without error, Dice and the throughput in
megapixels per second of wall time on this machine, and a summary: per set the best classical
segmenter and the ratio of its ESD rate to the default two-scale one.

    python benchmarks/bench_default.py --tests /data/heldout/* [--model BUNDLE] [--metal dark]
        [--flatten PX] [--methods two-scale ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from samsem.evaluation.esd import ESDConfig, ESDResult, esd
from samsem.evaluation.metrics import pixel_metrics
from samsem.io import list_images, read_image, read_mask
from samsem.runtime.config import RunOptions
from samsem.runtime.load import classical_pipeline, load_pipeline
from samsem.runtime.pipeline import Pipeline

CLASSICAL = ("classical:otsu", "classical:sauvola", "classical:median-otsu")


def _methods(
    model: str | None, batch_size: int, metal: str, flatten: int | None
) -> dict[str, Callable[[], Pipeline]]:
    opts = RunOptions(batch_size=batch_size, metal=metal, flatten=flatten)
    plain = replace(opts, flatten=0, min_contrast=0.0)
    methods: dict[str, Callable[[], Pipeline]] = {
        "two-scale": lambda: load_pipeline(model, options=opts),
        "two-scale unflattened": lambda: load_pipeline(model, options=replace(opts, flatten=0)),
        "two-scale unfiltered": lambda: load_pipeline(model, options=replace(opts, min_contrast=0.0)),
        "two-scale paper": lambda: load_pipeline(
            model, options=replace(plain, decision="paper", fallback="sauvola")
        ),
        "scale 1": lambda: load_pipeline(model, options=replace(opts, single_scale=1)),
        "scale 2": lambda: load_pipeline(model, options=replace(opts, single_scale=2)),
    }
    for name in CLASSICAL:
        methods[name] = lambda name=name: classical_pipeline(name, options=plain)
    return methods


def _pairs(folder: Path) -> list[tuple[Path, Path]]:
    images = list_images([folder / "images"])
    masks = {p.stem: p for p in (folder / "masks").iterdir()}
    return [(p, masks[p.stem]) for p in images]


def _evaluate(pipeline: Pipeline, pairs: list[tuple[Path, Path]]) -> dict:
    total = ESDResult(0, 0, 0, 0, 0, 0, 0)
    dice, pixels, seconds = [], 0, 0.0
    for image_path, mask_path in pairs:
        image = read_image(image_path)
        gt = read_mask(mask_path, image.shape)
        t0 = time.perf_counter()
        pred = pipeline.segment(image).mask
        seconds += time.perf_counter() - t0
        pixels += image.size
        total = total + esd(pred, gt, ESDConfig())
        dice.append(pixel_metrics(pred, gt)["dice"])
    return {
        "esd_rate": total.rate,
        "ok_share": total.ok_share,
        "opens": total.opens,
        "shorts": total.shorts,
        "fps": total.false_positives,
        "fns": total.false_negatives,
        "gt_lines": total.gt_lines,
        "dice": sum(dice) / len(dice),
        "mpix_per_s": pixels / 1e6 / seconds,
    }


def _summary(rows: list[dict]) -> list[str]:
    """Per set: the ESD rate of each model mode and the best classical segmenter with its ratio to the
    default two-scale rate (how many times more errors the classical segmenter makes)."""
    modes = (
        "two-scale",
        "two-scale unflattened",
        "two-scale unfiltered",
        "scale 1",
        "scale 2",
        "two-scale paper",
    )
    head = f"{'two-scale':>9} {'unflat.':>8} {'unfilt.':>8} {'scale 1':>8} {'scale 2':>8} {'paper':>8}"
    lines = [f"{'test set':<28} {head}   best classical"]
    for test_set in dict.fromkeys(r["test_set"] for r in rows):
        by = {r["method"]: r["esd_rate"] for r in rows if r["test_set"] == test_set}
        cells = " ".join(f"{by.get(m, math.nan):{9 if i == 0 else 8}.4f}" for i, m in enumerate(modes))
        classical = [m for m in CLASSICAL if m in by]
        best = ""
        if classical:
            name = min(classical, key=lambda m: by[m])
            model = by.get("two-scale", math.nan)
            ratio = by[name] / model if model > 0 else math.inf
            best = f"{name.split(':')[1]} {by[name]:.4f} ({ratio:.1f}x)"
        lines.append(f"{test_set:<28} {cells}   {best}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="bundle or checkpoint (default: the bundled default model)")
    ap.add_argument("--tests", nargs="+", type=Path, required=True, help="test folders")
    ap.add_argument("--methods", nargs="+", default=None, help="subset of the methods (default: all)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument(
        "--metal", choices=["bright", "dark"], default="bright", help="metal polarity (default bright)"
    )
    ap.add_argument(
        "--flatten",
        type=int,
        default=None,
        metavar="PX",
        help="background-flattening window of the flattened methods (default: the model's, 128)",
    )
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    factories = _methods(args.model, args.batch_size, args.metal, args.flatten)
    names = args.methods or list(factories)
    unknown = sorted(set(names) - set(factories))
    if unknown:
        ap.error(f"unknown method(s) {unknown}; expected some of {list(factories)}")
    methods = {name: factories[name]() for name in names}
    for pipe in methods.values():  # warm up JIT kernels and engines outside the timings
        pipe.segment(read_image(_pairs(args.tests[0])[0][0]))
    rows = []
    for folder in args.tests:
        pairs = _pairs(folder)
        for name, pipe in methods.items():
            row = {"test_set": folder.name, "images": len(pairs), "method": name, **_evaluate(pipe, pairs)}
            rows.append(row)
            print(
                f"{row['test_set']:<28} {name:<22} ESD {row['esd_rate']:7.4f}  ok {row['ok_share']:6.1%}  "
                f"O/S/FP/FN {row['opens']}/{row['shorts']}/{row['fps']}/{row['fns']} of {row['gt_lines']}  "
                f"Dice {row['dice']:.3f}  {row['mpix_per_s']:.2f} MP/s",
                flush=True,
            )
    print()
    print("\n".join(_summary(rows)))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
