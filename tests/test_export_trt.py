"""TensorRT: the parts that need no library (engine io checks, chunking, point limits) run everywhere;
building and running engines is marked `trt` + `gpu` (skipped without TensorRT and CUDA)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from samsem.errors import InputError
from samsem.runtime.backends.trt import TensorInfo, batch_chunks, check_engine_io, points_limit
from samsem.runtime.bundle.manifest import Limits
from samsem.runtime.models import sam2 as sm
from samsem.runtime.models.registry import save_model

S = 64
IO = sm.geometry(sm.tiny_spec(S)).engines()


def _tensors(spec, limits: Limits, **override) -> dict[str, TensorInfo]:
    """What a correctly built engine reports for ``spec`` (dynamic dims as -1)."""
    prof = limits.profile(spec)
    out = {
        t.name: TensorInfo(
            True, t.dtype, tuple(-1 if isinstance(d, str) else d for d in t.dims), prof[t.name]
        )
        for t in spec.inputs
    }
    out |= {
        t.name: TensorInfo(False, t.dtype, tuple(-1 if isinstance(d, str) else d for d in t.dims))
        for t in spec.outputs
    }
    return out | override


def test_engine_io_matches_spec() -> None:
    limits = Limits((1, 8, 16), (1, 5, 6))
    assert check_engine_io(Path("d.plan"), IO["decoder"], _tensors(IO["decoder"], limits)) == 16
    assert points_limit(IO["decoder"], _tensors(IO["decoder"], limits)) == 6
    assert points_limit(IO["encoder"], _tensors(IO["encoder"], limits)) is None


def test_engine_for_other_shapes_is_refused() -> None:
    limits = Limits((1, 8, 16), (1, 5, 5))
    other = sm.geometry(sm.tiny_spec(2 * S)).engines()["encoder"]
    with pytest.raises(
        InputError, match=r"e\.plan: engine was built for other shapes: image is float32 \[-1, 3, 128"
    ):
        check_engine_io(Path("e.plan"), IO["encoder"], _tensors(other, limits))
    renamed = _tensors(IO["encoder"], limits)
    renamed["embed"] = renamed.pop("image_embed")
    with pytest.raises(InputError, match="engine tensors are"):
        check_engine_io(Path("e.plan"), IO["encoder"], renamed)
    half = _tensors(IO["encoder"], limits)
    half["image"] = TensorInfo(True, "float16", half["image"].shape, half["image"].profile)
    with pytest.raises(InputError, match="image is float16"):
        check_engine_io(Path("e.plan"), IO["encoder"], half)
    from_two = _tensors(IO["encoder"], Limits((2, 8, 16), (1, 5, 5)))
    with pytest.raises(InputError, match="starts at batch 2"):
        check_engine_io(Path("e.plan"), IO["encoder"], from_two)


def test_batch_chunks() -> None:
    assert batch_chunks(5, 16) == [slice(0, 5)]
    assert batch_chunks(35, 16) == [slice(0, 16), slice(16, 32), slice(32, 35)]
    assert sum(s.stop - s.start for s in batch_chunks(17, 4)) == 17


@pytest.fixture(scope="module")
def trt_bundles(tmp_path_factory) -> dict[str, Path]:
    from samsem.export.bundle_writer import ExportOptions, write_bundle

    folder = tmp_path_factory.mktemp("trt")
    spec = sm.tiny_spec(S)
    ckpt = folder / "tiny.pt"
    save_model(ckpt, sm.build(spec, seed=0), spec)
    cache = folder / "timing.cache"
    out = {}
    for precision in ("fp32", "fp16"):
        out[precision] = folder / precision
        options = ExportOptions(formats=("trt", "torch"), fp16=precision == "fp16", timing_cache=cache)
        write_bundle(out[precision], [ckpt], options=options)
    assert cache.stat().st_size > 0
    return out


@pytest.mark.trt
@pytest.mark.gpu
@pytest.mark.parametrize(("precision", "atol"), [("fp32", 1e-3), ("fp16", 5e-2)])
def test_tensorrt_matches_torch(trt_bundles, precision: str, atol: float) -> None:
    from samsem.runtime.load import load_models

    trt = load_models(str(trt_bundles[precision]), backend="tensorrt", device="cuda")
    ref = load_models(str(trt_bundles[precision]), backend="torch", device="cuda")
    assert trt.info.to_json()["precision"] == precision
    auto = load_models(str(trt_bundles[precision]), backend="auto", device="cuda")
    assert auto.info.to_json()["backend"] == "tensorrt"
    rng = np.random.default_rng(0)
    for batch in (1, 20):  # 20 > the profile's 16: chunked
        inputs = {
            "image": rng.normal(size=(batch, 3, S, S)).astype(np.float32),
            "point_coords": (rng.random((batch, 5, 2)) * S).astype(np.float32),
            "point_labels": np.ones((batch, 5), np.float32),
        }
        got, want = trt.model1.backend.run(inputs), ref.model1.backend.run(inputs)
        for name in ("masks", "iou_scores"):
            assert np.isfinite(got[name]).all()
            np.testing.assert_allclose(
                got[name], want[name], rtol=0, atol=atol * max(1, np.abs(want[name]).max())
            )
    too_many = {**inputs, "point_coords": inputs["point_coords"][:, :1].repeat(6, 1)}
    too_many["point_labels"] = np.ones((batch, 6), np.float32)
    with pytest.raises(InputError, match="6 point prompts but the TensorRT engines take at most 5"):
        trt.model1.backend.run(too_many)
