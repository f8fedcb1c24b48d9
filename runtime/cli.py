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

    from samsem.runtime.config import RunOptions
    from samsem.runtime.pipeline import Pipeline
    from samsem.vector import VectorOptions


def _default_model_text() -> str:
    """What --model defaults to, as help text (the bundled model when the package has one)."""
    from importlib import resources

    # as samsem.runtime.load.default_bundle, without importing the runtime (help stays light)
    if not (resources.files("samsem") / "data" / "default" / "manifest.json").is_file():
        return "default: the classical Sauvola segmenter (this install has no bundled model)"
    return "default: the bundled lite model (samsem/data/default)"


def add_model_options(
    p: argparse.ArgumentParser | argparse._ArgumentGroup, *, batch_size: bool = True
) -> None:
    """The model and engine flags of every command that loads a pipeline (segment, evaluate, serve):
    --model, --backend, --device, --precision and, with ``batch_size``, --batch-size."""
    p.add_argument(
        "--model",
        default=None,
        help="model bundle directory, checkpoint (CKPT, CONFIG:CKPT, or CKPT1,CKPT2 for the two scales) or a "
        f"classical segmenter (classical = Sauvola, classical:otsu); {_default_model_text()}",
    )
    p.add_argument("--backend", default="auto", help="torch | onnxruntime | tensorrt | aoti | auto (default)")
    p.add_argument(
        "--device",
        type=_device,
        default="cpu",
        help="cpu (default) | cuda | cuda:N | auto (cuda when this machine has a CUDA GPU, else cpu)",
    )
    p.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16", "fp16"],
        help="default fp32; bf16/fp16 apply to the torch backends (fp16 on CUDA only), engines of other "
        "backends run at their export precision (said on stderr)",
    )
    if not batch_size:
        return
    p.add_argument(
        "--batch-size",
        type=_positive,
        default=None,
        help="model inputs per batch (default: from free GPU memory on CUDA, else 8)",
    )


def _device(text: str) -> str:
    """--device: "auto" resolved here, so that reports and the server name the device really used."""
    from samsem.runtime.load import resolve_device

    return resolve_device(text)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def run_options(args: argparse.Namespace) -> RunOptions:
    """The run options the flags in ``args`` give (defaults for the flags a command lacks)."""
    from samsem.runtime.config import RunOptions

    return RunOptions(
        batch_size=args.batch_size,
        single_scale=getattr(args, "single_scale", None),
        seed=getattr(args, "seed", 0),
        fallback=getattr(args, "fallback", "model2"),
        decision=getattr(args, "decision", "robust"),
        metal=getattr(args, "metal", "bright"),
        flatten=getattr(args, "flatten", None),
        min_contrast=getattr(args, "min_contrast", None),
    )


def _pipeline(args: argparse.Namespace, command: str) -> Pipeline:
    """The pipeline the model flags name (plus the run options ``args`` has), announced on stderr."""
    from samsem.runtime.load import load_pipeline

    options = run_options(args)
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
    note = None if info is None else info.precision_note(args.precision)
    if note is not None:
        print(f"samsem {command}: {note}", file=sys.stderr)
    return pipeline


# ------------------------------------------------------------------------------------------------ segment


