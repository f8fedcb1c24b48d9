"""The SAM2 family: build from the official configs, an image-only module, its segmenter and export graphs.

* :class:`SAM2Spec` names a model: an official config (``"sam2.1_hiera_t"``, ``"sam2_hiera_l"``, ... or a
  YAML path), the input size and optional size overrides used for tiny random-weight test models
  (:func:`tiny_spec`).
* :func:`build` instantiates ``SAM2Base`` from the config (like ``sam2.build_sam``); weights are loaded
  by the family-generic :func:`~samsem.runtime.models.registry.load_model`, strictly, from an official
  ``{"model": state_dict}`` file (with its config) or a samsem checkpoint.
* :class:`SAM2ImageModel` is the single-image path of ``SAM2ImagePredictor`` batched over images, each
  with its own point prompts, split into ``encode`` and ``decode`` so that export can make two graphs
  (:class:`SAM2Encoder`, :class:`SAM2Decoder`).
* :class:`SAM2Segmenter` is what the pipeline calls: gray inputs + positive point prompts -> the
  probability of the best of SAM2's three masks.

Feature sizes are derived from the config and the input size (:func:`geometry`), never assumed to be
the 1024-px ones. ``FAMILY`` registers all of it (:mod:`~samsem.runtime.models.registry`).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from samsem.errors import ConfigError, InputError
from samsem.runtime.models import iospec
from samsem.runtime.models.checkpoint import SpecDict
from samsem.runtime.models.registry import ModelFamily
from samsem.runtime.models.segmenter import BackendSegmenter, sigmoid
from samsem.runtime.stages.multimask import select_best

NUM_MASKS = 3  # SAM2's multimask output

# ImageNet statistics SAM2 normalises with (sam2.utils.transforms.SAM2Transforms)
PIXEL_MEAN = (0.485, 0.456, 0.406)
PIXEL_STD = (0.229, 0.224, 0.225)

_SIZE_ALIASES = {"tiny": "t", "small": "s", "base_plus": "b+", "large": "l"}


@dataclass(frozen=True)
class SAM2Spec(SpecDict):
    """Which SAM2 to build.

    config: official config name (``"sam2.1_hiera_t"``; checkpoint-style aliases such as
    ``"sam2.1_hiera_tiny"`` work too) or a path to a SAM2 model YAML. image_size: side S of the square
    input. The remaining fields override the config for small test models and are None for official
    sizes: Hiera ``embed_dim``/``num_heads``/``stages``/``global_att_blocks`` and the neck's ``d_model``
    (memory attention/encoder widths then scale with ``d_model``).
    """

    label: ClassVar[str] = "SAM2"

    config: str = "sam2.1_hiera_t"
    image_size: int = 1024
    embed_dim: int | None = None
    num_heads: int | None = None
    stages: tuple[int, ...] | None = None
    global_att_blocks: tuple[int, ...] | None = None
    d_model: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.image_size, int) or self.image_size <= 0:
            raise ConfigError(f"SAM2 image_size must be a positive integer, got {self.image_size!r}")
        for name in ("embed_dim", "num_heads", "d_model"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ConfigError(f"SAM2 {name} must be a positive integer, got {value!r}")
        if self.d_model is not None and self.d_model % 8:
            raise ConfigError(
                f"SAM2 d_model must be a multiple of 8 (mask decoder heads), got {self.d_model}"
            )


def tiny_spec(image_size: int = 128) -> SAM2Spec:
    """A SAM2 with ~0.7 M parameters (Hiera embed 8, one block per stage, d_model 32) for CPU tests."""
    return SAM2Spec(
        config="sam2.1_hiera_t",
        image_size=image_size,
        embed_dim=8,
        num_heads=1,
        stages=(1, 1, 1, 1),
        global_att_blocks=(),
        d_model=32,
    )


# ----------------------------------------------------------------------------------------------- config


def official_configs() -> dict[str, Path]:
    """Official config name -> YAML file shipped with the installed sam2 package."""
    import sam2

    root = Path(sam2.__file__).parent / "configs"
    return {p.stem: p for sub in ("sam2", "sam2.1") for p in sorted((root / sub).glob("*.yaml"))}


def config_path(config: str) -> Path:
    """Resolve an official config name (or alias) or a YAML path to a file; ConfigError if unknown."""
    known = official_configs()
    if config in known:
        return known[config]
    for alias, size in _SIZE_ALIASES.items():
        if config.endswith(f"_{alias}") and f"{config.removesuffix(alias)}{size}" in known:
            return known[f"{config.removesuffix(alias)}{size}"]
    if config.endswith((".yaml", ".yml")):
        path = Path(config)
        if not path.is_file():
            raise ConfigError(f"SAM2 config file not found: {path}")
        return path
    raise ConfigError(f"unknown SAM2 config {config!r}; expected one of {', '.join(known)} or a .yaml path")


def _default(fn: Any, name: str) -> Any:
    return inspect.signature(fn).parameters[name].default


def _overrides(spec: SAM2Spec, backbone_stride: int) -> dict[str, Any]:
    """Dotted config keys -> values that apply the spec to an official config."""
    embed = spec.image_size // backbone_stride
    out: dict[str, Any] = {
        "model.image_size": spec.image_size,
        "model.memory_attention.layer.self_attention.feat_sizes": [embed, embed],
        "model.memory_attention.layer.cross_attention.feat_sizes": [embed, embed],
    }
    trunk = "model.image_encoder.trunk."
    for name in ("embed_dim", "num_heads", "stages", "global_att_blocks"):
        value = getattr(spec, name)
        if value is not None:
            out[trunk + name] = list(value) if isinstance(value, tuple) else value
    d = spec.d_model
    if d is not None:
        mem = max(d // 4, 1)
        out |= {
            "model.image_encoder.neck.d_model": d,
            "model.image_encoder.neck.position_encoding.num_pos_feats": d,
            "model.memory_attention.d_model": d,
            "model.memory_attention.layer.d_model": d,
            "model.memory_attention.layer.dim_feedforward": 8 * d,
            "model.memory_attention.layer.self_attention.embedding_dim": d,
            "model.memory_attention.layer.cross_attention.embedding_dim": d,
            "model.memory_attention.layer.cross_attention.kv_in_dim": mem,
            "model.memory_encoder.in_dim": d,
            "model.memory_encoder.out_dim": mem,
            "model.memory_encoder.position_encoding.num_pos_feats": mem,
            "model.memory_encoder.mask_downsampler.embed_dim": d,
            "model.memory_encoder.fuser.layer.dim": d,
        }
    return out


def compose_config(spec: SAM2Spec) -> Any:
    """The resolved OmegaConf config of ``spec`` (official YAML + the spec's overrides).

    The YAML is read with OmegaConf (the official configs have no defaults list, so this equals
    ``hydra.compose`` of the same file) so that configs outside sam2's package work too and hydra's
    global state is left alone.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException
    from sam2.modeling.backbones.hieradet import Hiera
    from sam2.modeling.sam2_base import SAM2Base

    path = config_path(spec.config)
    try:
        cfg = OmegaConf.load(path)
    except (OSError, OmegaConfBaseException, ValueError) as exc:
        raise ConfigError(f"cannot read SAM2 config {path}: {exc}") from exc
    target = OmegaConf.select(cfg, "model._target_")
    if target is None or not str(target).endswith("SAM2Base"):
        raise ConfigError(f"{path} is not a SAM2 model config (model._target_ = {target!r})")
    stride = OmegaConf.select(cfg, "model.backbone_stride", default=_default(SAM2Base, "backbone_stride"))
    for key, value in _overrides(spec, stride).items():
        OmegaConf.update(cfg, key, value, force_add=True)
    trunk = cfg.model.image_encoder.trunk
    embed_dim = trunk.get("embed_dim", _default(Hiera, "embed_dim"))
    stages = list(trunk.get("stages", _default(Hiera, "stages")))
    window_spec = list(trunk.get("window_spec", _default(Hiera, "window_spec")))
    if len(stages) != len(window_spec):
        raise ConfigError(f"SAM2 stages {stages} need {len(window_spec)} entries (one per Hiera stage)")
    if spec.embed_dim is not None or spec.stages is not None:
        dim_mul = trunk.get("dim_mul", _default(Hiera, "dim_mul"))
        channels = [int(embed_dim * dim_mul**i) for i in range(len(stages))][::-1]
        OmegaConf.update(cfg, "model.image_encoder.neck.backbone_channel_list", channels, force_add=True)
    OmegaConf.resolve(cfg)
    return cfg


@dataclass(frozen=True)
class SAM2Geometry:
    """Tensor sizes of a SAM2 at one input size.

    image_size S; d_model C (image embedding channels); backbone_stride (S / embedding side). The mask
    decoder's two 2x up-convolutions fix the rest: feat_s1 (C/4 channels, stride/2), feat_s0 (C/8
    channels, stride/4), low-resolution masks at stride/4.
    """

    image_size: int
    d_model: int
    backbone_stride: int

    @property
    def embed_size(self) -> int:
        return self.image_size // self.backbone_stride

    @property
    def mask_size(self) -> int:
        return 4 * self.embed_size

    def engines(self) -> dict[str, iospec.EngineSpec]:
        """Io-specs of the whole model ("model") and the split "encoder"/"decoder" engines.

        With S = image_size, C = d_model, s = backbone_stride, M = NUM_MASKS, all float32 (point labels
        too: 1 positive, 0 negative, -1 padding):

        * ``model``: image (B, 3, S, S), point_coords (B, P, 2), point_labels (B, P) -> masks
          (B, M, 4S/s, 4S/s), iou_scores (B, M)
        * ``encoder``: image -> feat_s0 (B, C/8, 4S/s, 4S/s), feat_s1 (B, C/4, 2S/s, 2S/s),
          image_embed (B, C, S/s, S/s)
        * ``decoder``: feat_s0, feat_s1, image_embed, point_coords, point_labels -> masks, iou_scores
        """
        if self.image_size % self.backbone_stride or self.d_model % 8:
            raise ValueError(
                f"image_size {self.image_size} must divide by {self.backbone_stride}, "
                f"d_model {self.d_model} by 8"
            )
        s, e, c = self.image_size, self.embed_size, self.d_model
        f32, B, P = "float32", iospec.BATCH, iospec.POINTS
        image = iospec.TensorSpec("image", f32, (B, 3, s, s))
        coords = iospec.TensorSpec("point_coords", f32, (B, P, 2))
        labels = iospec.TensorSpec("point_labels", f32, (B, P))
        feats = (
            iospec.TensorSpec("feat_s0", f32, (B, c // 8, 4 * e, 4 * e)),
            iospec.TensorSpec("feat_s1", f32, (B, c // 4, 2 * e, 2 * e)),
            iospec.TensorSpec("image_embed", f32, (B, c, e, e)),
        )
        outputs = (
            iospec.TensorSpec("masks", f32, (B, NUM_MASKS, 4 * e, 4 * e)),
            iospec.TensorSpec("iou_scores", f32, (B, NUM_MASKS)),
        )
        return {
            "model": iospec.EngineSpec("model", (image, coords, labels), outputs),
            "encoder": iospec.EngineSpec("encoder", (image,), feats),
            "decoder": iospec.EngineSpec("decoder", (*feats, coords, labels), outputs),
        }


def geometry(spec: SAM2Spec) -> SAM2Geometry:
    """Derive the tensor sizes of ``spec`` from its config; ConfigError if S does not fit the network."""
    from sam2.modeling.backbones.hieradet import Hiera
    from sam2.modeling.sam2_base import SAM2Base

    model = compose_config(spec).model
    stride = int(model.get("backbone_stride", _default(SAM2Base, "backbone_stride")))
    if not model.get("use_high_res_features_in_sam", False):
        raise ConfigError(f"{spec.config}: the image model needs use_high_res_features_in_sam=true")
    trunk = model.image_encoder.trunk
    window0 = int(trunk.get("window_spec", _default(Hiera, "window_spec"))[0])
    # the lowest Hiera level (stride 2 * backbone_stride) must be integral and the first level
    # (stride backbone_stride / 4) must tile the windowed positional embedding
    multiple = math.lcm(2 * stride, (stride // 4) * window0)
    if spec.image_size % multiple:
        raise ConfigError(f"SAM2 image_size must be a multiple of {multiple}, got {spec.image_size}")
    return SAM2Geometry(spec.image_size, int(model.image_encoder.neck.d_model), stride)


# ----------------------------------------------------------------------------------------------- build


def build(spec: SAM2Spec, seed: int | None = None) -> nn.Module:
    """``SAM2Base`` of ``spec`` with random weights (CPU, eval mode), instantiated from its config like
    ``sam2.build_sam``; seed None uses the global RNG, otherwise the global RNG is left untouched."""
    from hydra.utils import instantiate

    geometry(spec)  # validates the input size before building
    cfg = compose_config(spec)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        return instantiate(cfg.model, _recursive_=True).eval()


# ------------------------------------------------------------------------------------------ image model


class SAM2ImageModel(nn.Module):
    """SAM2 on single images with point prompts, batched: B images, each with its own P points.

    Replicates ``SAM2ImagePredictor.set_image`` + ``predict(multimask_output=True)`` (without the final
    clamp of the low-resolution logits to [-32, 32] and without upsampling). ``image``: (B, 3, S, S)
    float32, ImageNet-normalised; ``point_coords``: (B, P, 2) float32 (x, y) in input pixels;
    ``point_labels``: (B, P) float (1 positive, 0 negative, -1 padding). Outputs: masks (B, 3, S/4, S/4)
    float32 logits, iou_scores (B, 3) float32.
    """

    def __init__(self, sam: Any) -> None:
        """sam: a ``SAM2Base`` (typed Any: its submodules are reached by attribute)."""
        super().__init__()
        if not sam.use_high_res_features_in_sam:
            raise ConfigError("SAM2ImageModel needs a SAM2 built with use_high_res_features_in_sam=true")
        self.sam: Any = sam
        self.geometry = SAM2Geometry(int(sam.image_size), int(sam.hidden_dim), int(sam.backbone_stride))

    @property
    def image_size(self) -> int:
        return self.geometry.image_size

    def engines(self) -> dict[str, iospec.EngineSpec]:
        """Io-specs of this model (see :meth:`SAM2Geometry.engines`); "model" is :meth:`forward`'s."""
        return self.geometry.engines()

    def encode(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """image (B, 3, S, S) -> feat_s0 (B, C/8, S/4, S/4), feat_s1 (B, C/4, S/8, S/8),
        image_embed (B, C, S/16, S/16) (with the no-memory embedding added when the config says so)."""
        fpn = self.sam.image_encoder(image)["backbone_fpn"][-self.sam.num_feature_levels :]
        decoder = self.sam.sam_mask_decoder
        feat_s0 = decoder.conv_s0(fpn[0])
        feat_s1 = decoder.conv_s1(fpn[1])
        image_embed = fpn[2]
        if self.sam.directly_add_no_mem_embed:
            image_embed = image_embed + self.sam.no_mem_embed.reshape(1, -1, 1, 1)
        return feat_s0, feat_s1, image_embed

    def decode(
        self,
        feat_s0: torch.Tensor,
        feat_s1: torch.Tensor,
        image_embed: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder features + points (B, P, 2), labels (B, P) -> masks (B, 3, S/4, S/4), iou (B, 3)."""
        prompt = self.sam.sam_prompt_encoder
        # what PromptEncoder.forward does for points without boxes/masks, minus its empty-tensor concat;
        # the random-Fourier positional encodings stay float32 under autocast (sin/cos of products
        # of coordinates lose all precision in 16-bit floats)
        with torch.autocast(point_coords.device.type, enabled=False):
            coords = point_coords.to(torch.float32)
            sparse = prompt._embed_points(coords, point_labels.to(torch.float32), pad=True)
            image_pe = prompt.get_dense_pe()
        dense = prompt.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(
            image_embed.shape[0], -1, image_embed.shape[2], image_embed.shape[3]
        )
        masks, iou, _, _ = self.sam.sam_mask_decoder(
            image_embeddings=image_embed,
            image_pe=image_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
            repeat_image=False,
            high_res_features=[feat_s0, feat_s1],
        )
        return masks, iou

    def forward(
        self, image: torch.Tensor, point_coords: torch.Tensor, point_labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, S, S), (B, P, 2), (B, P) -> masks (B, 3, S/4, S/4) logits, iou_scores (B, 3)."""
        return self.decode(*self.encode(image), point_coords, point_labels)


def trainable(model: nn.Module, image_encoder: bool, prompt_encoder: bool, mask_decoder: bool) -> int:
    """Set requires_grad for fine-tuning; returns the number of trainable parameters.

    ``model`` is a SAM2Base or SAM2ImageModel. The no-memory embedding follows ``image_encoder`` (it is
    added to the image embedding); conv_s0/conv_s1 belong to the mask decoder, as in SAM2. The video
    memory modules, unused on images, are always frozen.
    """
    sam = model.sam if isinstance(model, SAM2ImageModel) else model
    sam.requires_grad_(False)
    sam.image_encoder.requires_grad_(image_encoder)
    sam.no_mem_embed.requires_grad_(image_encoder)
    sam.sam_prompt_encoder.requires_grad_(prompt_encoder)
    sam.sam_mask_decoder.requires_grad_(mask_decoder)
    return sum(p.numel() for p in sam.parameters() if p.requires_grad)


# ------------------------------------------------------------------------------------------- segmenter


_MEAN = np.asarray(PIXEL_MEAN, np.float32).reshape(1, 3, 1, 1)
_STD = np.asarray(PIXEL_STD, np.float32).reshape(1, 3, 1, 1)


def normalize(images: np.ndarray) -> np.ndarray:
    """images (B, S, S) float32 in [0, 1] -> (B, 3, S, S) float32, gray replicated to RGB and normalised
    with SAM2's ImageNet mean/std (as SAM2ImagePredictor's transforms do after ToTensor)."""
    return ((images[:, None, :, :] - _MEAN) / _STD).astype(np.float32, copy=False)


class SAM2Segmenter(BackendSegmenter):
    """Segmenter over a SAM2 backend (io-spec "model" engine); every point prompt is positive."""

    uses_prompts = True

    def predict(self, images: np.ndarray, points: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """images (B, S, S) float32 in [0, 1], points (B, P, 2) float32 (x, y) input pixels ->
        probs (B, S/4, S/4) float32 (sigmoid of the best-scoring mask's logits), scores (B,) float32."""
        s = self.input_size
        if images.ndim != 3 or images.shape[1:] != (s, s):
            raise InputError(None, f"SAM2 images have shape {images.shape}", f"(B, {s}, {s})")
        if points is None:
            raise InputError(None, "SAM2 needs point prompts, got None", "points (B, P, 2)")
        if points.ndim != 3 or points.shape[0] != images.shape[0] or points.shape[2] != 2:
            raise InputError(None, f"SAM2 points have shape {points.shape}", f"({images.shape[0]}, P, 2)")
        coords = np.ascontiguousarray(points, dtype=np.float32)
        out = self.backend.run(
            {
                "image": normalize(np.asarray(images, dtype=np.float32)),
                "point_coords": coords,
                "point_labels": np.ones(coords.shape[:2], np.float32),
            }
        )
        best, scores = select_best(out["masks"], out["iou_scores"])
        return sigmoid(best), scores.astype(np.float32, copy=False)

    def predict_tensors(
        self, images: torch.Tensor, points: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`predict` on tensors of the backend's device: images (B, S, S) float32, points (B, P, 2)
        float32 -> probs (B, S/4, S/4) float32, scores (B,) float32 (same device)."""
        if points is None:
            raise InputError(None, "SAM2 needs point prompts, got None", "points (B, P, 2)")
        mean = images.new_tensor(PIXEL_MEAN).view(1, 3, 1, 1)
        std = images.new_tensor(PIXEL_STD).view(1, 3, 1, 1)
        coords = points.to(torch.float32).contiguous()
        out = self.tensor_backend().run_tensors(
            {
                "image": ((images[:, None] - mean) / std).contiguous(),
                "point_coords": coords,
                "point_labels": torch.ones(coords.shape[:2], dtype=torch.float32, device=coords.device),
            }
        )
        iou = out["iou_scores"]
        best = iou.argmax(dim=1)  # first maximum on ties, as select_best
        rows = torch.arange(len(best), device=best.device)
        logits = out["masks"][rows, best].clamp(-80.0, 80.0)
        return 1.0 / (1.0 + torch.exp(-logits)), iou[rows, best].to(torch.float32)


# -------------------------------------------------------------------------------------------- export


class ChannelLayerNorm(nn.Module):
    """LayerNorm over dim 1 of (B, C, H, W), sharing the weight/bias of the module it replaces."""

    def __init__(self, weight: nn.Parameter, bias: nn.Parameter, eps: float) -> None:
        super().__init__()
        self.weight = weight
        self.bias = bias
        self.eps = eps
        self.channels = int(weight.shape[0])  # a Python int: tracing keeps it constant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) -> (B, C, H, W), each pixel's channels normalised."""
        y = F.layer_norm(x.permute(0, 2, 3, 1), (self.channels,), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


def swap_layernorm2d(module: nn.Module) -> int:
    """Replace every sam2 ``LayerNorm2d`` inside ``module`` by :class:`ChannelLayerNorm` (in place).

    Returns the number replaced.
    """
    from sam2.modeling.sam2_utils import LayerNorm2d

    count = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LayerNorm2d):
                setattr(parent, name, ChannelLayerNorm(child.weight, child.bias, child.eps))
                count += 1
    return count


class SAM2Encoder(nn.Module):
    """image (B, 3, S, S) -> feat_s0, feat_s1, image_embed (io-spec "encoder")."""

    def __init__(self, model: SAM2ImageModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.model.encode(image)


class SAM2Decoder(nn.Module):
    """feat_s0, feat_s1, image_embed, point_coords (B, P, 2), point_labels (B, P) -> masks, iou_scores."""

    def __init__(self, model: SAM2ImageModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        feat_s0: torch.Tensor,
        feat_s1: torch.Tensor,
        image_embed: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.decode(feat_s0, feat_s1, image_embed, point_coords, point_labels)


# ---------------------------------------------------------------------------------------------- family


def _export_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Graph name -> module to export: the "encoder" and "decoder" halves and the whole "model".

    SAM2's LayerNorm2d modules are swapped for :class:`ChannelLayerNorm` first (in place).
    """
    if not isinstance(model, SAM2ImageModel):
        raise TypeError(f"expected a SAM2ImageModel, got {type(model).__name__}")
    swap_layernorm2d(model)
    return {"encoder": SAM2Encoder(model), "decoder": SAM2Decoder(model), "model": model}


def _io(spec: SAM2Spec) -> dict[str, iospec.EngineSpec]:
    return geometry(spec).engines()


def _input_size(spec: SAM2Spec) -> int:
    return spec.image_size


def _config_name(spec: SAM2Spec) -> str:
    return spec.config


def _named_spec(config: str, image_size: int | None) -> SAM2Spec:
    """The spec of official weights named by a config name or alias (ConfigError when unknown) or a YAML
    path (read when the model is built), at ``image_size`` (default 1024)."""
    if not config.endswith((".yaml", ".yml")):
        config_path(config)
    return SAM2Spec(config=config, image_size=image_size or SAM2Spec.image_size)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.sam if isinstance(model, SAM2ImageModel) else model


FAMILY = ModelFamily(
    name="sam2",
    label="SAM2",
    spec_type=SAM2Spec,
    build=build,
    wrap=SAM2ImageModel,
    unwrap=_unwrap,
    io=_io,
    input_size=_input_size,
    spec_name=_config_name,
    graphs=("encoder", "decoder"),
    preprocessing={"channels": "gray replicated to 3", "mean": list(PIXEL_MEAN), "std": list(PIXEL_STD)},
    segmenter=SAM2Segmenter,
    export_modules=_export_modules,
    named_spec=_named_spec,
)
