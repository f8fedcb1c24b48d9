"""``samsem segment`` and ``samsem evaluate``: run a model over image files.

``segment`` writes masks, reports and previews through :mod:`samsem.runtime.outputs` (resumable);
``evaluate`` compares masks with ground truth (:mod:`samsem.evaluation.report`), segmenting ``--images``
first when asked. Both load their model with :func:`samsem.runtime.load.load_pipeline`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from samsem.runtime.pipeline import Pipeline


def _add_model_options(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The model and engine flags both commands share."""
    p.add_argument(
        "--model",
        default=None,
        help="model bundle directory or checkpoint (CONFIG:CKPT, CKPT1,CKPT2), or classical (Sauvola) / "
        "classical:otsu; default: the bundled default model",
    )
    p.add_argument("--backend", default="auto", help="torch | onnxruntime | tensorrt | aoti | auto")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="model inputs per batch (default: from free GPU memory on CUDA, else 8)",
    )


def _pipeline(args: argparse.Namespace, command: str) -> Pipeline:
    """The pipeline the model flags name (plus the run options ``args`` has), announced on stderr."""
    from samsem.runtime.config import RunOptions
    from samsem.runtime.load import load_pipeline

    options = RunOptions(
        batch_size=args.batch_size,
        single_scale=getattr(args, "single_scale", None),
        seed=getattr(args, "seed", 0),
        fallback=getattr(args, "fallback", "sauvola"),
        decision=getattr(args, "decision", "robust"),
    )
    pipeline = load_pipeline(
        args.model, backend=args.backend, device=args.device, precision=args.precision, options=options
    )
    info = pipeline.info
    if info is not None and info.kind == "classical":
        which = "no model in the package" if args.model is None else "as asked"
        print(f"samsem {command}: {info.summary()} ({which})", file=sys.stderr)
    elif info is not None:
        origin = "bundled default " if args.model is None else ""
        print(f"samsem {command}: {origin}{info.summary()}", file=sys.stderr)
    return pipeline


# ------------------------------------------------------------------------------------------------ segment