def register_segment(sub: argparse._SubParsersAction) -> None:
    """Add the ``segment`` subcommand."""
    p = sub.add_parser(
        "segment",
        help="segment SEM images into metal-line masks",
        description="Segment SEM images (files, directories, globs) with the multi-scale pipeline. "
        "Writes NAME.mask.png (.tif for large images) and NAME.report.json to OUTDIR, with --preview "
        "NAME.preview.png and with --vector NAME.mask.svg/.geojson/.gds. An image is finished when every "
        "requested output exists: a rerun skips finished images, writes missing previews and vector files "
        "from the existing mask, and segments the rest (--overwrite recomputes everything).",
    )
    p.add_argument("inputs", nargs="+", help="image files (PNG, TIFF, JPEG, BMP), directories or globs")
    p.add_argument("-o", "--out", required=True, type=Path, help="output directory")
    add_model_options(p)
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
        default="model2",
        help="what fills patches where both models are speckled (default model2; the paper used sauvola)",
    )
    p.add_argument(
        "--decision",
        choices=["robust", "paper"],
        default="robust",
        help="per-patch choice between the scales: robust (default; specks removed first, model 1 "
        "distrusted where too coarse) or the SAMSEM paper's rule",
    )
    p.add_argument(
        "--metal",
        choices=["bright", "dark"],
        default="bright",
        help="metal brighter than the background (default bright) or darker (dark: inverted images, as "
        "from some backscatter detectors)",
    )
    p.add_argument(
        "--flatten",
        type=_non_negative_int,
        default=None,
        metavar="PX",
        help="subtract a low-frequency background (charging, shading) estimated with a window of PX "
        "pixels, wider than the widest line; 0 = off (the SAMSEM paper's behaviour); default: the "
        "model's configuration, 128 for the bundled model and models without one",
    )
    p.add_argument(
        "--min-contrast",
        type=_non_negative_float,
        default=None,
        metavar="C",
        help="remove components under 400 px whose intensity exceeds the background around them by less "
        "than C (intensities mapped to 0..1; grain and charging taken for metal); 0 = off (the SAMSEM "
        "paper's behaviour); default: the model's configuration, 0.12 for the bundled model",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the point prompts (default 0)")
    p.add_argument("--preview", action="store_true", help="also write NAME.preview.png")
    p.add_argument("--overwrite", action="store_true", help="recompute images whose outputs exist")
    vec = p.add_argument_group("vector outputs (samsem.vector, docs/vector.md)")
    vec.add_argument(
        "--vector",
        type=_vector_formats,
        default=(),
        metavar="FORMATS",
        help="also write every metal line as polygons: any of svg,geojson,gds (comma-separated) as "
        "NAME.mask.svg / .geojson / .gds",
    )
    vec.add_argument(
        "--tolerance",
        type=_non_negative_float,
        default=1.0,
        metavar="PX",
        help="simplification tolerance in pixels (default 1.0; 0 = exact pixel outlines); lines never merge "
        "or split, and two lines' polygons stay at least 0.5 px apart",
    )
    vec.add_argument(
        "--nm-per-px", type=float, default=1.0, metavar="NM", help="GDSII pixel size (default 1)"
    )
    vec.add_argument(
        "--gds-layer", type=_non_negative, default=0, metavar="N", help="GDSII layer (default 0)"
    )
    vec.add_argument(
        "--gds-datatype", type=_non_negative, default=0, metavar="N", help="GDSII datatype (default 0)"
    )
    _add_ray_options(p.add_argument_group("Ray cluster (docs/scale-out.md)"))
    p.set_defaults(func=run_segment)


RAY_ONLY = ("workers", "gpus_per_worker", "threads_per_worker", "images_per_call")


def _add_ray_options(g: argparse._ArgumentGroup) -> None:
    """``--ray [ADDRESS]`` and the worker layout; the runner (samsem.runtime.cluster) is imported only
    when --ray is given."""
    g.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="run on Ray Data: inputs may also be URIs (s3://…, file:///…); ADDRESS: HOST:PORT, auto or "
        "local (default: RAY_ADDRESS, the cluster `ray start` made here, else a local one); put --ray "
        "after the inputs; writes OUT/run-manifest.jsonl",
    )
    g.add_argument("--workers", type=int, default=None, help="Ray workers (default: fill the cluster)")
    g.add_argument(
        "--gpus-per-worker",
        type=float,
        default=None,
        help="GPUs per worker, e.g. 0.5 (default: 1 on cuda, else 0: CPU workers)",
    )
    g.add_argument(
        "--threads-per-worker",
        type=int,
        default=None,
        help="CPU threads each worker reserves and pins (default: 1 for CPU workers; GPU workers share the "
        "node's CPUs)",
    )
    g.add_argument(
        "--images-per-call",
        type=int,
        default=None,
        help="images a worker segments together, batching their model inputs (default 1)",
    )


def _vector_formats(text: str) -> tuple[str, ...]:
    from samsem.runtime.outputs import VECTOR_SUFFIXES

    formats = tuple(dict.fromkeys(f.strip().lower() for f in text.split(",") if f.strip()))
    bad = [f for f in formats if f not in VECTOR_SUFFIXES]
    if bad or not formats:
        raise argparse.ArgumentTypeError(
            f"unknown format(s) {', '.join(bad) or '(none)'}; choose from {','.join(VECTOR_SUFFIXES)}"
        )
    return formats


