"""Model-family adapters: everything the training loop needs to know about one family.

A task builds its model from the :class:`~samsem.train.config.TrainConfig`, freezes what should not be
trained, turns a batch of the family-agnostic :class:`~samsem.train.data.TrainDataset` into a loss,
wraps the live model as a runtime :class:`~samsem.runtime.models.segmenter.Segmenter` for validation,
and saves and restores weights in the checkpoint format the runtime loads. Each task class registers
itself for the runtime family it trains (:func:`register_task`, keyed by the family's registry name);
the runtime knows nothing of training. Adding a family's training is one class here (and its defaults
in :data:`samsem.train.config.FAMILY_DEFAULTS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import torch
from torch import nn

from samsem.errors import ConfigError
from samsem.runtime.models.registry import family_names
from samsem.runtime.models.segmenter import Segmenter
from samsem.train.config import TrainConfig
from samsem.train.losses import LossConfig, LossOutput, segmentation_loss


class Task(Protocol):
    """What the loop calls; ``model`` is the module being trained (on ``device``); ``family`` is the runtime
    family it trains."""

    family: str
    model: nn.Module
    device: torch.device

    def __init__(self, cfg: TrainConfig, device: torch.device) -> None: ...

    @staticmethod
    def memory(cfg: TrainConfig) -> MemoryCost:
        """Estimated training memory of ``cfg``, without building the model."""
        ...

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimizer updates (frozen parts excluded)."""
        ...

    def loss(self, batch: dict[str, torch.Tensor], cfg: LossConfig, betti_on: bool) -> LossOutput:
        """Forward a batch (see TrainDataset) and compute the training objective."""
        ...

    def segmenter(self) -> Segmenter:
        """The live model as a runtime segmenter (puts the model in eval mode)."""
        ...

    def weights(self) -> dict[str, torch.Tensor]:
        """State dict as stored under "model" in the checkpoint."""
        ...

    def load_weights(self, state: dict[str, torch.Tensor]) -> None:
        """Strictly load a state dict written by :meth:`weights`."""
        ...

    def save(self, path: str, extra: dict[str, Any]) -> None:
        """Write a runtime-loadable checkpoint (atomically) with ``extra`` keys added."""
        ...


@dataclass(frozen=True)
class MemoryCost:
    """Training memory of a model (fp32 on the CPU; bf16 autocast on a GPU needs less): ``fixed_bytes``
    (weights, gradients, AdamW moments, runtime) plus ``per_sample_bytes`` per sample of a batch
    (activations kept for the backward pass, growing with the input area); ``basis`` says where the
    figures come from."""

    fixed_bytes: int
    per_sample_bytes: int
    basis: str

    def total(self, batch: int) -> int:
        """Bytes a batch of ``batch`` samples needs."""
        return self.fixed_bytes + batch * self.per_sample_bytes


_MB = 1 << 20
# Per model size: (fixed MiB, activation bytes per input pixel per sample), measured with
# tools/calibrate_train_memory.py on the 2-core dev CPU (peak RSS growth over two AdamW steps, Betti
# term off; batch 1 and 2 at input 256, hiera-t also at 512, where the per-pixel figure is 13 % higher:
# the figures below are the 512 ones, or the 256 ones x 1.13). E.g. hiera-t: 874 MiB at batch 1 and
# 1035 at batch 2 (input 256), 1346 and 2075 at 512, 3470 and 5814 at 1024 (2344 bytes per pixel there:
# the estimate is 15-25 % high at 1024, on the safe side); 12 x 1024^2 inputs need 28-36 GiB. hiera-l was
# not measured: fixed from its parameter count (16 bytes per trainable parameter + 230 MiB, which fits
# t, s and b+ within 4 %), activations extrapolated linearly in embedding width x depth from t and b+.
SAM2_MEMORY = {"t": (720, 2920), "s": (870, 3310), "b+": (1440, 5230), "l": (3570, 11600)}
SAM2_SIZES = {"tiny": "t", "small": "s", "base_plus": "b+", "large": "l"}
# The lite CNN ("default"; "tiny" is smaller and costs at most this): measured at input 512, batch 1
# and 4 (478 and 1401 MiB: 1229 bytes per pixel; 1050 at input 256).
LITE_MEMORY = (175, 1230)
BETTI_BYTES_PER_SAMPLE = 16 * _MB  # the Betti term at 256 x 256: measured +5 MB per sample (hiera-t)


