"""``samsem train``: fine-tune a model; the option table is shared with ``samsem tune``.

Settings come from, in increasing priority: TrainConfig's defaults, ``--train-config FILE`` or else the
run folder's own ``config.json`` (so ``samsem train --out RUN`` alone resumes a run), then the flags.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

# (flag, config field ("outer__inner" for nested), type, choices, help)
OPTIONS: list[tuple[str, str, type, tuple[str, ...] | None, str]] = [
    ("--family", "family", str, ("sam2", "lite"), "model family; its own defaults apply (shown per family)"),
    (
        "--config",
        "model_config",
        str,
        None,
        'model size: SAM2 config ("sam2.1_hiera_t", ...), lite "default"; "tiny" = small random test model',
    ),
    ("--checkpoint", "init_checkpoint", str, None, "weights to start from (official SAM2 or samsem .pt)"),
    ("--input-size", "input_size", int, None, "model input side S in pixels"),
    ("--target", "target", str, ("model1", "model2", "single"), "whole images, patches, or both"),
    ("--patch-size", "patch_size", int, None, "model-2 patch side in image pixels"),
    ("--min-overlap", "min_overlap", float, None, "minimum overlap of neighbouring patches (fraction)"),
    ("--epochs", "epochs", int, None, "number of epochs"),
    ("--betti-start", "betti_start_epoch", int, None, "first epoch (0-based) with the Betti term"),
    ("--batch-size", "batch_size", int, None, "samples per forward pass"),
    ("--accumulation", "accumulation", int, None, "forward passes per optimizer step"),
    ("--lr", "lr", float, None, "AdamW learning rate"),
    ("--weight-decay", "weight_decay", float, None, "AdamW weight decay"),
    ("--scheduler", "scheduler", str, ("constant", "cosine"), "learning-rate schedule"),
    ("--warmup-steps", "warmup_steps", int, None, "linear warmup steps"),
    ("--grad-clip", "grad_clip", float, None, "max gradient norm (0 = off)"),
    ("--seed", "seed", int, None, "seed of initialisation, splits, data order and augmentation"),
    ("--device", "device", str, None, '"auto", "cpu", "cuda", "cuda:N"'),
    ("--aug-p", "augment__p", float, None, "probability of augmenting a sample"),
    ("--aug-intensity", "augment__intensity", float, None, "augmentation intensity in (0, 1]"),
    ("--alpha", "loss__alpha", float, None, "weight of BCE against Dice"),
    ("--betti-weight", "loss__betti_weight", float, None, "lambda, weight of the Betti-matching term"),
    ("--filtration", "loss__filtration", str, ("sublevel", "superlevel", "bothlevels"), "Betti filtration"),
    ("--barcode-threshold", "loss__barcode_length_threshold", float, None, "min. barcode length"),
    ("--betti-size", "loss__betti_size", int, None, "grid side of the Betti term"),
    ("--iou-head-weight", "loss__iou_head_weight", float, None, "weight of the IoU-prediction MSE"),
    ("--iou-reward", "loss__iou_reward", float, None, "weight of the soft-IoU reward (0 = off)"),
    ("--count-penalty", "loss__count_penalty", float, None, "weight of the mask-count penalty (0 = off)"),
    ("--epe-penalty", "loss__epe_penalty", float, None, "weight of the edge-placement penalty (0 = off)"),
    ("--gap-weight", "loss__gap_weight", float, None, "weight of the BCE on gaps between lines (0 = off)"),
    ("--gap-px", "loss__gap_px", int, None, "gaps narrower than this (odd, px) get the gap term"),
    ("--val-fraction", "val_fraction", float, None, "validation share per IC"),
    ("--test-fraction", "test_fraction", float, None, "test share per IC"),
    ("--esd-border", "esd_border", int, None, "ESD ignored border band (pixels)"),
    ("--esd-min-area", "esd_min_area", int, None, "ESD smallest predicted line (pixels)"),
    ("--val-batch-size", "val_batch_size", int, None, "pipeline batch size during validation"),
    ("--workers", "num_workers", int, None, "data-loader worker processes"),
    (
        "--sampler",
        "sampler",
        str,
        ("tiles", "crops"),
        "runtime tiles, or random crops of the training images",
    ),
    ("--crop-size", "crop_size", int, None, "crops sampler: crop side in model pixels"),
    ("--crops-per-epoch", "crops_per_epoch", int, None, "crops sampler: crops per epoch"),
    ("--negative-fraction", "negative_fraction", float, None, "crops sampler: share of crops without metal"),
    ("--flatten", "flatten", int, None, "background-flattening window of training inputs in px (0 = off)"),
]
SWITCHES = [
    ("--amp", "amp", "bf16 autocast on CUDA"),
    ("--push-unmatched", "loss__push_unmatched_to_1_0", "push unmatched Betti pairs to (1, 0)"),
    ("--betti-pad", "loss__betti_pad", "pad with background so border-touching lines count"),
    ("--progress", "progress", "progress bars"),
    ("--keep-checkpoints", "keep_checkpoints", "keep every epoch's weights in OUT/epochs/"),
]
PARTS = ("image_encoder", "prompt_encoder", "mask_decoder")


def _default(field: str, family: str = "sam2") -> Any:
    """The value ``field`` takes for ``family`` when not given (FAMILY_DEFAULTS over TrainConfig)."""
    from samsem.train.config import family_config

    value: Any = family_config(family)
    for part in field.split("__"):
        value = getattr(value, part)
    return value


def _default_text(field: str) -> str:
    """Help text of a default: one value, or one per family where the families differ."""
    from samsem.train.config import FAMILY_DEFAULTS

    values = {family: _default(field, family) for family in FAMILY_DEFAULTS}
    if field == "family":
        return f"default {_default(field)}"
    if field == "init_checkpoint":
        return "default: none, SAM2 starts from random weights unless given, lite from scratch"
    if field == "batch_size":
        per = ", ".join(f"{f} {v}" for f, v in values.items())
        return f"default: the largest that fits in memory, at most {per}"
    if len(set(map(repr, values.values()))) == 1:
        return f"default {next(iter(values.values()))}"
    return "default " + ", ".join(f"{f}: {v}" for f, v in values.items())


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """Add --data, --out and every TrainConfig option (all default to "not given")."""
    parser.add_argument("--data", action="append", metavar="DIR", help="dataset folder (repeatable)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--train-config", metavar="JSON", help="start from this config.json instead")
    metavars = {int: "N", float: "X", str: "NAME"}
    for flag, field, typ, choices, text in OPTIONS:
        parser.add_argument(
            flag,
            dest=field,
            type=typ,
            choices=choices,
            metavar=None if choices else metavars[typ],
            help=f"{text} ({_default_text(field)})",
        )
    for flag, field, text in SWITCHES:
        parser.add_argument(
            flag,
            dest=field,
            action=argparse.BooleanOptionalAction,
            help=f"{text} ({_default_text(field)})",
        )
    parser.add_argument(
        "--freeze", action="append", choices=PARTS, help="keep this SAM2 part frozen (repeatable)"
    )
    parser.add_argument(
        "--ood-ic", action="append", metavar="IC", help="hold out this IC entirely (repeatable)"
    )


def config_from_args(args: argparse.Namespace, run_dir: Path) -> Any:
    """The TrainConfig for ``args`` (see the module docstring for the order of precedence)."""
    from samsem.errors import InputError
    from samsem.train.config import family_config, load_config

    if args.train_config:
        base = load_config(args.train_config)
    elif (run_dir / "config.json").is_file():
        base = load_config(run_dir / "config.json")
    else:
        base = family_config(args.family or "sam2")
    changes: dict[str, Any] = {"out": str(run_dir)}
    for _, field, *_ in OPTIONS:
        if getattr(args, field) is not None:
            changes[field] = getattr(args, field)
    for _, field, _ in SWITCHES:
        if getattr(args, field) is not None:
            changes[field] = getattr(args, field)
    if args.data:
        changes["data"] = tuple(args.data)
    if args.freeze:
        changes.update({f"train_{part}": part not in args.freeze for part in PARTS})
    if args.ood_ic:
        changes["ood_ics"] = tuple(args.ood_ic)
    cfg = base.with_overrides(**changes)
    if not cfg.data:
        raise InputError(None, "no training data given", "--data DIR")
    return cfg


def fit_batch(cfg: Any, args: argparse.Namespace, resuming: bool) -> Any:
    """``cfg`` with a batch size that fits in memory (logged): the user's or the saved one is kept (with a
    warning when it does not fit); otherwise the largest up to the family's default, with gradient
    accumulation raised (unless given) so that an optimizer step still sees the default's samples."""
    import math

    from samsem.train.memory import plan_batch
    from samsem.train.task import resolve_device

    given = cfg.batch_size if args.batch_size is not None or resuming else None
    plan = plan_batch(cfg, resolve_device(cfg.device), given)
    message = plan.message
    changes: dict[str, Any] = {"batch_size": plan.batch_size}
    if plan.batch_size < cfg.batch_size and args.batch_size is None and args.accumulation is None:
        changes["accumulation"] = math.ceil(cfg.batch_size * cfg.accumulation / plan.batch_size)
        message += f"; accumulating {changes['accumulation']} batches per optimizer step"
    print(f"samsem train: {message}", file=sys.stderr)
    return cfg.with_overrides(**changes)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` subcommand."""
    parser = subparsers.add_parser(
        "train",
        help="fine-tune SAM2 or train the lite model (pixel + Betti-matching losses)",
        description="Fine-tune SAM2 (--family sam2, the default) or train the lite CNN (--family lite). "
        "Defaults depend on the family: where they differ, the help shows each. The defaults shown are a new "
        "run's: a resumed run (OUT/config.json) or --train-config keeps its own settings, which the flags "
        "given override. Without --batch-size the "
        "largest batch that fits in the available memory is used (at most the family's default) and named "
        "in the log. Writes OUT/last.pt, OUT/best.pt (samsem checkpoints), OUT/log.csv, OUT/curves.png "
        "and prints one line per epoch; rerunning with the same OUT resumes from OUT/last.pt.",
    )
    add_config_options(parser)
    parser.add_argument(
        "--resume",
        metavar="PT",
        help="continue from this last.pt (default: OUT/last.pt, the run folder's own)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train; prints where the best checkpoint is. Returns the exit code."""
    from samsem.cli import Terminated
    from samsem.train.loop import train

    run_dir = Path(args.out)
    created = _first_missing(run_dir)
    resuming = bool(args.train_config) or args.resume is not None or (run_dir / "config.json").is_file()
    try:
        cfg = fit_batch(config_from_args(args, run_dir), args, resuming)
        result = train(cfg, resume=args.resume)
    except KeyboardInterrupt as exc:
        if not (run_dir / "last.pt").is_file():
            _remove_if_unused(run_dir, created)
            what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
            print(f"samsem train: {what} before the first epoch finished; nothing to resume", file=sys.stderr)
            return 143 if isinstance(exc, Terminated) else 130
        raise
    except Exception:
        _remove_if_unused(run_dir, created)
        raise
    rate = "n/a" if result.best_rate == float("inf") else f"{result.best_rate:.4f}"
    best = f"best epoch {result.best_epoch + 1}/{cfg.epochs}"
    print(f"{best} (validation ESD rate {rate}): {result.run_dir / 'best.pt'}")
    return 0


def _first_missing(run_dir: Path) -> Path | None:
    """The outermost folder of ``run_dir`` (itself or a parent) that does not exist yet: what this run
    creates; None when ``run_dir`` exists."""
    missing = None
    for p in (run_dir, *run_dir.parents):
        if p.exists():
            break
        missing = p
    return missing


def _remove_if_unused(run_dir: Path, created: Path | None) -> None:
    """Remove the folders this command created (``created``: the outermost, see :func:`_first_missing`)
    when no epoch finished in the run folder (it holds only its settings) and they hold nothing else."""
    if created is None or not run_dir.is_dir():
        return
    if {p.name for p in run_dir.iterdir()} <= {"config.json", "splits.json"}:
        for p in run_dir.iterdir():
            p.unlink()
        for folder in (run_dir, *run_dir.parents):
            try:
                folder.rmdir()  # only an empty folder
            except OSError:
                return
            if folder == created:
                return
