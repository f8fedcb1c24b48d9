"""The lite family: LiteNet shapes/size/export, strict checkpoints, LiteSegmenter, pipeline and loader."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from samsem.errors import ConfigError, EngineError, InputError
from samsem.runtime.backends.pytorch import TorchBackend
from samsem.runtime.config import PipelineConfig
from samsem.runtime.load import load_models
from samsem.runtime.models import iospec
from samsem.runtime.models import sam2 as sm
from samsem.runtime.models.checkpoint import write_checkpoint
from samsem.runtime.models.lite import (
    LiteNet,
    LiteSegmenter,
    LiteSpec,
    confidence,
    parameter_count,
)
from samsem.runtime.models.registry import build_model, get_family, load_model, save_model
from samsem.runtime.models.segmenter import Backend, Segmenter, sigmoid
from samsem.runtime.pipeline import Pipeline
from samsem.runtime.stages.postprocess import PostprocessConfig
from samsem.runtime.stages.preprocess import apply_range, intensity_range
from samsem.runtime.stages.tiling import TilingConfig
from samsem.synth.generate import generate_sample

SPEC64 = LiteSpec(input_size=64)


@pytest.fixture(autouse=True)
def one_thread():
    """Run torch on one thread: as fast for these small tensors, while many small ops (a backward pass
    above all) slow down >10x when their OpenMP threads compete for a shared CPU. Set per test: the
    pipeline's Numba kernels share libgomp with torch and reset its thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _images(batch: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, size, size)).astype(np.float32)


def _forward(model: LiteNet, images: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(images[:, None])).numpy()


# ------------------------------------------------------------------------------------------------ model


def test_default_spec_is_small_and_shapes_follow_input_size() -> None:
    default = build_model(LiteSpec(), seed=0)
    assert default.spec.input_size == 512
    assert parameter_count(default) == 488_084 < 3_000_000
    for size in (64, 128):
        model = build_model(replace(LiteSpec(), input_size=size), seed=0)
        assert parameter_count(model) == 488_084  # weights do not depend on the input size
        logits = _forward(model, _images(2, size))
        assert logits.shape == (2, 1, size, size) and logits.dtype == np.float32
        assert np.isfinite(logits).all() and logits.std() > 0
        (io,) = get_family("lite").io(model.spec).values()  # the family's io-spec, found by name
        assert model.engines() == {"model": io}
        assert io.inputs[0].dims == ("batch", 1, size, size) and io.outputs[0].dims == io.inputs[0].dims


def test_spec_validation_and_dict_round_trip() -> None:
    spec = LiteSpec(input_size=96, widths=(8, 16, 24), depths=(1, 0, 1), heads=2, kv_reduction=1)
    assert spec.stride == 8
    assert LiteSpec.from_dict(spec.to_dict()) == spec
    assert spec.to_dict()["widths"] == [8, 16, 24]
    assert _forward(build_model(spec, seed=0), _images(1, 96)).shape == (1, 1, 96, 96)
    with pytest.raises(ConfigError, match="multiple of 32"):
        LiteSpec(input_size=80)  # stride 16 x kv_reduction 2
    with pytest.raises(ConfigError, match="same length"):
        LiteSpec(widths=(16, 32), depths=(1,))
    with pytest.raises(ConfigError, match="multiple of heads 3"):
        LiteSpec(heads=3)
    with pytest.raises(ConfigError, match="must be a tuple"):
        LiteSpec(widths=[16, 32, 64, 128])
    with pytest.raises(ConfigError, match="attn_blocks must be an integer >= 0"):
        LiteSpec(attn_blocks=-1)
    with pytest.raises(ConfigError, match="unknown lite spec field"):
        LiteSpec.from_dict({"input_size": 64, "dropout": 0.1})


def test_seeded_build_is_deterministic_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = build_model(SPEC64, seed=7)
    assert torch.equal(torch.rand(3), expected)
    b = build_model(SPEC64, seed=7)
    c = build_model(SPEC64, seed=8)
    images = _images(2, 64)
    np.testing.assert_array_equal(_forward(a, images), _forward(b, images))
    assert np.abs(_forward(a, images) - _forward(c, images)).max() > 1e-4
    assert not a.training  # built in eval mode


