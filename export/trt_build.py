"""TensorRT engine building from the exported ONNX graphs (TensorRT >= 10 Python API).

``build_engine`` parses an ONNX file (``OnnxParser``), adds one optimisation profile from the io-spec
(batch 1..max, opt at the pipeline's batch size; points 1..max, opt at the prompt count), reuses and
updates a timing cache, and for FP16 sets ``BuilderFlag.FP16`` + ``OBEY_PRECISION_CONSTRAINTS`` with the
numerically sensitive layers pinned to FP32 (``layer.precision`` and ``set_output_type``), chosen by
:func:`fp32_layers`:

* every normalization (LayerNorm), softmax and reduce layer: FP16 sums of squares and exponentials
  overflow in Hiera/ViT encoders (large activations after the deeper blocks);
* the float compute layers (elementwise, unary, matrix multiply, activation) that share the module
  scope of a softmax or reduce layer (the node-name path up to the last ``/``): the attention logits
  ``q @ k^T * scale`` that feed a softmax, and hand-written norms (mean, pow, sqrt, div). Projections live
  in child scopes (``.../attn/qkv``) and stay FP16.

FP16 weak typing exists in TensorRT 10.x only (deprecated in 10.12, removed in 11, which builds strongly
typed networks from mixed-precision ONNX); on TensorRT 11 ``fp16=True`` is refused with a ConfigError
and FP32 engines still build. tensorrt is imported inside :func:`build_engine` only.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

from samsem.errors import ConfigError, InputError
from samsem.runtime.bundle.manifest import Limits
from samsem.runtime.models.iospec import EngineSpec

FP32_KINDS = frozenset({"NORMALIZATION", "SOFTMAX", "REDUCE"})
SCOPE_ANCHORS = frozenset({"SOFTMAX", "REDUCE"})
SCOPE_KINDS = frozenset({"ELEMENTWISE", "UNARY", "MATRIX_MULTIPLY", "ACTIVATION"})


class Layer(NamedTuple):
    """A network layer as the FP32 policy sees it: name, TensorRT LayerType name, float outputs?"""

    name: str
    kind: str
    floating: bool


def scope(name: str) -> str | None:
    """Module scope of an exported node name ("/a/b/Softmax" -> "/a/b"); None without one."""
    if not name.startswith("/") or name.count("/") < 2:
        return None
    return name.rsplit("/", 1)[0]


def fp32_layers(layers: Iterable[Layer]) -> list[str]:
    """Names of the layers to pin to FP32 in an FP16 build (see the module docstring), in input order."""
    layers = list(layers)
    anchors = {scope(la.name) for la in layers if la.kind in SCOPE_ANCHORS and la.floating} - {None}
    return [
        la.name
        for la in layers
        if la.floating and (la.kind in FP32_KINDS or (la.kind in SCOPE_KINDS and scope(la.name) in anchors))
    ]


def build_engine(
    onnx_path: str | Path,
    spec: EngineSpec,
    out_path: str | Path,
    *,
    limits: Limits,
    fp16: bool,
    timing_cache: str | Path | None = None,
    workspace_gib: float = 8.0,
) -> dict[str, Any]:
    """Build and serialize one engine; returns build details (TensorRT version, FP32 layers, seconds).

    The timing cache file is read when present and rewritten after the build (one cache can serve all
    graphs and models of a GPU/TensorRT pair).
    """
    import tensorrt as trt

    onnx_path, out_path = Path(onnx_path), Path(out_path)
    t0 = time.perf_counter()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise InputError(onnx_path, f"TensorRT cannot parse the ONNX graph: {errors[:500]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    pinned: list[str] = []
    if fp16:
        if not hasattr(trt.BuilderFlag, "FP16"):
            raise ConfigError(
                f"TensorRT {trt.__version__} has no FP16 builder flag (weak typing was removed in "
                "TensorRT 11); "
                "build FP32 engines (no --fp16) or use TensorRT 10.x"
            )
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        float_types = (trt.float32, trt.float16)
        layers = [network.get_layer(i) for i in range(network.num_layers)]
        described = [
            Layer(
                la.name,
                la.type.name,
                any(la.get_output(j).dtype in float_types for j in range(la.num_outputs)),
            )
            for la in layers
        ]
        pinned = fp32_layers(described)
        keep = set(pinned)
        for la in layers:
            if la.name in keep:
                la.precision = trt.float32
                for j in range(la.num_outputs):
                    if la.get_output(j).dtype in float_types:
                        la.set_output_type(j, trt.float32)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in limits.profile(spec).items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    cache_path = Path(timing_cache) if timing_cache else None
    cache = config.create_timing_cache(
        cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    )
    config.set_timing_cache(cache, ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise InputError(onnx_path, "TensorRT engine build failed (see the TensorRT log above)")
    out_path.write_bytes(bytes(plan))
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    return {
        "tensorrt": trt.__version__,
        "fp32_layers": len(pinned),
        "layers": network.num_layers,
        "build_s": round(time.perf_counter() - t0, 1),
    }