def _vector_options(args: argparse.Namespace) -> VectorOptions | None:
    """VectorOptions of the --vector flags (None without --vector); ConfigError when gdstk is missing."""
    if not args.vector:
        return None
    import importlib.util

    from samsem.errors import ConfigError
    from samsem.vector import VectorOptions

    if "gds" in args.vector and importlib.util.find_spec("gdstk") is None:
        raise ConfigError("--vector gds needs gdstk, which is not installed: pip install 'samsem[vector]'")
    return VectorOptions(
        formats=args.vector,
        tolerance_px=args.tolerance,
        nm_per_px=args.nm_per_px,
        gds_layer=args.gds_layer,
        gds_datatype=args.gds_datatype,
    )


def run_segment(args: argparse.Namespace) -> int:
    """Segment every input; per-file failures (bad inputs, missing paths among good ones, outputs that
    cannot be written) are reported and make the exit code 1. An error of the output location (disk
    full, read-only, no permission: :data:`~samsem.runtime.outputs.RUN_STOPPING_ERRORS`) stops the run
    with a summary that lists the inputs not tried. No usable input at all is a usage error (exit 2)."""
    from samsem.errors import ConfigError

    if getattr(args, "ray", None) is not None:
        from samsem.runtime.cluster import run_segment_ray

        return run_segment_ray(args, run_options(args), _vector_options(args))
    given = [f"--{name.replace('_', '-')}" for name in RAY_ONLY if getattr(args, name, None) is not None]
    if given:
        raise ConfigError(f"{', '.join(given)} need --ray")

    from tqdm import tqdm

    from samsem.errors import InputError, SamsemError
    from samsem.io import read_image, scan_images
    from samsem.runtime.outputs import (
        ImageOutputs,
        RunSummary,
        check_dir,
        check_distinct_names,
        complete_outputs,
        plan_image,
        prepare_dir,
        remove_stale_temps,
        write_outputs,
    )
    from samsem.runtime.pipeline import FailedImage

    vector_options = _vector_options(args)
    files, bad_inputs = scan_images(args.inputs)
    if not files:  # nothing to segment: a usage error
        if len(bad_inputs) == 1:
            raise bad_inputs[0]
        raise InputError(None, "no usable input: " + "; ".join(str(e) for e in bad_inputs))
    check_distinct_names(files)
    check_dir(args.out)  # before the model loads
    pipeline = _pipeline(args, "segment")
    prepare_dir(args.out)
    remove_stale_temps(args.out, (f.stem for f in files))  # left by a run that was killed
    summary = RunSummary()
    for bad in bad_inputs:  # reported, the other inputs segmented
        summary.failures[str(bad.path)] = str(bad)
    todo: dict[str, ImageOutputs] = {}
    total = 0
    for i, f in enumerate(files):
        try:
            outputs, height, width = plan_image(f, args.out, preview=args.preview, vector=args.vector)
            if not args.overwrite and outputs.finished():
                summary.skipped += 1
                continue
            if not args.overwrite and outputs.completable():
                complete_outputs(outputs, vector_options=vector_options)
                summary.completed += 1
                continue
        except (SamsemError, OSError) as exc:
            if summary.fail(f.name, exc):
                summary.not_tried = [o.input.name for o in todo.values()] + [g.name for g in files[i + 1 :]]
                return summary.report("samsem segment", args.out)
            continue
        todo[str(f)] = outputs
        total += pipeline.count_inputs(height, width)

    with tqdm(total=total, unit="tile", desc="segment", disable=None) as bar:
        sources = [(name, (lambda f=o.input: read_image(f))) for name, o in todo.items()]
        results = pipeline.segment_many(sources, progress=bar.update)
        for result in results:
            outputs = todo.pop(result.name)
            if isinstance(result, FailedImage):
                summary.failures[outputs.input.name] = str(result.error)
                continue
            try:
                write_outputs(
                    outputs,
                    result.mask,
                    result.report.to_json(),
                    image=result.image,
                    protect=files,
                    vector_options=vector_options,
                )
            except (SamsemError, OSError) as exc:
                if summary.fail(outputs.input.name, exc):
                    results.close()  # stops reading and segmenting
                    summary.not_tried = [o.input.name for o in todo.values()]
                    break
                continue
            summary.done += 1
    return summary.report("samsem segment", args.out)