def test_onnx_export_matches_torch(tmp_path) -> None:
    """Tracing export with a dynamic batch; ONNX Runtime (CPU) at another batch size matches PyTorch."""
    import onnxruntime as ort

    model = build_model(SPEC64, seed=0)
    path = tmp_path / "lite.onnx"
    axes = {"image": {0: iospec.BATCH}, "logits": {0: iospec.BATCH}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.rand(2, 1, 64, 64),),
            str(path),
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = _images(3, 64, seed=1)
    (onnx_out,) = session.run(None, {"image": images[:, None]})
    torch_out = _forward(model, images)
    assert onnx_out.shape == (3, 1, 64, 64)
    assert np.abs(onnx_out - torch_out).max() < 1e-4


# ------------------------------------------------------------------------------------------ checkpoints


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path) -> None:
    model = build_model(SPEC64, seed=3)
    path = tmp_path / "lite.pt"
    save_model(path, model, SPEC64, extra={"epoch": 2, "optimizer": {"lr": 1e-3}})
    assert [p.name for p in tmp_path.iterdir()] == ["lite.pt"]  # no temporary file left
    result = load_model(path, family="lite")
    loaded, spec = result.module, result.spec
    assert spec == SPEC64 and not loaded.training
    images = _images(2, 64)
    np.testing.assert_array_equal(_forward(loaded, images), _forward(model, images))
    np.testing.assert_array_equal(_forward(load_model(path, SPEC64).module, images), _forward(model, images))
    raw = torch.load(path, weights_only=True)
    assert (raw["format"], raw["version"], raw["family"], raw["epoch"]) == ("samsem-checkpoint", 1, "lite", 2)
    assert raw["spec"] == SPEC64.to_dict()
    with pytest.raises(ConfigError, match="was saved with"):
        load_model(path, replace(SPEC64, input_size=128))
    with pytest.raises(ConfigError, match="reserved"):
        save_model(path, model, SPEC64, extra={"spec": {}})
    with pytest.raises(ConfigError, match="model was built with"):
        save_model(path, model, replace(SPEC64, heads=2))


def test_strict_loading_names_missing_unexpected_and_misshaped_keys(tmp_path) -> None:
    model = build_model(SPEC64, seed=0)
    state = model.state_dict()

    def saved(name: str, state: Mapping[str, torch.Tensor]) -> Path:
        path = tmp_path / name
        torch.save(
            {"format": "samsem-checkpoint", "version": 1, "family": "lite", "spec": SPEC64.to_dict(),
             "model": dict(state)},
            path,
        )  # fmt: skip
        return path

    dropped = {k: v for k, v in state.items() if k != "stem.0.weight"}
    with pytest.raises(InputError, match=r"1 missing key\(s\): stem\.0\.weight") as err:
        load_model(saved("missing.pt", dropped), family="lite")
    assert "missing.pt" in str(err.value)
    with pytest.raises(InputError, match=r"1 unexpected key\(s\): extra\.weight"):
        load_model(saved("extra.pt", {**state, "extra.weight": torch.zeros(2)}), family="lite")
    wide = build_model(replace(SPEC64, decoder_width=48), seed=0)
    path = tmp_path / "wide.pt"
    write_checkpoint(path, "lite", SPEC64.to_dict(), wide)  # header claims the narrower spec
    with pytest.raises(InputError, match=r"shape mismatch.*lateral\.0\.0\.weight \(48, 32, 1, 1\)"):
        load_model(path, family="lite")


