"""Model-family adapters: everything the training loop needs to know about one family.

A task builds its model from the :class:`~samsem.train.config.TrainConfig`, freezes what should not be
trained, turns a batch of the family-agnostic :class:`~samsem.train.data.TrainDataset` into a loss,
wraps the live model as a runtime :class:`~samsem.runtime.models.segmenter.Segmenter` for validation,
and saves and restores weights in the checkpoint format the runtime loads. Adding a family is one class here.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from samsem.errors import ConfigError
from samsem.runtime.models.segmenter import Segmenter
from samsem.train.config import TrainConfig
from samsem.train.losses import LossConfig, LossOutput, segmentation_loss


class Task(Protocol):
    """What the loop calls; ``model`` is the module being trained (on ``device``)."""

    family: str
    model: nn.Module
    device: torch.device

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


def resolve_device(name: str) -> torch.device:
    """ "auto" -> CUDA when available, else CPU; otherwise the named device (ConfigError if unusable)."""
    from samsem.runtime.models.checkpoint import torch_device

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch_device(name)


class SAM2Task:
    """SAM2 fine-tuning: one positive point per input, multimask output, best-of-3 loss + IoU head."""

    family = "sam2"

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


class LiteTask:
    """The lite CNN: the whole input in, one logit map out; trained from scratch or from a checkpoint."""

    family = "lite"

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


def make_task(cfg: TrainConfig, device: torch.device) -> Task:
    """The training task of ``cfg.family``, as its registry entry names it ("module:Class")."""
    import importlib

    from samsem.runtime.models.registry import get_family

    module, _, name = get_family(cfg.family).task.partition(":")
    return getattr(importlib.import_module(module), name)(cfg, device)