def register_segment(sub: argparse._SubParsersAction) -> None:
    """Add the ``segment`` subcommand."""
    p = sub.add_parser(
        "segment",
        help="segment SEM images into metal-line masks",
        description="Segment SEM images (files, directories, globs) with the multi-scale pipeline. "
        "Writes NAME.mask.png (.tif for large images) and NAME.report.json to OUTDIR; images whose "
        "outputs exist are skipped unless --overwrite, so an interrupted run resumes.",
    )
    p.add_argument("inputs", nargs="+", help="image files (PNG/TIFF), directories or globs")
    p.add_argument("-o", "--out", required=True, type=Path, help="output directory")
    _add_model_options(p)
    p.add_argument(
        "--single-scale",
        type=int,
        choices=[1, 2],
        default=None,
        help="run only model 1 (whole image) or model 2 (patches)",
    )
    p.add_argument(
        "--fallback",
        choices=["sauvola", "model1", "model2"],
        default="sauvola",
        help="what fills patches where both models are speckled (default sauvola)",
    )
    p.add_argument(
        "--decision",
        choices=["robust", "paper"],
        default="robust",
        help="per-patch choice between the scales: robust (default; specks removed first, model 1 "
        "distrusted where too coarse) or the SAMSEM paper's rule",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the point prompts")
    p.add_argument("--preview", action="store_true", help="also write NAME.preview.png")
    p.add_argument("--overwrite", action="store_true", help="recompute images whose outputs exist")
    p.set_defaults(func=run_segment)


def run_segment(args: argparse.Namespace) -> int:
    """Segment every input; per-file failures are reported and make the exit code 1."""
    from tqdm import tqdm

    from samsem.errors import SamsemError
    from samsem.io import list_images, read_image
    from samsem.runtime.outputs import (
        ImageOutputs,
        RunSummary,
        check_distinct_names,
        plan_image,
        prepare_dir,
        write_outputs,
    )
    from samsem.runtime.pipeline import FailedImage

    pipeline = _pipeline(args, "segment")
    files = list_images(args.inputs)
    check_distinct_names(files)
    prepare_dir(args.out)
    summary = RunSummary()
    todo: dict[str, ImageOutputs] = {}
    total = 0
    for f in files:
        try:
            outputs, height, width = plan_image(f, args.out, preview=args.preview)
        except SamsemError as exc:
            summary.failures[f.name] = str(exc)
            continue
        if not args.overwrite and outputs.finished():
            summary.skipped += 1
            continue
        todo[str(f)] = outputs
        total += pipeline.count_inputs(height, width)

    with tqdm(total=total, unit="tile", desc="segment", disable=None) as bar:
        sources = [(name, (lambda f=o.input: read_image(f))) for name, o in todo.items()]
        for result in pipeline.segment_many(sources, progress=bar.update):
            outputs = todo[result.name]
            if isinstance(result, FailedImage):
                summary.failures[outputs.input.name] = str(result.error)
                continue
            write_outputs(outputs, result.mask, result.report.to_json(), image=result.image, protect=files)
            summary.done += 1
    return summary.report("samsem segment", args.out)


# ----------------------------------------------------------------------------------------------- evaluate


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def register_evaluate(sub: argparse._SubParsersAction) -> None:
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
    _add_model_options(p.add_argument_group("segmentation (with --images)"))
    p.set_defaults(func=run_evaluate)


def _segmented(
    args: argparse.Namespace, names: list[str], images: dict[str, Path]
) -> Iterator[tuple[str, np.ndarray]]:
    """Segment the named images with the pipeline; yields (name, mask) and writes masks/NAME.mask.png."""
    from tqdm import tqdm

    from samsem.evaluation.report import image_size
    from samsem.io import read_image, write_mask
    from samsem.runtime.pipeline import FailedImage

    pipeline = _pipeline(args, "evaluate")
    total = sum(pipeline.count_inputs(*image_size(images[n])) for n in names)
    sources = [(n, (lambda p=images[n]: read_image(p))) for n in names]
    with tqdm(total=total, unit="tile", desc="segment", disable=None) as bar:
        for result in pipeline.segment_many(sources, progress=bar.update):
            if isinstance(result, FailedImage):
                raise result.error
            write_mask(args.out / "masks" / f"{result.name}.mask.png", result.mask)
            yield result.name, result.mask


def run_evaluate(args: argparse.Namespace) -> int:
    """Evaluate every prediction/ground-truth pair; returns 0 (bad inputs raise InputError)."""
    from tqdm import tqdm

    from samsem.evaluation.esd import ESDConfig
    from samsem.evaluation.report import (
        GT_SUFFIXES,
        MASK_SUFFIXES,
        Accumulator,
        check_sizes,
        files_by_name,
        pair_names,
    )
    from samsem.io import read_mask

    defaults = ESDConfig()
    cfg = ESDConfig(
        border=defaults.border if args.border is None else args.border,
        min_area=defaults.min_area if args.min_area is None else args.min_area,
    )
    gt_files = files_by_name(args.gt, GT_SUFFIXES, "ground-truth")
    settings: dict = {"gt": str(args.gt), "border": cfg.border, "min_area": cfg.min_area}
    acc = Accumulator(args.out, cfg)
    if args.pred is not None:
        pred_files = files_by_name(args.pred, MASK_SUFFIXES, "prediction", masks_only=True)
        names = pair_names(pred_files, gt_files, args.pred, args.gt)
        check_sizes(names, pred_files, gt_files)
        settings["pred"] = str(args.pred)
        for name in tqdm(names, desc="evaluate", unit="image", disable=None):
            pred = read_mask(pred_files[name])
            acc.add(name, pred, read_mask(gt_files[name], shape=pred.shape))
    else:
        images = files_by_name(args.images, MASK_SUFFIXES, "image")
        names = pair_names(images, gt_files, args.images, args.gt)
        check_sizes(names, images, gt_files)
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
