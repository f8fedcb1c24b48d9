"""The training loop: epochs of AdamW steps, per-epoch validation with the runtime pipeline and the ESD
metric, atomic checkpoints, exact resume, a CSV log and a loss/ESD plot.

Run folder (``cfg.out``):

* ``config.json`` the TrainConfig; ``splits.json`` the sample names of every split;
* ``last.pt`` after every epoch: a runtime-loadable checkpoint plus ``train_state`` (optimizer,
  scheduler, torch RNG states, next epoch, step count, best so far, history, config);
* ``best.pt`` the weights with the lowest validation ESD rate so far (ties go to the lower training
  loss, then to the earlier epoch; without validation images the lowest training loss counts);
* ``log.csv`` one row per epoch; ``curves.png`` training loss and validation ESD rate per epoch.

Resume: a run started again with the same config (only :data:`RESUMABLE_CHANGES` may differ, e.g. more
epochs) continues from ``last.pt`` after the last finished epoch and gives the same weights as an
uninterrupted run: the data order and every augmentation are functions of (seed, epoch, item), the
optimizer/scheduler/RNG states are restored, and nothing else carries state across epochs.
"""

from __future__ import annotations

import csv
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from samsem.errors import ConfigError, InputError
from samsem.io import atomic_path, write_json
from samsem.runtime.stages.tiling import TilingConfig
from samsem.train.config import RESUMABLE_CHANGES, TrainConfig
from samsem.train.data import CropDataset, Sample, TrainDataset, discover_all, epoch_order, split_samples
from samsem.train.task import Task, make_task, resolve_device

LOSS_PARTS = ("pixel", "betti", "iou_head", "iou_reward", "count", "epe", "gap")
ESD_FIELDS = ("errors", "gt_lines", "opens", "shorts", "false_positives", "false_negatives")
CSV_FIELDS = (
    "epoch",
    "betti_on",
    "lr",
    "steps",
    "train_loss",
    *(f"train_{p}" for p in LOSS_PARTS),
    "val_rate",
    *(f"val_{f}" for f in ESD_FIELDS),
    "best",
    "train_s",
    "val_s",
)
STATE_KEY = "train_state"


@dataclass
class TrainResult:
    """Outcome of :func:`train`: run folder, best epoch (0-based) and its validation ESD rate, history."""

    run_dir: Path
    best_epoch: int
    best_rate: float
    history: list[dict[str, Any]] = field(default_factory=list)


