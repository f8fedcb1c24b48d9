"""The lite family: a compact CNN + attention segmenter (in the spirit of EAL-ICNet) for CPU inference.

:class:`LiteNet` maps image (B, 1, S, S) float32 in [0, 1] to metal logits (B, 1, S, S) float32 (io-spec
:meth:`LiteSpec.engines`):

* no convolution runs at full resolution: the image is packed losslessly into 4 channels at half
  resolution (pixel unshuffle) and the logits are unpacked the same way (pixel shuffle), so thin-line
  detail survives while every layer runs at stride >= 2 (the full-resolution layers dominated CPU time);
* a four-stage encoder (strides 2, 4, 8, 16 for the default four widths): a 3x3 stem, then per stage a
  depthwise-separable stride-2 downsampling and inverted-residual blocks;
* long-range context at the lowest resolution: transformer blocks with a depthwise-conv positional
  encoding, efficient multi-head self-attention whose keys/values are spatially reduced, a conv FFN,
  then a squeeze-and-excitation channel attention;
* an FPN decoder (upsample x2 + 1x1 lateral of each encoder stage + depthwise-separable fusion) down to
  stride 4 and a head at stride 2 on the decoder and the first stage's features.

There is no input normalisation step: the image goes straight into the stem conv whose BatchNorm
normalises it. The forward pass has no data-dependent control flow and uses ONNX-exportable ops only
(conv, batch norm, matmul, softmax, bilinear resize, depth-to-space and back). Checkpoints use the
samsem format of :mod:`samsem.runtime.models.checkpoint` with family ``"lite"``; :class:`LiteSegmenter`
is what the pipeline calls, and ``FAMILY`` registers the family
(:mod:`~samsem.runtime.models.registry`).
"""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class LiteSpec(SpecDict):
    """Architecture of a :class:`LiteNet`.

    input_size: side S of the square input (512 keeps 512-px patches at native resolution);
    widths/depths: channels and inverted-residual blocks of each encoder stage (stage i has stride
    2**(i+1)); expansion: inverted-residual / FFN channel multiplier; attn_blocks/heads: transformer
    blocks and attention heads at the lowest resolution; kv_reduction: spatial reduction of the
    attention keys/values; se_reduction: squeeze-and-excitation channel reduction; decoder_width:
    channels of the FPN decoder (strides 4 to 2**len(widths)); head_width: channels of the stride-2
    head.
    """

    label: ClassVar[str] = "lite"

    input_size: int = 512
    widths: tuple[int, ...] = (16, 32, 64, 128)
    depths: tuple[int, ...] = (1, 2, 2, 2)
    expansion: int = 2
    attn_blocks: int = 2
    heads: int = 4
    kv_reduction: int = 2
    se_reduction: int = 4
    decoder_width: int = 32
    head_width: int = 16

    def __post_init__(self) -> None:
        positive = (
            "input_size",
            "expansion",
            "heads",
            "kv_reduction",
            "se_reduction",
            "decoder_width",
            "head_width",
        )
        for name in positive:
            _check_int(name, getattr(self, name), 1)
        _check_int("attn_blocks", self.attn_blocks, 0)
        for name in ("widths", "depths"):
            if not isinstance(getattr(self, name), tuple):
                raise ConfigError(f"lite {name} must be a tuple, got {getattr(self, name)!r}")
        if len(self.widths) < 2 or len(self.widths) != len(self.depths):
            raise ConfigError(
                f"lite widths {self.widths} and depths {self.depths} need the same length, at least 2"
            )
        for w, d in zip(self.widths, self.depths, strict=True):
            _check_int("widths entry", w, 1)
            _check_int("depths entry", d, 0)
        if self.widths[-1] % self.heads:
            raise ConfigError(f"lite widths[-1] = {self.widths[-1]} must be a multiple of heads {self.heads}")
        if self.widths[-1] < self.se_reduction:
            raise ConfigError(f"lite widths[-1] = {self.widths[-1]} < se_reduction {self.se_reduction}")
        multiple = self.stride * self.kv_reduction
        if self.input_size % multiple:
            raise ConfigError(f"lite input_size must be a multiple of {multiple}, got {self.input_size}")

    @property
    def stride(self) -> int:
        """Total encoder stride (S / side of the lowest-resolution features)."""
        return 2 ** len(self.widths)

    def engines(self) -> dict[str, iospec.EngineSpec]:
        """Io-spec of the model: {"model": image (B, 1, S, S) -> logits (B, 1, S, S)}, float32."""
        s = self.input_size
        image = iospec.TensorSpec("image", "float32", (iospec.BATCH, 1, s, s))
        logits = iospec.TensorSpec("logits", "float32", (iospec.BATCH, 1, s, s))
        return {"model": iospec.EngineSpec("model", (image,), (logits,))}