def _cost(fixed_mb: int, per_pixel: int, cfg: TrainConfig, basis: str) -> MemoryCost:
    per_sample = per_pixel * cfg.input_size**2 + (BETTI_BYTES_PER_SAMPLE if cfg.betti_on_ever else 0)
    return MemoryCost(fixed_mb * _MB, per_sample, basis)


def resolve_device(name: str) -> torch.device:
    """ "auto" -> CUDA when available, else CPU; otherwise the named device (ConfigError if unusable)."""
    from samsem.runtime.models.checkpoint import torch_device

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch_device(name)


_TASKS: dict[str, type[Task]] = {}
_TaskClass = TypeVar("_TaskClass", bound="type[Task]")


def register_task(task: _TaskClass) -> _TaskClass:
    """Class decorator: ``task`` trains the runtime family named by its ``family``; ConfigError for a name
    the runtime registry lacks or one that already has a task."""
    if task.family not in family_names():
        raise ConfigError(f"{task.__name__}: no runtime model family {task.family!r}")
    if task.family in _TASKS:
        raise ConfigError(
            f"model family {task.family!r} already has the training task {_TASKS[task.family].__name__}"
        )
    _TASKS[task.family] = task
    return task


@register_task
class SAM2Task:
    """SAM2 fine-tuning: one positive point per input, multimask output, best-of-3 loss + IoU head."""

    family = "sam2"

    @staticmethod
    def memory(cfg: TrainConfig) -> MemoryCost:
        """Estimated training memory of ``cfg`` (see SAM2_MEMORY; unknown configs count as hiera-l)."""
        name = "t" if cfg.model_config == "tiny" else cfg.model_config.rsplit("_", 1)[-1]
        size = SAM2_SIZES.get(name, name)
        if size in SAM2_MEMORY:
            return _cost(*SAM2_MEMORY[size], cfg, f"SAM2 hiera-{size}, measured on a CPU")
        return _cost(*SAM2_MEMORY["l"], cfg, f"{cfg.model_config}: unknown size, counted as hiera-l")

    def __init__(self, cfg: TrainConfig, device: torch.device) -> None:
        from samsem.runtime.models.registry import build_model, load_model
        from samsem.runtime.models.sam2 import SAM2Spec, tiny_spec, trainable

        if cfg.model_config == "tiny":
            self.spec = tiny_spec(cfg.input_size)
        else:
            self.spec = SAM2Spec(config=cfg.model_config, image_size=cfg.input_size)
        self.model: Any  # SAM2ImageModel
        if cfg.init_checkpoint:
            self.model = load_model(cfg.init_checkpoint, self.spec, device=str(device), family="sam2").module
        else:
            self.model = build_model(self.spec, device=str(device), seed=cfg.seed)
        self.model.train()
        self.device = device
        self.amp = cfg.amp and device.type == "cuda"
        self.n_trainable = trainable(
            self.model, cfg.train_image_encoder, cfg.train_prompt_encoder, cfg.train_mask_decoder
        )

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def loss(self, batch: dict[str, torch.Tensor], cfg: LossConfig, betti_on: bool) -> LossOutput:
        from samsem.runtime.models.sam2 import normalize

        image = torch.from_numpy(normalize(batch["image"][:, 0].numpy())).to(self.device)
        points = batch["points"].to(self.device)
        labels = batch["labels"].to(self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            masks, iou = self.model(image, points, labels)
        return segmentation_loss(masks, batch["mask"].to(self.device), cfg, betti_on, iou_pred=iou)

    def segmenter(self) -> Segmenter:
        return _segmenter(self.model, self.spec, self.device, self.amp)

    def weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.model.sam.state_dict().items()}

    def load_weights(self, state: dict[str, torch.Tensor]) -> None:
        self.model.sam.load_state_dict(state, strict=True)

    def save(self, path: str, extra: dict[str, Any]) -> None:
        from samsem.runtime.models.registry import save_model

        save_model(path, self.model, self.spec, extra)