def lr_factor(step: int, total: int, warmup: int, kind: str) -> float:
    """Learning-rate multiplier at optimizer step ``step``: linear warmup, then constant or cosine to 0."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    span = max(total - warmup, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup, span) / span))


def _rng_state() -> dict[str, Any]:
    # numpy/python global RNGs are not used: all data randomness comes from seeded Generators
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def validate(task: Task, samples: list[Sample], cfg: TrainConfig) -> dict[str, float]:
    """Segment the validation images with the runtime pipeline and sum their ESD counts.

    The pipeline runs the live model at the scale(s) it is trained for (``cfg.target``) with the run's
    tiling. Returns ``{"rate", "errors", "gt_lines", ...}`` (rate = errors / considered gt lines).
    """
    from samsem.evaluation.esd import ESDConfig, esd
    from samsem.io import read_image, read_mask
    from samsem.runtime.config import PipelineConfig
    from samsem.runtime.pipeline import FailedImage, Pipeline

    seg = task.segmenter()
    single = {"model1": 1, "model2": 2, "single": None}[cfg.target]
    if cfg.sampler == "crops":
        single = None  # crops train one model for both scales
    rules = ESDConfig(cfg.esd_border, cfg.esd_min_area)
    total = None
    by_name = {s.name: s for s in samples}
    try:
        for metal in ("bright", "dark"):
            part = [s for s in samples if s.dark_metal == (metal == "dark")]
            if not part:
                continue
            pcfg = PipelineConfig(
                tiling=TilingConfig(cfg.patch_size, cfg.min_overlap),
                batch_size=cfg.val_batch_size,
                single_scale=single,
                seed=cfg.seed,
                metal=metal,
                flatten=cfg.flatten,
            )
            pipe = Pipeline(seg if single != 2 else None, seg if single != 1 else None, pcfg)
            sources = [(s.name, lambda s=s: read_image(s.image)) for s in part]
            for res in pipe.segment_many(sources):
                if isinstance(res, FailedImage):
                    raise res.error
                gt = read_mask(by_name[res.name].mask, res.mask.shape)
                one = esd(res.mask, gt, rules)
                total = one if total is None else total + one
    finally:
        task.model.train()
    assert total is not None
    out = {"rate": total.rate}
    out.update({f: float(getattr(total, f)) for f in ESD_FIELDS})
    return out


def epoch_line(row: dict[str, Any], epochs: int) -> str:
    """The line printed after each epoch: loss (and its Betti part), validation ESD, times."""
    parts = [f"epoch {row['epoch'] + 1}/{epochs}: loss {row['train_loss']:.4f}"]
    if row.get("betti_on"):
        parts[0] += f" (Betti {row.get('train_betti', 0.0):.4f})"
    if "val_rate" in row:
        errors, lines = int(row["val_errors"]), int(row["val_gt_lines"])
        parts.append(f"validation ESD rate {row['val_rate']:.4f} ({errors} errors / {lines} lines)")
    else:
        parts.append("no validation images")
    parts.append(f"{row['train_s']:.1f} s + {row['val_s']:.1f} s validation")
    return ", ".join(parts) + (", best so far" if row["best"] else "")


def _write_log(path: Path, history: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, restval="")
        writer.writeheader()
        for row in history:
            writer.writerow({k: row.get(k, "") for k in CSV_FIELDS})


def plot_curves(path: Path, history: list[dict[str, Any]], betti_start: int | None) -> None:
    """Training loss (total, pixel, Betti) and validation ESD rate per epoch as a PNG (atomic write)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for key, style in (("train_loss", "-"), ("train_pixel", "--"), ("train_betti", ":")):
        values = [r.get(key) for r in history]
        if any(v is not None and v != "" for v in values):
            ax.plot(epochs, [np.nan if v in (None, "") else v for v in values], style, label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    if betti_start is not None:
        ax.axvline(betti_start - 0.5, color="grey", lw=0.8)
    rates = [r.get("val_rate") for r in history]
    lines, labels = ax.get_legend_handles_labels()
    if any(isinstance(v, float) and math.isfinite(v) for v in rates):
        ax2 = ax.twinx()
        finite = [v if isinstance(v, float) else np.nan for v in rates]
        ax2.plot(epochs, finite, "o-", color="C3", label="val ESD rate")
        ax2.set_ylabel("validation ESD rate")
        more = ax2.get_legend_handles_labels()
        lines, labels = lines + more[0], labels + more[1]
    ax.legend(lines, labels, loc="upper right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _loader(
    ds: TrainDataset | CropDataset, order: list[int], cfg: TrainConfig, epoch: int
) -> torch.utils.data.DataLoader:
    gen = torch.Generator().manual_seed(cfg.seed * 100003 + epoch)  # worker base seeds; unused by the data
    return torch.utils.data.DataLoader(
        ds, batch_size=cfg.batch_size, sampler=order, num_workers=cfg.num_workers, generator=gen
    )


def _load_resume(path: Path, cfg: TrainConfig) -> dict[str, Any]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types for foreign/corrupt files
        raise InputError(path, f"cannot read resume checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict) or STATE_KEY not in obj:
        raise InputError(path, "not a samsem training checkpoint", "RUN_DIR/last.pt written by samsem train")
    stored = TrainConfig.from_dict(obj[STATE_KEY]["config"])
    changed = [d for d in stored.differences(cfg) if d not in RESUMABLE_CHANGES]
    if changed:
        raise ConfigError(
            f"{path} was trained with different settings ({', '.join(changed)}); "
            "use the same options, or a new --out folder to start over"
        )
    return obj


def train(
    cfg: TrainConfig,
    resume: str | Path | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train (or continue training) one model; see the module docstring for the run folder.

    resume: a ``last.pt`` to continue from; by default ``cfg.out/last.pt`` when it exists.
    on_epoch: called with every epoch's log row (restored rows of a resumed run included, in order);
    it may raise to stop the run (e.g. a pruned Optuna trial) after that epoch's checkpoint is written.
    """
    from tqdm import tqdm

    from samsem.runtime.outputs import prepare_dir

    out = Path(cfg.out)
    prepare_dir(out)  # InputError when a file is in the way
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    samples = discover_all(cfg.data)
    splits = split_samples(samples, cfg.val_fraction, cfg.test_fraction, cfg.seed, cfg.ood_ics)
    if not splits["train"]:
        raise InputError(None, "the training split is empty", "more labelled images")
    tiling = TilingConfig(cfg.patch_size, cfg.min_overlap)
    ds: TrainDataset | CropDataset
    if cfg.sampler == "crops":
        ds = CropDataset(
            splits["train"],
            cfg.crop_size,
            cfg.crops_per_epoch,
            cfg.crop_scales,
            cfg.crop_scale_probs,
            cfg.negative_fraction,
            cfg.flatten,
            cfg.augment,
            cfg.seed,
        )
    else:
        ds = TrainDataset(splits["train"], cfg.target, cfg.input_size, cfg.augment, tiling, cfg.seed)
    task = make_task(cfg, device)
    params = task.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    n_batches = math.ceil(len(ds) / cfg.batch_size)
    steps_per_epoch = math.ceil(n_batches / cfg.accumulation)
    total_steps = steps_per_epoch * cfg.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, cfg.warmup_steps, cfg.scheduler)
    )

    start_epoch, step, history = 0, 0, []
    best_epoch, best_key = -1, (math.inf, math.inf)
    resume_path = Path(resume) if resume is not None else out / "last.pt"
    if resume is not None or resume_path.is_file():
        obj = _load_resume(resume_path, cfg)
        state = obj[STATE_KEY]
        task.load_weights(obj["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        start_epoch, step, history = state["epoch"], state["step"], list(state["history"])
        best_epoch, best_key = state["best_epoch"], tuple(state["best_key"])
        if on_epoch is not None:
            for past in history:
                on_epoch(past)
    write_json(out / "config.json", cfg.to_dict())  # only once the config is known to fit the run
    write_json(out / "splits.json", {k: [s.name for s in v] for k, v in splits.items()})

    for epoch in range(start_epoch, cfg.epochs):
        betti_on = cfg.loss.betti_weight > 0 and epoch >= cfg.betti_start_epoch
        ds.set_epoch(epoch)
        task.model.train()
        t0 = time.perf_counter()
        sums: dict[str, float] = {}
        n_seen = 0
        loader = _loader(ds, epoch_order(len(ds), cfg.seed, epoch), cfg, epoch)
        desc = f"epoch {epoch + 1}/{cfg.epochs}"
        bar = tqdm(loader, desc=desc, leave=False, disable=not cfg.progress or None)
        optimizer.zero_grad(set_to_none=True)
        for i, batch in enumerate(bar):
            group_start = i - i % cfg.accumulation
            group_len = min(cfg.accumulation, n_batches - group_start)
            res = task.loss(batch, cfg.loss, betti_on)
            (res.total / group_len).backward()
            bsz = batch["image"].shape[0]
            n_seen += bsz
            for k, v in {"loss": float(res.total.detach()), **res.parts}.items():
                sums[k] = sums.get(k, 0.0) + v * bsz
            if i - group_start + 1 == group_len:
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
            bar.set_postfix(loss=f"{sums['loss'] / n_seen:.4f}")
        bar.close()
        train_s = time.perf_counter() - t0

        row: dict[str, Any] = {
            "epoch": epoch,
            "betti_on": int(betti_on),
            "lr": optimizer.param_groups[0]["lr"],
            "steps": step,
            **{f"train_{k}": v / n_seen for k, v in sums.items()},
        }
        t0 = time.perf_counter()
        if splits["val"]:
            val = validate(task, splits["val"], cfg)
            row.update({"val_rate": val["rate"], **{f"val_{f}": val[f] for f in ESD_FIELDS}})
            key = (val["rate"], row["train_loss"])
        else:
            key = (math.inf, row["train_loss"])
        row["val_s"] = time.perf_counter() - t0
        row["train_s"] = train_s
        row["best"] = int(key < best_key)
        history.append(row)
        tqdm.write(epoch_line(row, cfg.epochs), file=sys.stderr)
        if row["best"]:
            best_epoch, best_key = epoch, key
            task.save(str(out / "best.pt"), {"train_config": cfg.to_dict(), "epoch": epoch, "val": row})
        state = {
            "config": cfg.to_dict(),
            "epoch": epoch + 1,
            "step": step,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": _rng_state(),
            "history": history,
            "best_epoch": best_epoch,
            "best_key": list(best_key),
        }
        task.save(str(out / "last.pt"), {STATE_KEY: state})
        if cfg.keep_checkpoints:
            (out / "epochs").mkdir(exist_ok=True)
            task.save(str(out / "epochs" / f"epoch_{epoch:03d}.pt"), {"epoch": epoch, "val": row})
        _write_log(out / "log.csv", history)
        plot_curves(out / "curves.png", history, cfg.betti_start_epoch if cfg.betti_on_ever else None)
        if on_epoch is not None:
            on_epoch(row)

    return TrainResult(out, best_epoch, best_key[0], history)
