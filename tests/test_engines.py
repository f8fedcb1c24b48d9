"""Torch engines (eager, compiled, CUDA graphs) behind the backend registry, device tensors in and out,
fixed batch shapes, and the batch size chosen from free GPU memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samsem.errors import ConfigError
from samsem.runtime.backends.base import backend_names, get_backend, spec_proxies
from samsem.runtime.backends.memory import MemoryCost, batch_size_for
from samsem.runtime.backends.pytorch import TorchBackend, bucket
from samsem.runtime.config import PipelineConfig, RunOptions
from samsem.runtime.models import lite as lm
from samsem.runtime.models import sam2 as sm
from samsem.runtime.pipeline import Pipeline

S = 128


@pytest.fixture(scope="module")
def sam() -> sm.SAM2ImageModel:
    return sm.SAM2ImageModel(sm.build(sm.tiny_spec(S), seed=0))


def _inputs(batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randn(batch, 3, S, S, generator=gen),
        "point_coords": torch.rand(batch, 3, 2, generator=gen) * S,
        "point_labels": torch.ones(batch, 3),
    }


def test_registry_has_the_torch_engines() -> None:
    names = backend_names()
    assert names.index("torch") < names.index("torch-compile")  # auto prefers eager torch
    for name in ("torch", "torch-compile", "torch-cudagraphs", "torch-compile-cudagraphs"):
        entry = get_backend(name)
        assert entry.format == "torch" and entry.wrap is not None
    assert get_backend("torch-cudagraphs").unavailable("cpu", None) == "needs a CUDA device"  # type: ignore[arg-type]
    assert get_backend("onnxruntime").wrap is None


def test_run_tensors_equals_run(sam) -> None:
    backend = TorchBackend(sam)
    inputs = _inputs(2)
    out = backend.run_tensors(inputs)
    ref = backend.run({k: v.numpy() for k, v in inputs.items()})
    assert all(isinstance(v, torch.Tensor) and v.dtype == torch.float32 for v in out.values())
    for k in ref:
        np.testing.assert_array_equal(out[k].numpy(), ref[k])
    with pytest.raises(Exception, match="'image' has shape"):
        backend.run_tensors({**inputs, "image": inputs["image"][:, :, :64]})


def test_fixed_shape_modes_pad_batches_to_powers_of_two(sam) -> None:
    assert [bucket(b) for b in (1, 2, 3, 5, 8, 9, 32, 33)] == [1, 2, 4, 8, 8, 16, 32, 64]
    seen: list[int] = []
    backend = TorchBackend(sam)
    backend.mode = "compile"  # fixed shapes, with the eager runner: check the padding alone
    inner = backend.runner
    backend.runner = lambda *args: (seen.append(args[0].shape[0]), inner(*args))[1]
    inputs = _inputs(3)
    out = backend.run_tensors(inputs)
    assert seen == [4] and out["masks"].shape[0] == 3
    ref = TorchBackend(sam).run_tensors(inputs)
    torch.testing.assert_close(out["masks"], ref["masks"], atol=1e-5, rtol=1e-5)


def test_modes_and_devices_are_checked(sam) -> None:
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        TorchBackend(sam, mode="cudagraphs")
    with pytest.raises(ConfigError, match="unknown execution mode"):
        TorchBackend(sam, mode="turbo")
    assert TorchBackend(sam, mode="compile").name == "torch-compile"  # compiles at its first call


def test_bf16_keeps_prompt_encodings_in_fp32(sam, monkeypatch) -> None:
    """The random-Fourier encodings of point prompts (dense and sparse) stay float32 under bf16 autocast."""
    pe = sam.sam.sam_prompt_encoder.pe_layer
    dtypes: list[torch.dtype] = []
    inner = pe._pe_encoding

    def recording(coords: torch.Tensor) -> torch.Tensor:
        out = inner(coords)
        dtypes.append(out.dtype)
        return out

    monkeypatch.setattr(pe, "_pe_encoding", recording)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        masks, _ = sam.decode(*sam.encode(torch.randn(2, 3, S, S)), torch.rand(2, 3, 2) * S, torch.ones(2, 3))
    assert len(dtypes) == 2 and set(dtypes) == {torch.float32}  # points and the dense grid
    assert masks.dtype == torch.bfloat16  # the rest runs in bf16


@pytest.mark.slow
def test_compiled_engine_equals_eager() -> None:
    model = lm.LiteNet(lm.tiny_lite_spec(64)).eval()
    x = {"image": torch.rand(3, 1, 64, 64)}
    ref = TorchBackend(model).run_tensors(x)["logits"]
    out = TorchBackend(model, mode="compile").run_tensors(x)["logits"]
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["cudagraphs", "compile", "compile-cudagraphs"])
def test_cuda_engines_equal_eager(sam, mode: str) -> None:
    inputs = {k: v.cuda() for k, v in _inputs(5).items()}
    ref = TorchBackend(sam, device="cuda").run_tensors(inputs)
    backend = TorchBackend(sam, device="cuda", mode=mode)
    for _ in range(3):  # captured / compiled once, replayed
        out = backend.run_tensors(inputs)
    torch.testing.assert_close(out["masks"], ref["masks"], atol=1e-3, rtol=1e-3)


def test_spec_proxies_carry_shape_and_dtype() -> None:
    p = spec_proxies(
        {"a": torch.zeros(2, 3), "b": np.ones(4, np.float32), "c": torch.zeros(1, dtype=torch.int64)}
    )
    assert p["a"].shape == (2, 3) and p["a"].dtype == np.float32 and p["a"].strides == (0, 0)
    assert p["c"].dtype == np.int64 and p["b"].shape == (4,)


def test_batch_size_from_free_memory() -> None:
    gib = 2**30
    assert batch_size_for(MemoryCost(per_input=gib // 8, fixed=gib), 10 * gib) == 32  # 0.7*10 - 1 = 6 GiB
    assert batch_size_for(MemoryCost(per_input=gib, fixed=gib), 2 * gib) == 1
    assert batch_size_for(MemoryCost(per_input=1, fixed=0), 100 * gib, limit=16) == 16
    assert batch_size_for(MemoryCost(per_input=gib, fixed=gib), 80 * gib, limit=64) == 32
    # None = automatic: CPU runs keep the model configuration's batch size
    assert PipelineConfig(batch_size=12).with_options(RunOptions(batch_size=None)).batch_size == 12
    with pytest.raises(ConfigError):
        RunOptions(batch_size=0)


@pytest.mark.gpu
def test_auto_batch_size_on_cuda(tiny_sam2_checkpoint) -> None:
    from samsem.runtime.load import load_pipeline

    pipe = load_pipeline(str(tiny_sam2_checkpoint(S)), device="cuda", options=RunOptions(batch_size=None))
    assert 1 <= pipe.config.batch_size <= 64
    assert pipe.device is not None and pipe.device.startswith("cuda")  # device-resident stages


@pytest.mark.gpu
def test_device_pipeline_on_cuda_equals_host(tiny_sam2_checkpoint) -> None:
    from test_lean_stages import sem_image

    from samsem.runtime.load import load_pipeline

    ckpt = str(tiny_sam2_checkpoint(S))
    cfg = PipelineConfig(batch_size=4)
    img = sem_image(400, 300, 3)
    dev = load_pipeline(ckpt, device="cuda", config=cfg)
    host = Pipeline(dev.model1, dev.model2, dev.config, dev.info, device="host")
    assert dev.device is not None and host.device is None
    a, b = dev.segment(img), host.segment(img)
    assert (a.mask != b.mask).mean() < 1e-4
    assert [p["source"] for p in a.report.to_json()["patches"]] == [
        p["source"] for p in b.report.to_json()["patches"]
    ]
