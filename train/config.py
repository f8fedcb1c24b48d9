"""The training configuration: frozen dataclasses for augmentation, loss and the whole run.

Kept free of heavy imports (torch, OpenCV) so that the command line can show the defaults cheaply.

Defaults are the paper's: AdamW with lr 1.111e-5 and weight decay 2.059e-6, batch size 12, 50 epochs of
which the first 35 use the pixel loss only (``betti_start_epoch``), alpha 0.6, lambda 0.375. The config is
saved as JSON in the run folder and inside every checkpoint, and a resumed run must match it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from samsem.errors import ConfigError, InputError
from samsem.runtime.models.registry import family_names

FILTRATIONS = ("sublevel", "superlevel", "bothlevels")
FAMILIES = family_names()
# Defaults that differ by family, applied under the user's settings: the lite model trains from scratch
# (higher lr, the EAL-ICNet loss 0.5 BCE + 0.5 Dice, no Betti term unless asked) at its native 512 input.
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "sam2": {},
    "lite": {
        "model_config": "default",
        "input_size": 512,
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "batch_size": 8,
        "scheduler": "cosine",
        "loss__alpha": 0.5,
        "loss__betti_weight": 0.0,
    },
}
TARGETS = ("model1", "model2", "single")  # whole images, patches, or both mixed
SCHEDULERS = ("constant", "cosine")
SAMPLERS = ("tiles", "crops")  # the runtime's whole images and patches, or random crops of a pool
# fields that may change when a run is resumed (they do not change what was trained so far)
RESUMABLE_CHANGES = frozenset({"epochs", "device", "num_workers", "val_batch_size", "progress"})


@dataclass(frozen=True)
class AugmentConfig:
    """p: probability of augmenting a sample at all; intensity: the shared strength i in (0, 1]."""

    p: float = 0.5
    intensity: float = 0.25

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise ConfigError(f"augmentation probability p must lie in [0, 1], got {self.p}")
        if not 0.0 < self.intensity <= 1.0:
            raise ConfigError(f"augmentation intensity must lie in (0, 1], got {self.intensity}")


@dataclass(frozen=True)
class LossConfig:
    """Loss weights and Betti-matching parameters (defaults from the paper).

    alpha: weight of BCE against Dice; betti_weight: lambda, the weight of the Betti term once it is
    switched on (``TrainConfig.betti_start_epoch``); filtration, barcode_length_threshold,
    push_unmatched_to_1_0: as in topolosses' BettiMatchingLoss; betti_pad: one pixel of background
    around both maps (topolosses' ``sphere``) so lines crossing a patch border count; betti_size:
    side of the square grid the Betti term is computed on; iou_head_weight: MSE between predicted and
    actual mask IoU (models with a quality head); iou_reward, count_penalty, epe_penalty: optional
    SegSEM-style terms; epe_max_px: distance cap (pixels at loss resolution) of the edge-placement term;
    gap_weight: weight of the BCE on the narrow background gaps between lines (gaps a closing with a
    ``gap_px`` square fills), a cheap topology-aware term against shorts.
    """

    alpha: float = 0.6
    betti_weight: float = 0.375
    filtration: str = "sublevel"
    barcode_length_threshold: float = 0.345
    push_unmatched_to_1_0: bool = True
    betti_pad: bool = True
    betti_size: int = 256
    iou_head_weight: float = 1.0
    iou_reward: float = 0.0
    count_penalty: float = 0.0
    epe_penalty: float = 0.0
    epe_max_px: float = 16.0
    gap_weight: float = 0.0
    gap_px: int = 7

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"alpha must lie in [0, 1], got {self.alpha}")
        if self.filtration not in FILTRATIONS:
            raise ConfigError(f"filtration must be one of {FILTRATIONS}, got {self.filtration!r}")
        if self.betti_size < 4:
            raise ConfigError(f"betti_size must be >= 4, got {self.betti_size}")
        if self.gap_px < 3 or self.gap_px % 2 == 0:
            raise ConfigError(f"gap_px must be an odd number >= 3, got {self.gap_px}")
        for name in (
            "betti_weight",
            "iou_head_weight",
            "iou_reward",
            "count_penalty",
            "epe_penalty",
            "gap_weight",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.epe_max_px <= 0:
            raise ConfigError(f"epe_max_px must be > 0, got {self.epe_max_px}")


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run.

    data: dataset folders (see :mod:`samsem.train.data`); out: run folder. family/model_config: model
    family ("sam2" or "lite") and its size ("sam2.1_hiera_t", ..., "default" for lite, or "tiny" for a
    small random test model; see FAMILY_DEFAULTS for the lite family's own defaults); init_checkpoint:
    weights to start from (official SAM2 or samsem checkpoint). input_size: model input side S.
    target: "model1" (whole images), "model2" (patches of ``patch_size`` with ``min_overlap``) or
    "single" (one model for both). betti_start_epoch: first epoch (0-based) with the Betti term on.
    batch_size x accumulation samples make one optimizer step. amp: bf16 autocast on CUDA (ignored on
    CPU). train_*: which SAM2 parts are fine-tuned. val_fraction/test_fraction: per-IC split shares
    (the rest trains); ood_ics: ICs held out entirely (their images form the "ood" split).
    esd_border/esd_min_area: ESD rules of the validation metric. grad_clip: max gradient norm (0 = off).
    sampler: "tiles" (the runtime's whole images and patches, ``target``) or "crops": an epoch is
    ``crops_per_epoch`` random ``crop_size`` crops drawn from the training images (each --data folder
    equally often), each cut at a downscale factor drawn from ``crop_scales`` with ``crop_scale_probs``
    (1 = native pixels as model 2 sees them, 2 and 4 = area-downscaled as model 1 sees a larger image),
    a share ``negative_fraction`` of them centred where there is no metal (hard negatives).
    flatten: background-flattening window of the crops sampler's inputs and of validation (0 = off;
    default the runtime's).
    Images whose manifest lists the "inverted" effect are mapped with dark metal (as ``--metal dark``).
    keep_checkpoints: also keep every epoch's weights as ``epochs/epoch_NNN.pt`` (learning curves).
    """

    data: tuple[str, ...] = ()
    out: str = "run"
    family: str = "sam2"
    model_config: str = "sam2.1_hiera_t"
    init_checkpoint: str | None = None
    input_size: int = 1024
    target: str = "single"
    patch_size: int = 512
    min_overlap: float = 0.10
    epochs: int = 50
    betti_start_epoch: int = 35
    batch_size: int = 12
    accumulation: int = 1
    lr: float = 1.111e-5
    weight_decay: float = 2.059e-6
    scheduler: str = "constant"
    warmup_steps: int = 0
    grad_clip: float = 0.0
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    train_image_encoder: bool = True
    train_prompt_encoder: bool = True
    train_mask_decoder: bool = True
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    ood_ics: tuple[str, ...] = ()
    esd_border: int = 35
    esd_min_area: int = 35
    val_batch_size: int = 8
    num_workers: int = 0
    progress: bool = True
    sampler: str = "tiles"
    crop_size: int = 256
    crops_per_epoch: int = 2048
    crop_scales: tuple[int, ...] = (1, 2, 4)
    crop_scale_probs: tuple[float, ...] = (0.6, 0.3, 0.1)
    negative_fraction: float = 0.15
    flatten: int = 128  # the runtime's default window (PipelineConfig.flatten)
    keep_checkpoints: bool = False

    def __post_init__(self) -> None:
        checks = [
            (self.family in FAMILIES, f"family must be one of {FAMILIES}, got {self.family!r}"),
            (self.target in TARGETS, f"target must be one of {TARGETS}, got {self.target!r}"),
            (self.scheduler in SCHEDULERS, f"scheduler must be one of {SCHEDULERS}, got {self.scheduler!r}"),
            (self.input_size > 0, f"input_size must be positive, got {self.input_size}"),
            (self.patch_size > 0, f"patch_size must be positive, got {self.patch_size}"),
            (0.0 <= self.min_overlap < 1.0, f"min_overlap must lie in [0, 1), got {self.min_overlap}"),
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.betti_start_epoch >= 0, f"betti_start_epoch must be >= 0, got {self.betti_start_epoch}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.accumulation >= 1, f"accumulation must be >= 1, got {self.accumulation}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}"),
            (self.grad_clip >= 0, f"grad_clip must be >= 0, got {self.grad_clip}"),
            (
                min(self.val_fraction, self.test_fraction) >= 0
                and self.val_fraction + self.test_fraction < 1,
                f"need val_fraction, test_fraction >= 0 with sum < 1, got {self.val_fraction}, "
                f"{self.test_fraction}",
            ),
            (self.esd_border >= 0 and self.esd_min_area >= 0, "esd_border and esd_min_area must be >= 0"),
            (self.val_batch_size >= 1, f"val_batch_size must be >= 1, got {self.val_batch_size}"),
            (self.num_workers >= 0, f"num_workers must be >= 0, got {self.num_workers}"),
            (self.sampler in SAMPLERS, f"sampler must be one of {SAMPLERS}, got {self.sampler!r}"),
            (self.crop_size >= 32, f"crop_size must be >= 32, got {self.crop_size}"),
            (self.crops_per_epoch >= 1, f"crops_per_epoch must be >= 1, got {self.crops_per_epoch}"),
            (
                len(self.crop_scales) == len(self.crop_scale_probs) >= 1
                and all(s >= 1 for s in self.crop_scales)
                and all(p >= 0 for p in self.crop_scale_probs)
                and sum(self.crop_scale_probs) > 0,
                f"crop_scales {self.crop_scales} (>= 1) and crop_scale_probs {self.crop_scale_probs} (>= 0, "
                "not all 0) need the same length",
            ),
            (
                0 <= self.negative_fraction <= 1,
                f"negative_fraction must lie in [0, 1], got {self.negative_fraction}",
            ),
            (self.flatten >= 0, f"flatten must be >= 0 (0: off), got {self.flatten}"),
            (
                any((self.train_image_encoder, self.train_prompt_encoder, self.train_mask_decoder)),
                "at least one of image encoder, prompt encoder and mask decoder must be trained",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @property
    def betti_on_ever(self) -> bool:
        """Whether any epoch of this run uses the Betti term."""
        return self.loss.betti_weight > 0 and self.betti_start_epoch < self.epochs

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON- and checkpoint-safe: tuples become lists)."""

        def plain(v: Any) -> Any:
            if isinstance(v, dict):
                return {k: plain(x) for k, x in v.items()}
            if isinstance(v, tuple | list):
                return [plain(x) for x in v]
            return v

        return plain(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ConfigError."""
        if not isinstance(data, dict):
            raise ConfigError(f"a training config must be a dict, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown training config field(s): {', '.join(unknown)}")
        values = dict(data)
        for name, sub in (("augment", AugmentConfig), ("loss", LossConfig)):
            if name in values:
                sub_known = {f.name for f in fields(sub)}
                bad = sorted(set(values[name]) - sub_known)
                if bad:
                    raise ConfigError(f"unknown {name} config field(s): {', '.join(bad)}")
                values[name] = sub(**values[name])
        for name in ("data", "ood_ics", "crop_scales", "crop_scale_probs"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)

    def with_overrides(self, **changes: Any) -> TrainConfig:
        """Copy with top-level fields changed; ``augment__p``-style keys change nested fields."""
        top = {k: v for k, v in changes.items() if "__" not in k}
        nested: dict[str, dict[str, Any]] = {}
        for key, value in changes.items():
            if "__" in key:
                outer, inner = key.split("__", 1)
                nested.setdefault(outer, {})[inner] = value
        for outer, fields_changed in nested.items():
            top[outer] = replace(getattr(self, outer), **fields_changed)
        return replace(self, **top)

    def differences(self, other: TrainConfig) -> list[str]:
        """Dotted names of the fields whose values differ from ``other``'s."""
        a, b = self.to_dict(), other.to_dict()
        out = []
        for key in a:
            if isinstance(a[key], dict):
                out += [f"{key}.{k}" for k in a[key] if a[key][k] != b[key][k]]
            elif a[key] != b[key]:
                out.append(key)
        return out


def family_config(family: str) -> TrainConfig:
    """TrainConfig defaults for ``family`` (ConfigError for an unknown family)."""
    if family not in FAMILY_DEFAULTS:
        raise ConfigError(f"family must be one of {FAMILIES}, got {family!r}")
    return TrainConfig(family=family).with_overrides(**FAMILY_DEFAULTS[family])


def load_config(path: str | Path) -> TrainConfig:
    """Read a config JSON written by a run (``RUN_DIR/config.json``)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(path, f"cannot read training config ({exc})", "a JSON file") from None
    try:
        return TrainConfig.from_dict(data)
    except (ConfigError, TypeError) as exc:
        raise InputError(path, f"invalid training config: {exc}") from None
