"""`samsem evaluate`: ESD, pixel and instance metrics of predicted masks against ground truth.

Writes to the report directory: ``per_image.csv`` (one row per image), ``totals.csv`` (one row),
``report.json`` (settings, rows and totals), ``esd_histogram.png`` and ``overlays/NAME.png`` (see
:mod:`samsem.evaluation.overlay` for the colours); with ``--images`` also ``masks/NAME.mask.png``.
Totals pool all images: counts are summed, the ESD rate is total errors / total considered lines, pixel
metrics come from the summed pixel counts and AJI from the summed intersections and unions. An undefined
ESD rate (errors but no considered ground-truth line) is ``inf`` in the CSV files and ``null`` in JSON.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

MASK_SUFFIXES = (".png", ".tif", ".tiff")
GT_SUFFIXES = (*MASK_SUFFIXES, ".svg")
COUNT_FIELDS = ("opens", "shorts", "false_positives", "false_negatives", "errors")
LINE_FIELDS = ("gt_lines", "gt_lines_ok", "pred_lines")


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` subcommand."""
    p = sub.add_parser(
        "evaluate",
        help="ESD and pixel metrics of predicted masks against ground truth",
        description="Compare predicted metal masks (or masks segmented on the fly from --images) with "
        "ground truth matched by file name stem, and write per-image and total tables (CSV, JSON), "
        "error overlays and an errors-per-image histogram to the report directory. In a --pred "
        "directory holding NAME.mask.* files (the output of `samsem segment`), only those are read.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pred", type=Path, help="directory of predicted masks (PNG/TIFF, nonzero = metal)")
    src.add_argument("--images", type=Path, help="directory of SEM images to segment and evaluate")
    p.add_argument("--gt", type=Path, required=True, help="directory of ground truth: PNG/TIFF masks or SVG")
    p.add_argument("-o", "--out", required=True, type=Path, help="report directory")
    p.add_argument(
        "--border", type=_non_negative, default=None, help="ignored border band in px (default 35)"
    )
    p.add_argument("--min-area", type=_non_negative, default=None, help="smallest predicted line in px (35)")
    seg = p.add_argument_group("segmentation (with --images)")
    seg.add_argument(
        "--model", default=None, help="model as for `samsem segment` (default: classical Sauvola)"
    )
    seg.add_argument("--backend", default="auto", help="torch | onnxruntime | tensorrt | aoti | auto")
    seg.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    seg.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    seg.add_argument("--batch-size", type=int, default=8, help="model inputs per batch (default 8)")
    p.set_defaults(func=run)


# ------------------------------------------------------------------------------------------------ inputs


def _key(path: Path) -> str:
    """Matching name of a file: its stem without a trailing '.mask' (as written by `samsem segment`)."""
    stem = path.stem
    return stem[: -len(".mask")] if stem.endswith(".mask") else stem


def _by_key(folder: Path, suffixes: tuple[str, ...], what: str, masks_only: bool = False) -> dict[str, Path]:
    """Files of ``folder`` with one of ``suffixes`` by matching name; InputError when none or ambiguous."""
    from samsem.errors import InputError

    if not folder.is_dir():
        raise InputError(
            folder, "not found" if not folder.exists() else "is not a directory", f"a {what} directory"
        )
    files = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in suffixes)
    if masks_only and any(f.stem.endswith(".mask") for f in files):
        files = [f for f in files if f.stem.endswith(".mask")]
    if not files:
        raise InputError(folder, f"{what} directory holds no files", ", ".join(suffixes))
    found: dict[str, Path] = {}
    for f in files:
        if _key(f) in found:
            raise InputError(f, f"has the same name as {found[_key(f)].name}", f"one {what} file per name")
        found[_key(f)] = f
    return found