def _check_int(name: str, value: Any, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"lite {name} must be an integer >= {minimum}, got {value!r}")


# ---------------------------------------------------------------------------------------------- layers


def conv_bn(
    cin: int,
    cout: int,
    kernel: int = 1,
    stride: int = 1,
    groups: int = 1,
    act: bool = True,
    padding: int | None = None,
) -> nn.Sequential:
    """Conv (no bias, padding kernel // 2 unless given) + BatchNorm (+ ReLU):
    (B, cin, H, W) -> (B, cout, H/stride, W/stride)."""
    pad = kernel // 2 if padding is None else padding
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, pad, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def separable(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """Depthwise 3x3 (stride) + pointwise conv, each with BatchNorm, ReLU at the end."""
    return nn.Sequential(conv_bn(cin, cin, 3, stride, groups=cin, act=False), conv_bn(cin, cout))


class InvertedResidual(nn.Module):
    """x + PW(ReLU(PW_expand(DW3x3(x)))): (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channels: int, expansion: int) -> None:
        super().__init__()
        hidden = channels * expansion
        self.body = nn.Sequential(
            conv_bn(channels, channels, 3, groups=channels, act=False),
            conv_bn(channels, hidden),
            conv_bn(hidden, channels, act=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class EfficientAttention(nn.Module):
    """Multi-head self-attention with keys/values spatially reduced by ``reduction`` (depthwise conv).

    (B, C, H, W) -> (B, C, H, W); queries at every position, H*W/reduction**2 keys.
    """

    def __init__(self, dim: int, heads: int, reduction: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.q = nn.Conv2d(dim, dim, 1)
        self.reduce = (
            conv_bn(dim, dim, reduction, reduction, groups=dim, act=False, padding=0)
            if reduction > 1
            else None
        )
        self.kv = nn.Conv2d(dim, 2 * dim, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        d = c // self.heads
        q = self.q(x).reshape(b, self.heads, d, h * w).transpose(2, 3)  # (B, heads, N, d)
        kv = self.kv(x if self.reduce is None else self.reduce(x)).reshape(b, 2, self.heads, d, -1)
        k, v = kv[:, 0], kv[:, 1]  # (B, heads, d, M)
        attn = torch.softmax((q @ k) * self.scale, dim=-1)  # (B, heads, N, M)
        out = (attn @ v.transpose(2, 3)).transpose(2, 3).reshape(b, c, h, w)
        return self.proj(out)


class ContextBlock(nn.Module):
    """Transformer block on feature maps: x + PE(x); x + Attn(BN(x)); x + FFN(BN(x)).

    PE is a depthwise 3x3 conv (size-agnostic positional information); FFN is PW expand -> DW 3x3 ->
    GELU -> PW. (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, dim: int, heads: int, reduction: int, expansion: int) -> None:
        super().__init__()
        hidden = dim * expansion
        self.pos = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = EfficientAttention(dim, heads, reduction)
        self.norm2 = nn.BatchNorm2d(dim)
        self.ffn = nn.Sequential(
            nn.Conv2d(dim, hidden, 1),
            nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden),
            nn.GELU(),
            nn.Conv2d(hidden, dim, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos(x)
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class SqueezeExcite(nn.Module):
    """Channel attention: x * sigmoid(MLP(global average of x)); (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, dim: int, reduction: int) -> None:
        super().__init__()
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(dim, dim // reduction, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(dim // reduction, dim, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


def _up2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


# ----------------------------------------------------------------------------------------------- model


def tiny_lite_spec(input_size: int = 64) -> LiteSpec:
    """A very small LiteSpec for tests and smoke runs (a few thousand parameters)."""
    return LiteSpec(
        input_size=input_size,
        widths=(8, 8, 16, 16),
        depths=(1, 1, 1, 1),
        attn_blocks=1,
        heads=1,
        decoder_width=8,
        head_width=8,
    )


class LiteNet(nn.Module):
    """Compact segmenter: image (B, 1, S, S) float32 in [0, 1] -> logits (B, 1, S, S) float32."""

    def __init__(self, spec: LiteSpec) -> None:
        super().__init__()
        self.spec = spec
        w, dec = spec.widths, spec.decoder_width
        self.unshuffle = nn.PixelUnshuffle(2)
        self.stem = conv_bn(4, w[0], 3)
        self.stages = nn.ModuleList()
        for i, (width, depth) in enumerate(zip(w, spec.depths, strict=True)):
            blocks: list[nn.Module] = [] if i == 0 else [separable(w[i - 1], width, stride=2)]
            blocks += [InvertedResidual(width, spec.expansion) for _ in range(depth)]
            self.stages.append(nn.Sequential(*blocks))
        self.context = nn.Sequential(
            *[
                ContextBlock(w[-1], spec.heads, spec.kv_reduction, spec.expansion)
                for _ in range(spec.attn_blocks)
            ],
            SqueezeExcite(w[-1], spec.se_reduction),
        )
        self.lateral = nn.ModuleList(conv_bn(width, dec, act=False) for width in w[1:])
        self.fuse = nn.ModuleList(separable(dec, dec) for _ in w[2:])
        self.head = nn.Sequential(
            conv_bn(dec + w[0], spec.head_width),
            separable(spec.head_width, spec.head_width),
            nn.Conv2d(spec.head_width, 4, 1),
            nn.PixelShuffle(2),
        )

    def engines(self) -> dict[str, iospec.EngineSpec]:
        """Io-spec of this model (see :meth:`LiteSpec.engines`)."""
        return self.spec.engines()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image (B, 1, S, S) float32 in [0, 1] -> logits (B, 1, S, S) float32."""
        x = self.stem(self.unshuffle(image))  # (B, w0, S/2, S/2)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        top = self.lateral[-1](self.context(feats[-1]))
        for i in range(len(feats) - 3, -1, -1):  # up to stride 4
            top = self.fuse[i](_up2(top) + self.lateral[i](feats[i + 1]))
        return self.head(torch.cat([_up2(top), feats[0]], dim=1))


def parameter_count(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def build(spec: LiteSpec, seed: int | None = None) -> LiteNet:
    """A :class:`LiteNet` of ``spec`` with random weights (CPU, eval mode); seed None uses the global RNG,
    otherwise the global RNG is left untouched."""
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        return LiteNet(spec).eval()


# ------------------------------------------------------------------------------------------- segmenter


def confidence(probs: np.ndarray) -> np.ndarray:
    """Mean per-pixel certainty: probs (B, h, w) float32 -> (B,) float32 mean of max(p, 1 - p).

    0.5 when every pixel is a coin flip, 1.0 when every pixel is certain (0 or 1).
    """
    return np.maximum(probs, 1.0 - probs).mean(axis=(1, 2), dtype=np.float64).astype(np.float32)


class LiteSegmenter(BackendSegmenter):
    """Segmenter over a lite backend (io-spec "model": image (B, 1, S, S) -> logits (B, 1, S, S)).

    The image goes to the model as it is (the model normalises it internally); ``points`` are ignored.
    """

    uses_prompts = False

    def predict(self, images: np.ndarray, points: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """images (B, S, S) float32 in [0, 1] -> probs (B, S, S) float32 (sigmoid of the logits),
        scores (B,) float32 (:func:`confidence`, in [0.5, 1])."""
        s = self.input_size
        if images.ndim != 3 or images.shape[1:] != (s, s):
            raise InputError(None, f"lite images have shape {images.shape}", f"(B, {s}, {s})")
        image = np.ascontiguousarray(images[:, None], dtype=np.float32)
        probs = sigmoid(self.backend.run({"image": image})["logits"][:, 0])
        return probs, confidence(probs)

    def predict_tensors(
        self, images: torch.Tensor, points: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`predict` on tensors of the backend's device: (B, S, S) float32 -> probs (B, S, S)
        float32, scores (B,) float32 (same device)."""
        logits = self.tensor_backend().run_tensors({"image": images[:, None].contiguous()})["logits"][:, 0]
        probs = 1.0 / (1.0 + torch.exp(-logits.clamp(-80.0, 80.0)))
        scores = torch.maximum(probs, 1.0 - probs).mean(dim=(1, 2), dtype=torch.float64).to(torch.float32)
        return probs, scores


# ---------------------------------------------------------------------------------------------- family


def _same(model: nn.Module) -> nn.Module:
    """The lite network is its own io-spec "model" module (and is what checkpoints store)."""
    return model


def _io(spec: LiteSpec) -> dict[str, iospec.EngineSpec]:
    return spec.engines()


def _input_size(spec: LiteSpec) -> int:
    return spec.input_size


def _no_name(spec: LiteSpec) -> None:
    return None  # lite specs have no config name


def _export_modules(model: nn.Module) -> dict[str, nn.Module]:
    return {"model": model}


FAMILY = ModelFamily(
    name="lite",
    label="lite",
    spec_type=LiteSpec,
    build=build,
    wrap=_same,
    unwrap=_same,
    io=_io,
    input_size=_input_size,
    spec_name=_no_name,
    graphs=("model",),
    preprocessing={"channels": "gray (1 channel)", "mean": None, "std": None},
    segmenter=LiteSegmenter,
    export_modules=_export_modules,
)
