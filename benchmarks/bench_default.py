"""Quality and CPU throughput of a model against the classical segmenters, per test set.

For every test folder (``samsem synth`` output or images/ + masks/) it segments each image with
  * the model through the two-scale pipeline, and with each single scale (``--single-scale 1|2``),
  * the classical segmenters (Sauvola and Otsu, patch-wise at native resolution),
then prints the ESD rate (errors / ground-truth lines; border 35, min area 35), the share of lines
without error, Dice, and throughput in megapixels per second of wall time on this machine.

    python benchmarks/bench_default.py --model samsem/data/default --tests /data/test/* [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from samsem.evaluation.esd import ESDConfig, ESDResult, esd
from samsem.evaluation.metrics import pixel_metrics
from samsem.io import list_images, read_image, read_mask
from samsem.runtime.config import RunOptions
from samsem.runtime.load import classical_pipeline, load_pipeline
from samsem.runtime.pipeline import Pipeline


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="bundle or checkpoint")
    ap.add_argument("--tests", nargs="+", type=Path, required=True, help="test folders")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    base = RunOptions(batch_size=args.batch_size)
    methods = {
        "model two-scale": load_pipeline(args.model, options=base),
        "model scale 1 only": load_pipeline(args.model, options=replace(base, single_scale=1)),
        "model scale 2 only": load_pipeline(args.model, options=replace(base, single_scale=2)),
        "classical sauvola": classical_pipeline("sauvola", options=base),
        "classical otsu": classical_pipeline("otsu", options=base),
    }
    for pipe in methods.values():  # warm up JIT kernels and engines outside the timings
        pipe.segment(read_image(_pairs(args.tests[0])[0][0]))
    rows = []
    for folder in args.tests:
        pairs = _pairs(folder)
        for name, pipe in methods.items():
            row = {"test_set": folder.name, "images": len(pairs), "method": name, **_evaluate(pipe, pairs)}
            rows.append(row)
            print(
                f"{row['test_set']:<14} {name:<20} ESD {row['esd_rate']:7.4f}  ok {row['ok_share']:6.1%}  "
                f"O/S/FP/FN {row['opens']}/{row['shorts']}/{row['fps']}/{row['fns']} of {row['gt_lines']}  "
                f"Dice {row['dice']:.3f}  {row['mpix_per_s']:.2f} MP/s",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