def _pairs(pred: dict[str, Path], gt: dict[str, Path], pred_dir: Path, gt_dir: Path) -> list[str]:
    """Names present in both; InputError naming every file without a partner."""
    from samsem.errors import InputError

    lonely_pred = sorted(set(pred) - set(gt))
    lonely_gt = sorted(set(gt) - set(pred))
    if lonely_pred or lonely_gt:
        parts = []
        if lonely_pred:
            parts.append(f"no ground truth in {gt_dir} for: {', '.join(pred[k].name for k in lonely_pred)}")
        if lonely_gt:
            parts.append(f"no prediction in {pred_dir} for: {', '.join(gt[k].name for k in lonely_gt)}")
        raise InputError(None, "; ".join(parts), "one ground-truth file per prediction, matched by name")
    return sorted(pred)


def _size(path: Path) -> tuple[int, int]:
    """(H, W) of a mask or image file without decoding it (SVG: its width and height)."""
    from samsem import svg
    from samsem.io import image_info

    if path.suffix.lower() == ".svg":
        layout = svg.read_layout(path)
        return layout.height, layout.width
    info = image_info(path)
    return info.height, info.width


def _check_sizes(names: list[str], pred: dict[str, Path], gt: dict[str, Path]) -> None:
    """InputError naming every pair whose files differ in size."""
    from samsem.errors import InputError

    bad = []
    for name in names:
        ps, gs = _size(pred[name]), _size(gt[name])
        if ps != gs:
            bad.append(f"{pred[name].name} is {ps[0]}x{ps[1]} px but {gt[name].name} is {gs[0]}x{gs[1]} px")
    if bad:
        raise InputError(
            None, "size mismatch: " + "; ".join(bad), "prediction and ground truth of the same size"
        )


# ------------------------------------------------------------------------------------------------ output


class Accumulator:
    """Evaluates image pairs one by one, writes their overlays and collects rows and pooled totals."""

    def __init__(self, out: Path, cfg) -> None:
        from samsem.evaluation.esd import ESDResult

        self.out = out
        self.cfg = cfg
        self.rows: list[dict] = []
        self.names: list[str] = []
        self.results: list = []
        self.total = ESDResult(0, 0, 0, 0, 0, 0, 0)
        self.conf = [0, 0, 0, 0]
        self.aji = [0, 0]

    def add(self, name: str, pred, gt) -> dict:
        """Evaluate pred against gt ((H, W) uint8 masks), write the overlay, return the row."""
        from samsem.evaluation.esd import esd_details
        from samsem.evaluation.metrics import aji_parts, confusion
        from samsem.evaluation.overlay import render_overlay, write_png

        details = esd_details(pred, gt, self.cfg)
        conf = confusion(pred, gt)
        inter, union = aji_parts(pred, gt)
        overlay = Path("overlays") / f"{name}.png"
        write_png(self.out / overlay, render_overlay(details))
        r = details.result
        self.total = self.total + r
        self.conf = [a + b for a, b in zip(self.conf, conf, strict=True)]
        self.aji = [self.aji[0] + inter, self.aji[1] + union]
        self.names.append(name)
        self.results.append(r)
        row = {"name": name, "height": int(pred.shape[0]), "width": int(pred.shape[1])}
        row |= self._metrics(r, conf, inter, union)
        row["overlay"] = overlay.as_posix()
        self.rows.append(row)
        return row

    @staticmethod
    def _metrics(r, conf, inter: int, union: int) -> dict:
        from samsem.evaluation.metrics import metrics_from_confusion

        d = r.to_dict()
        row = {k: d[k] for k in (*COUNT_FIELDS, *LINE_FIELDS)}
        row["esd_rate"] = d["rate"]
        row["ok_share"] = d["ok_share"]
        row |= metrics_from_confusion(*conf)
        row["aji"] = 1.0 if union == 0 else inter / union
        return row

    def totals(self) -> dict:
        """Pooled totals over every image added."""
        pixels = sum(row["height"] * row["width"] for row in self.rows)
        head = {"name": "total", "images": len(self.rows), "pixels": pixels}
        return head | self._metrics(self.total, self.conf, *self.aji)

    def write(self, settings: dict) -> None:
        """Write per_image.csv, totals.csv, report.json and esd_histogram.png."""
        from samsem.evaluation.overlay import write_error_histogram
        from samsem.io import write_json

        _write_csv(self.out / "per_image.csv", self.rows)
        totals = self.totals()
        _write_csv(self.out / "totals.csv", [totals])
        write_json(
            self.out / "report.json",
            _json_safe({"settings": settings, "images": self.rows, "totals": totals}),
        )
        write_error_histogram(self.out / "esd_histogram.png", self.names, self.results)