def test_family_and_format_checks(tmp_path) -> None:
    sam2 = tmp_path / "sam2.pt"
    torch.save({"format": "samsem-checkpoint", "version": 1, "family": "sam2", "spec": {}, "model": {}}, sam2)
    with pytest.raises(InputError, match="'sam2' checkpoint, not a lite one"):
        load_model(sam2, family="lite")
    lite = tmp_path / "lite.pt"
    save_model(lite, build_model(SPEC64, seed=0), SPEC64)
    with pytest.raises(InputError, match="'lite' checkpoint, not a SAM2 one"):
        load_model(lite, family="sam2")
    plain = tmp_path / "plain.pt"
    torch.save({"model": build_model(SPEC64, seed=0).state_dict()}, plain)
    with pytest.raises(InputError, match=r"plain .* not a samsem checkpoint"):
        load_model(plain, family="lite")
    bad_spec = tmp_path / "bad_spec.pt"
    torch.save(
        {"format": "samsem-checkpoint", "version": 1, "family": "lite", "spec": {"heads": 3}, "model": {}},
        bad_spec,
    )
    with pytest.raises(InputError, match=r"invalid lite spec in checkpoint.*multiple of heads"):
        load_model(bad_spec, family="lite")
    with pytest.raises(InputError, match="not found"):
        load_model(tmp_path / "absent.pt", family="lite")
    with pytest.raises(ConfigError, match="invalid torch device"):
        load_model(lite, device="tpu9", family="lite")


# --------------------------------------------------------------------------------- backend, segmenter


class _Fixed:
    """A fake lite backend: fixed logits, records its inputs."""

    name = "fake"

    def __init__(self, logits: np.ndarray) -> None:
        self.logits = logits
        self.inputs: dict[str, np.ndarray] = {}

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.inputs = dict(inputs)
        return {"logits": self.logits}


def test_segmenter_returns_sigmoid_and_confidence() -> None:
    logits = np.array(
        [[[[0.0, 0.0], [0.0, 0.0]]], [[[50.0, -50.0], [np.log(3.0), -np.log(3.0)]]]], np.float32
    )
    backend = _Fixed(logits)
    seg = LiteSegmenter(backend, 2)
    assert isinstance(seg, Segmenter) and not seg.uses_prompts
    images = _images(2, 2)
    probs, scores = seg.predict(images, None)
    assert backend.inputs["image"].shape == (2, 1, 2, 2)
    np.testing.assert_array_equal(backend.inputs["image"][:, 0], images)  # no normalisation outside
    np.testing.assert_allclose(probs[1], [[1.0, 0.0], [0.75, 0.25]], atol=1e-6)
    np.testing.assert_allclose(scores, [0.5, (1 + 1 + 0.75 + 0.75) / 4], atol=1e-6)
    assert probs.dtype == scores.dtype == np.float32
    np.testing.assert_allclose(confidence(np.full((1, 3, 3), 0.2, np.float32)), [0.8], atol=1e-7)
    with pytest.raises(InputError, match=r"lite images have shape \(2, 3, 3\)"):
        seg.predict(_images(2, 3), None)


def test_torch_backend_runs_lite_model() -> None:
    model = build_model(SPEC64, seed=0)
    backend = TorchBackend(model)
    assert isinstance(backend, Backend)
    images = _images(3, 64)
    out = backend.run({"image": images[:, None].copy()})
    assert set(out) == {"logits"}
    np.testing.assert_array_equal(out["logits"], _forward(model, images))
    with pytest.raises(EngineError, match=r"'image' has shape \(3, 1, 32, 32\)"):
        backend.run({"image": images[:, None, :32, :32].copy()})
    probs, scores = LiteSegmenter(backend, 64).predict(images, None)
    np.testing.assert_allclose(probs, sigmoid(out["logits"][:, 0]), rtol=1e-6)
    assert probs.shape == (3, 64, 64) and scores.shape == (3,) and (scores >= 0.5).all()
    bf16 = TorchBackend(build_model(SPEC64, seed=0), precision="bf16").run({"image": images[:, None].copy()})
    assert bf16["logits"].dtype == np.float32
    assert np.abs(bf16["logits"] - out["logits"]).max() < 0.1 * np.abs(out["logits"]).max()


# ------------------------------------------------------------------------------------ pipeline, loader