# ----------------------------------------------------------------------------------------------- evaluate


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _offset(text: str) -> tuple[float, float]:
    parts = text.split(",")
    try:
        x, y = (float(v) for v in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected X,Y in nm (e.g. 12000,-8000), got {text!r}") from None
    return x, y


def register_evaluate(sub: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` subcommand."""
    p = sub.add_parser(
        "evaluate",
        help="ESD and pixel metrics of predicted masks against ground truth",
        description="Compare predicted metal masks (or masks segmented on the fly from --images) with "
        "ground truth matched by file name stem, and write per-image and total tables (CSV, JSON), "
        "error overlays and an errors-per-image histogram to the report directory. In a --pred "
        "directory holding NAME.mask.* files (the output of `samsem segment`), only those are read. "
        "Ground truth may be masks, SVG labels, GeoJSON or GDSII layouts (a design's GDSII is placed with "
        "--nm-per-px and --offset); a single ground-truth file pairs with a single prediction.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--pred", type=Path, help="predicted masks: a directory (or one file) of PNG/TIFF, nonzero = metal"
    )
    src.add_argument(
        "--images", type=Path, help="SEM images to segment and evaluate: a directory or one file"
    )
    p.add_argument(
        "--gt",
        type=Path,
        required=True,
        help="ground truth: a directory (or one file) of PNG/TIFF masks, SVG labels, GeoJSON or GDSII",
    )
    p.add_argument("-o", "--out", required=True, type=Path, help="report directory")
    p.add_argument(
        "--border", type=_non_negative, default=None, help="ignored border band in px (default 35)"
    )
    p.add_argument(
        "--min-area", type=_non_negative, default=None, help="smallest predicted line in px (default 35)"
    )
    p.add_argument(
        "--border-rule",
        choices=["published", "drop"],
        default="published",
        help="predicted lines wholly in the border band still make opens and cover lines (published, the "
        "default, as Rothaug et al.'s ESD) or are left out (drop)",
    )
    lay = p.add_argument_group("layout ground truth (GDSII; GeoJSON and SVG carry their own size)")
    lay.add_argument(
        "--gds-layer", type=_non_negative, default=0, metavar="N", help="GDSII layer (default 0)"
    )
    lay.add_argument(
        "--gds-datatype", type=_non_negative, default=0, metavar="N", help="datatype (default 0)"
    )
    lay.add_argument("--gds-cell", default=None, metavar="NAME", help="cell (default: the only top cell)")
    lay.add_argument(
        "--nm-per-px", type=float, default=1.0, metavar="NM", help="image pixel size (default 1)"
    )
    lay.add_argument(
        "--offset",
        type=_offset,
        default=(0.0, 0.0),
        metavar="X,Y",
        help="layout position in nm of the image's top-left corner (default 0,0; write --offset=X,Y when X "
        "is negative); the image crops the window [X, X + W*NM] x [Y - H*NM, Y]",
    )
    add_model_options(p.add_argument_group("segmentation (with --images only)"))
    p.set_defaults(func=run_evaluate)


def _segmented(
    args: argparse.Namespace, pipeline: Pipeline, names: list[str], images: dict[str, Path], out: Path
) -> Iterator[tuple[str, np.ndarray]]:
    """Segment the named images with the pipeline; yields (name, mask) and writes out/masks/NAME.mask.png."""
    from tqdm import tqdm

    from samsem.evaluation.report import image_size
    from samsem.io import read_image, write_mask
    from samsem.runtime.pipeline import FailedImage

    total = sum(pipeline.count_inputs(*image_size(images[n])) for n in names)
    sources = [(n, (lambda p=images[n]: read_image(p))) for n in names]
    with tqdm(total=total, unit="tile", desc="segment", disable=None) as bar:
        for result in pipeline.segment_many(sources, progress=bar.update):
            if isinstance(result, FailedImage):
                raise result.error
            write_mask(out / "masks" / f"{result.name}.mask.png", result.mask)
            yield result.name, result.mask


def _models_of_predictions(pred_files: dict[str, Path]) -> list[dict] | str:
    """The distinct "model" records of the samsem reports beside the predicted masks (NAME.report.json
    next to NAME.mask.png), or a note when the masks come without such reports."""
    import json

    models: list[dict] = []
    for path in pred_files.values():
        report = path.with_name(path.name.split(".mask")[0] + ".report.json")
        try:
            model = json.loads(report.read_text(encoding="utf-8")).get("model")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(model, dict) and model not in models:
            models.append(model)
    return models or "unknown: the predicted masks have no samsem reports (NAME.report.json) beside them"


def run_evaluate(args: argparse.Namespace) -> int:
    """Evaluate every prediction/ground-truth pair; returns 0 (bad inputs raise InputError).

    Everything is written into a staging folder that is moved into ``--out`` at the end, so a file
    that fails halfway leaves no partial report."""
    from samsem.runtime.outputs import staged_dir

    with staged_dir(args.out) as out:
        return _evaluate(args, out)


def _evaluate(args: argparse.Namespace, out: Path) -> int:
    """run_evaluate writing into ``out``."""
    from tqdm import tqdm

    from samsem.evaluation.esd import ESDConfig
    from samsem.evaluation.report import (
        GT_SUFFIXES,
        MASK_SUFFIXES,
        Accumulator,
        LayoutOptions,
        check_sizes,
        files_by_name,
        pair_names,
        read_gt,
    )
    from samsem.io import IMAGE_SUFFIXES, read_mask

    defaults = ESDConfig()
    cfg = ESDConfig(
        border=defaults.border if args.border is None else args.border,
        min_area=defaults.min_area if args.min_area is None else args.min_area,
        border_rule=args.border_rule,
    )
    layout = LayoutOptions(
        gds_layer=args.gds_layer,
        gds_datatype=args.gds_datatype,
        nm_per_px=args.nm_per_px,
        offset_nm=args.offset,
        gds_cell=args.gds_cell,
    )
    gt_files = files_by_name(args.gt, GT_SUFFIXES, "ground-truth")
    settings: dict = {"gt": str(args.gt), "border": cfg.border, "min_area": cfg.min_area}
    settings["border_rule"] = cfg.border_rule
    if any(f.suffix.lower() in (".gds", ".gdsii") for f in gt_files.values()):
        settings["layout"] = layout.to_json()
    acc = Accumulator(out, cfg)
    if args.pred is not None:
        pred_files = files_by_name(args.pred, MASK_SUFFIXES, "prediction", masks_only=True)
        gt_files = _single_pair(args.gt, gt_files, pred_files)
        names = pair_names(pred_files, gt_files, args.pred, args.gt)
        check_sizes(names, pred_files, gt_files)
        settings["pred"] = str(args.pred)
        settings["model"] = _models_of_predictions({n: pred_files[n] for n in names})
        for name in tqdm(names, desc="evaluate", unit="image", disable=None):
            pred = read_mask(pred_files[name])
            acc.add(name, pred, read_gt(gt_files[name], pred.shape, layout))
    else:
        images = files_by_name(args.images, IMAGE_SUFFIXES, "image")
        gt_files = _single_pair(args.gt, gt_files, images)
        names = pair_names(images, gt_files, args.images, args.gt)
        check_sizes(names, images, gt_files)
        pipeline = _pipeline(args, "evaluate")
        model = pipeline.info.to_json() if pipeline.info is not None else "a custom pipeline"
        settings |= {"images": str(args.images), "model": model}
        for name, mask in _segmented(args, pipeline, names, images, out):
            acc.add(name, mask, read_gt(gt_files[name], mask.shape, layout))
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


def _single_pair(gt_arg: Path, gt_files: dict[str, Path], pred_files: dict[str, Path]) -> dict[str, Path]:
    """A single ground-truth file given as --gt pairs with a single prediction whatever their names;
    InputError when there are several predictions."""
    from samsem.errors import InputError

    if gt_arg.is_dir():
        return gt_files
    if len(pred_files) != 1:
        raise InputError(
            gt_arg,
            f"one ground-truth file for {len(pred_files)} predictions",
            "a ground-truth directory with one file per prediction, or a single prediction",
        )
    return {next(iter(pred_files)): gt_arg}