def _write_csv(path: Path, rows: list[dict]) -> None:
    import csv

    from samsem.io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _json_safe(obj):
    """Replace non-finite floats (an undefined ESD rate) by None, recursively."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj


# ------------------------------------------------------------------------------------------------ command


def _segmented(
    args: argparse.Namespace, names: list[str], images: dict[str, Path]
) -> Iterator[tuple[str, np.ndarray]]:
    """Segment the named images with the pipeline; yields (name, mask) and writes masks/NAME.mask.png."""
    from tqdm import tqdm

    from samsem.io import read_image, write_mask
    from samsem.runtime.config import PipelineConfig
    from samsem.runtime.pipeline import FailedImage, build_pipeline

    pipeline = build_pipeline(
        args.model,
        backend=args.backend,
        device=args.device,
        precision=args.precision,
        config=PipelineConfig(batch_size=args.batch_size),
    )
    total = sum(pipeline.count_inputs(*_size(images[n])) for n in names)
    sources = [(n, (lambda p=images[n]: read_image(p))) for n in names]
    with tqdm(total=total, unit="tile", desc="segment", disable=None) as bar:
        for result in pipeline.segment_many(sources, progress=bar.update):
            if isinstance(result, FailedImage):
                raise result.error
            write_mask(args.out / "masks" / f"{result.name}.mask.png", result.mask)
            yield result.name, result.mask


def run(args: argparse.Namespace) -> int:
    """Evaluate every prediction/ground-truth pair; returns 0 (bad inputs raise InputError)."""
    from tqdm import tqdm

    from samsem.evaluation.esd import ESDConfig
    from samsem.io import read_mask

    defaults = ESDConfig()
    cfg = ESDConfig(
        border=defaults.border if args.border is None else args.border,
        min_area=defaults.min_area if args.min_area is None else args.min_area,
    )
    gt_files = _by_key(args.gt, GT_SUFFIXES, "ground-truth")
    settings: dict = {"gt": str(args.gt), "border": cfg.border, "min_area": cfg.min_area}
    acc = Accumulator(args.out, cfg)
    if args.pred is not None:
        pred_files = _by_key(args.pred, MASK_SUFFIXES, "prediction", masks_only=True)
        names = _pairs(pred_files, gt_files, args.pred, args.gt)
        _check_sizes(names, pred_files, gt_files)
        settings["pred"] = str(args.pred)
        for name in tqdm(names, desc="evaluate", unit="image", disable=None):
            pred = read_mask(pred_files[name])
            acc.add(name, pred, read_mask(gt_files[name], shape=pred.shape))
    else:
        images = _by_key(args.images, MASK_SUFFIXES, "image")
        names = _pairs(images, gt_files, args.images, args.gt)
        _check_sizes(names, images, gt_files)
        settings |= {"images": str(args.images), "model": args.model, "backend": args.backend}
        for name, mask in _segmented(args, names, images):
            acc.add(name, mask, read_mask(gt_files[name], shape=mask.shape))
    acc.write(settings)
    t = acc.totals()
    print(
        f"samsem evaluate: {t['images']} images, {t['gt_lines']} lines: {t['opens']} opens, {t['shorts']} "
        f"shorts, {t['false_positives']} false positives, {t['false_negatives']} false negatives; "
        f"ESD rate {t['esd_rate']:.4f}, lines ok {t['ok_share']:.1%}, Dice {t['dice']:.4f}, "
        f"AJI {t['aji']:.4f} -> {args.out}",
        file=sys.stderr,
    )
    return 0