def test_pipeline_on_synthetic_image() -> None:
    sample = generate_sample("easy", 256, 256, seed=0)
    spec = replace(SPEC64, input_size=128)
    seg = LiteSegmenter(TorchBackend(build_model(spec, seed=0)), 128)
    cfg = PipelineConfig(tiling=TilingConfig(patch_size=128), batch_size=4)
    res = Pipeline(seg, seg, cfg).segment(sample.image)
    assert res.mask.shape == (256, 256) and res.mask.dtype == np.uint8
    assert set(np.unique(res.mask)) <= {0, 1}
    assert len(res.report.patches) == res.report.to_json()["n_patches"] > 0
    # one patch covering the image at the model's input size, no flattening or clean-up: the
    # thresholded model output
    single = PipelineConfig(
        tiling=TilingConfig(patch_size=256),
        single_scale=2,
        postprocess=PostprocessConfig(min_area=0, max_hole=0),
        flatten=0,
    )
    seg256 = LiteSegmenter(TorchBackend(build_model(replace(spec, input_size=256), seed=0)), 256)
    mask = Pipeline(None, seg256, single).segment(sample.image).mask
    image = apply_range(sample.image, intensity_range(sample.image, single.low_pct, single.high_pct))
    np.testing.assert_array_equal(mask, (seg256.predict(image[None], None)[0][0] >= 0.5).astype(np.uint8))


def test_load_models_reads_lite_checkpoints(tmp_path) -> None:
    paths = []
    for seed in (0, 1):
        paths.append(tmp_path / f"lite{seed}.pt")
        save_model(paths[-1], build_model(SPEC64, seed=seed), SPEC64)
    loaded = load_models(paths[0])
    assert isinstance(loaded.model1, LiteSegmenter) and loaded.model1 is loaded.model2
    assert loaded.info.to_json() == {
        "family": "lite",
        "backend": "torch",
        "device": "cpu",
        "precision": "fp32",
        "source": str(paths[0]),
        "input_size": 64,
    }
    images = _images(2, 64)
    probs, _ = loaded.model1.predict(images, None)
    np.testing.assert_allclose(probs, sigmoid(_forward(build_model(SPEC64, seed=0), images)[:, 0]))
    pair = load_models(f"{paths[0]},{paths[1]}")
    assert pair.model1 is not pair.model2 and pair.info.to_json()["family"] == "lite"
    assert pair.info.to_json()["source"] == [str(paths[0]), str(paths[1])]
    with pytest.raises(InputError, match="'lite' checkpoint, not a SAM2 one"):
        load_models(f"sam2.1_hiera_t:{paths[0]}")


def test_load_models_mixed_families(tmp_path) -> None:
    lite = tmp_path / "lite.pt"
    save_model(lite, build_model(SPEC64, seed=0), SPEC64)
    sam2 = tmp_path / "sam2.pt"
    spec = sm.tiny_spec(128)
    save_model(sam2, sm.build(spec, seed=0), spec)
    mixed = load_models(f"{lite},{sam2}")
    assert mixed.info.to_json()["family"] == ["lite", "sam2"]
    assert mixed.info.to_json()["config"] == [None, "sam2.1_hiera_t"]
    assert mixed.info.to_json()["input_size"] == [64, 128]
    assert not mixed.model1.uses_prompts and mixed.model2.uses_prompts


# -------------------------------------------------------------------------------------------- training


def _bce_dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    p = torch.sigmoid(logits)
    dice = 1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
    return F.binary_cross_entropy_with_logits(logits, target) + dice


def test_overfits_one_synthetic_image() -> None:
    """40 Adam steps on one 128x128 sample cut BCE + Dice by > 3x; the pipeline then reproduces the mask."""
    sample = generate_sample("easy", 128, 128, seed=0)
    cfg = PipelineConfig(tiling=TilingConfig(patch_size=128), single_scale=2)
    image = apply_range(sample.image, intensity_range(sample.image, cfg.low_pct, cfg.high_pct))
    x = torch.from_numpy(image)[None, None]
    y = torch.from_numpy(sample.mask.astype(np.float32))[None, None]
    spec = replace(LiteSpec(), input_size=128)
    model = build_model(spec, seed=0).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = _bce_dice(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 3, losses
    seg = LiteSegmenter(TorchBackend(model), 128)
    mask = Pipeline(None, seg, cfg).segment(sample.image).mask
    assert (mask == sample.mask).mean() > 0.95
