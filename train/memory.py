"""Will a training run fit in memory? The estimate, the memory available, and the batch size that fits.

The estimate is the family task's :class:`~samsem.train.task.MemoryCost` (``fixed + batch x per
sample``, calibrated by measuring small CPU runs; see ``SAM2_MEMORY`` in :mod:`samsem.train.task`).
Available memory is the CPU's ``MemAvailable`` (``/proc/meminfo``) or the GPU's free memory; a run
may use :data:`USABLE_SHARE` of it, leaving room for the data loader, validation and the estimate's
error. Without a batch size the largest one up to the family's default that fits is chosen; a batch
size given by the user is kept, with a warning when it does not fit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from samsem.errors import ConfigError
from samsem.train.config import TrainConfig
from samsem.train.task import MemoryCost, training_memory

USABLE_SHARE = 0.8
GIB = 1 << 30


@dataclass(frozen=True)
class BatchPlan:
    """The batch size to train with, the memory it needs and what is available (bytes), and the line to
    log; ``fits`` False when a given batch size is kept although it needs more than is usable."""

    batch_size: int
    needed: int
    available: int
    fits: bool
    message: str


def available_memory(device: torch.device) -> int:
    """Bytes available to a new allocation: the GPU's free memory, or the CPU's MemAvailable."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    page = os.sysconf("SC_PAGE_SIZE")
    try:  # elsewhere: free physical pages where the system tells, else all of them
        return page * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError):
        return page * os.sysconf("SC_PHYS_PAGES")


def _gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB"


def plan_batch(
    cfg: TrainConfig,
    device: torch.device,
    given: int | None,
    available: int | None = None,
    cost: MemoryCost | None = None,
) -> BatchPlan:
    """The batch size for ``cfg`` on ``device``: ``given`` (the user's) or else the largest up to
    ``cfg.batch_size`` whose estimate fits in USABLE_SHARE of the available memory.

    ConfigError when no batch size is given and even one sample does not fit (naming what would help).
    """
    cost = cost or training_memory(cfg)
    avail = available_memory(device) if available is None else available
    usable = int(avail * USABLE_SHARE)
    where = f"{_gib(avail)} available on {device.type}"
    what = f"{cfg.family} {cfg.model_config} at input {cfg.input_size}"
    if given is not None:
        fits = cost.total(given) <= usable
        best = max(0, (usable - cost.fixed_bytes) // cost.per_sample_bytes)
        note = "" if fits else f"; it may be killed for lack of memory (batch {best} would fit)"
        msg = f"batch size {given} ({what}) needs about {_gib(cost.total(given))}, {where}{note}"
        return BatchPlan(given, cost.total(given), avail, fits, ("warning: " if not fits else "") + msg)
    batch = min(cfg.batch_size, (usable - cost.fixed_bytes) // cost.per_sample_bytes)
    if batch < 1:
        raise ConfigError(
            f"training {what} needs about {_gib(cost.total(1))} even at batch size 1, but {where} "
            f"(of which {USABLE_SHARE:.0%} is used); use a smaller --input-size, a GPU (--device cuda), or "
            "--batch-size 1 to try anyway"
        )
    default = ""
    if batch < cfg.batch_size:
        default = f"; the default {cfg.batch_size} would need {_gib(cost.total(cfg.batch_size))}"
    msg = (
        f"batch size {batch}: the largest up to {cfg.batch_size} that fits ({what} needs about "
        f"{_gib(cost.total(batch))}, {where}{default}; --batch-size overrides)"
    )
    return BatchPlan(int(batch), cost.total(int(batch)), avail, True, msg)