@register_task
class LiteTask:
    """The lite CNN: the whole input in, one logit map out; trained from scratch or from a checkpoint."""

    family = "lite"

    @staticmethod
    def memory(cfg: TrainConfig) -> MemoryCost:
        """Estimated training memory of ``cfg`` (see LITE_MEMORY)."""
        return _cost(*LITE_MEMORY, cfg, "lite model, measured on a CPU")

    def __init__(self, cfg: TrainConfig, device: torch.device) -> None:
        from samsem.runtime.models.lite import LiteSpec, tiny_lite_spec
        from samsem.runtime.models.registry import build_model, load_model

        if cfg.init_checkpoint:
            loaded = load_model(cfg.init_checkpoint, device=str(device), family="lite")
            model, self.spec = loaded.module, loaded.spec
            if self.spec.input_size != cfg.input_size:
                raise ConfigError(
                    f"{cfg.init_checkpoint}: lite model input size {self.spec.input_size} differs from "
                    f"--input-size {cfg.input_size}"
                )
        else:
            if cfg.model_config not in ("default", "tiny"):
                raise ConfigError(f'lite model config must be "default" or "tiny", got {cfg.model_config!r}')
            spec_fn = LiteSpec if cfg.model_config == "default" else tiny_lite_spec
            self.spec = spec_fn(input_size=cfg.input_size)
            model = build_model(self.spec, device=str(device), seed=cfg.seed)
        self.model = model.to(device).train()
        self.device = device
        self.amp = cfg.amp and device.type == "cuda"

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def loss(self, batch: dict[str, torch.Tensor], cfg: LossConfig, betti_on: bool) -> LossOutput:
        image = batch["image"].to(self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            logits = self.model(image)
        return segmentation_loss(logits, batch["mask"].to(self.device), cfg, betti_on)

    def segmenter(self) -> Segmenter:
        return _segmenter(self.model, self.spec, self.device, self.amp)

    def weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items()}

    def load_weights(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state, strict=True)

    def save(self, path: str, extra: dict[str, Any]) -> None:
        from samsem.runtime.models.registry import save_model

        save_model(path, self.model, self.spec, extra)


def _segmenter(model: nn.Module, spec: Any, device: torch.device, amp: bool) -> Segmenter:
    """The live model as its family's runtime segmenter on the torch backend (eval mode)."""
    from samsem.runtime.backends.pytorch import TorchBackend
    from samsem.runtime.models.registry import family_of

    family = family_of(spec)
    backend = TorchBackend(model, device=str(device), precision="bf16" if amp else "fp32")
    return family.segmenter(backend, family.input_size(spec))


def task_class(family: str) -> type[Task]:
    """The training task class registered for ``family``; ConfigError naming the trainable ones otherwise."""
    if family not in _TASKS:
        raise ConfigError(
            f"no training task for model family {family!r}; expected one of {', '.join(_TASKS)}"
        )
    return _TASKS[family]


def make_task(cfg: TrainConfig, device: torch.device) -> Task:
    """The training task of ``cfg.family``."""
    return task_class(cfg.family)(cfg, device)


def training_memory(cfg: TrainConfig) -> MemoryCost:
    """Estimated memory of training ``cfg`` (the family task's ``memory``), without building the model."""
    return task_class(cfg.family).memory(cfg)
