"""SAM2 building, strict checkpoint loading, the image-only module and its parity with SAM2ImagePredictor."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from samsem.errors import ConfigError, EngineError, InputError
from samsem.runtime.models import sam2 as sm
from samsem.runtime.models.registry import load_model, save_model

OFFICIAL = [f"{v}_hiera_{s}" for v in ("sam2", "sam2.1") for s in ("t", "s", "b+", "l")]


@pytest.fixture(scope="module")
def tiny() -> tuple[sm.SAM2Spec, torch.nn.Module]:
    spec = sm.tiny_spec(128)
    return spec, sm.build(spec, seed=0)


def _points(batch: int, n: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, n, 2, generator=g) * size, torch.ones(batch, n)


def _run(model: torch.nn.Module, image: torch.Tensor, coords: torch.Tensor, labels: torch.Tensor):
    with torch.inference_mode():
        return sm.SAM2ImageModel(model)(image, coords, labels)


# ------------------------------------------------------------------------------------- specs and configs


def test_spec_dict_round_trip_and_validation() -> None:
    spec = sm.tiny_spec(256)
    assert sm.SAM2Spec.from_dict(spec.to_dict()) == spec
    assert spec.to_dict()["stages"] == [1, 1, 1, 1]
    with pytest.raises(ConfigError, match="unknown SAM2 spec field"):
        sm.SAM2Spec.from_dict({**spec.to_dict(), "depth": 3})
    with pytest.raises(ConfigError, match="image_size"):
        sm.SAM2Spec(image_size=0)
    with pytest.raises(ConfigError, match="multiple of 8"):
        sm.SAM2Spec(d_model=20)


@pytest.mark.parametrize("name", OFFICIAL)
def test_official_config_unchanged_at_full_size(name: str) -> None:
    """compose_config of an official name at 1024 equals hydra's compose of the same file."""
    from hydra import compose

    ours = sm.compose_config(sm.SAM2Spec(config=name))
    folder = "sam2.1" if name.startswith("sam2.1") else "sam2"
    theirs = compose(config_name=f"configs/{folder}/{name}.yaml")
    assert ours == theirs
    geo = sm.geometry(sm.SAM2Spec(config=name))
    assert (geo.d_model, geo.backbone_stride, geo.embed_size, geo.mask_size) == (256, 16, 64, 256)


def test_config_names_aliases_and_errors(tmp_path) -> None:
    assert sm.config_path("sam2.1_hiera_tiny") == sm.config_path("sam2.1_hiera_t")
    assert sm.config_path("sam2_hiera_base_plus").name == "sam2_hiera_b+.yaml"
    with pytest.raises(ConfigError, match=r"unknown SAM2 config 'hiera_x'.*sam2\.1_hiera_t"):
        sm.config_path("hiera_x")
    with pytest.raises(ConfigError, match="not found"):
        sm.config_path(str(tmp_path / "missing.yaml"))
    other = tmp_path / "other.yaml"
    other.write_text("model:\n  _target_: torch.nn.Identity\n")
    with pytest.raises(ConfigError, match="not a SAM2 model config"):
        sm.compose_config(sm.SAM2Spec(config=str(other)))


def test_geometry_follows_image_size_and_config() -> None:
    geo = sm.geometry(sm.tiny_spec(256))
    assert (geo.d_model, geo.embed_size, geo.mask_size) == (32, 16, 64)
    assert sm.geometry(sm.SAM2Spec("sam2_hiera_l", image_size=512)).embed_size == 32
    with pytest.raises(ConfigError, match="multiple of 32"):
        sm.geometry(sm.SAM2Spec(image_size=1000))
    enc = geo.engines()["encoder"]
    assert [t.dims for t in enc.outputs] == [
        ("batch", 4, 64, 64),
        ("batch", 8, 32, 32),
        ("batch", 32, 16, 16),
    ]


# ------------------------------------------------------------------------------------------- forward


@pytest.mark.parametrize("size", [128, 256])
def test_tiny_forward_shapes_match_iospec(size: int) -> None:
    spec = sm.tiny_spec(size)
    model = sm.SAM2ImageModel(sm.build(spec, seed=0))
    image = torch.randn(2, 3, size, size)
    coords, labels = _points(2, 3, size)
    with torch.inference_mode():
        feats = model.encode(image)
        masks, iou = model.decode(*feats, coords, labels)
        whole = model(image, coords, labels)
    engines = sm.geometry(spec).engines()
    sizes = {"batch": 2, "points": 3}
    assert [tuple(f.shape) for f in feats] == [t.shape(sizes) for t in engines["encoder"].outputs]
    assert tuple(masks.shape) == (2, 3, size // 4, size // 4) and tuple(iou.shape) == (2, 3)
    assert torch.equal(whole[0], masks) and torch.equal(whole[1], iou)
    assert torch.isfinite(masks).all() and ((iou >= 0) & (iou <= 1)).all()  # sigmoid IoU head


def test_batch_items_are_independent(tiny) -> None:
    _, sam = tiny
    image = torch.randn(3, 3, 128, 128)
    coords, labels = _points(3, 2, 128)
    masks, iou = _run(sam, image, coords, labels)
    for i in range(3):
        m1, s1 = _run(sam, image[i : i + 1], coords[i : i + 1], labels[i : i + 1])
        torch.testing.assert_close(m1[0], masks[i], atol=1e-5, rtol=0)
        torch.testing.assert_close(s1[0], iou[i], atol=1e-5, rtol=0)


def test_points_change_the_masks(tiny) -> None:
    _, sam = tiny
    image = torch.randn(1, 3, 128, 128)
    a, _ = _run(sam, image, torch.tensor([[[10.0, 10.0]]]), torch.ones(1, 1))
    b, _ = _run(sam, image, torch.tensor([[[110.0, 90.0]]]), torch.ones(1, 1))
    assert (a - b).abs().max() > 1e-4


def test_parity_with_sam2_image_predictor(tiny) -> None:
    """Low-res logits and IoU equal SAM2ImagePredictor's (set_image + predict, multimask) within 1e-5."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    spec, sam = tiny
    geo = sm.geometry(spec)
    predictor = SAM2ImagePredictor(sam)
    # the predictor hard-codes the 1024-px feature sizes; give it the ones of this input size
    predictor._bb_feat_sizes = [(geo.mask_size,) * 2, (geo.mask_size // 2,) * 2, (geo.embed_size,) * 2]
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)  # at S x S the predictor's resize is identity
    predictor.set_image(rgb)
    mean = torch.tensor(sm.PIXEL_MEAN)[:, None, None]
    std = torch.tensor(sm.PIXEL_STD)[:, None, None]
    image = ((torch.from_numpy(rgb).permute(2, 0, 1).float() / 255 - mean) / std)[None]
    for pts, lab in [([[12.0, 40.0]], [1]), ([[100.0, 7.5], [64.0, 64.0], [3.0, 120.0]], [1, 0, 1])]:
        coords, labels = np.asarray(pts, np.float32), np.asarray(lab)
        _, ref_iou, ref_low = predictor.predict(coords, labels, multimask_output=True, return_logits=True)
        masks, iou = _run(sam, image, torch.from_numpy(coords)[None], torch.from_numpy(labels).float()[None])
        np.testing.assert_allclose(masks[0].clamp(-32, 32).numpy(), ref_low, atol=1e-5, rtol=0)
        np.testing.assert_allclose(iou[0].numpy(), ref_iou, atol=1e-5, rtol=0)


def test_seeded_build_is_deterministic_and_leaves_global_rng() -> None:
    spec = sm.tiny_spec(128)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = sm.build(spec, seed=0).state_dict()
    assert torch.equal(torch.rand(1), before)
    b = sm.build(spec, seed=0).state_dict()
    c = sm.build(spec, seed=1).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_trainable_sets_requires_grad(tiny) -> None:
    spec, _ = tiny
    sam = sm.build(spec, seed=0)
    n = sm.trainable(sm.SAM2ImageModel(sam), image_encoder=False, prompt_encoder=False, mask_decoder=True)
    assert n == sum(p.numel() for p in sam.sam_mask_decoder.parameters()) > 0
    assert not any(p.requires_grad for p in sam.image_encoder.parameters())
    assert (
        not sam.no_mem_embed.requires_grad and not sam.memory_attention.layers[0].linear1.weight.requires_grad
    )
    n_all = sm.trainable(sam, image_encoder=True, prompt_encoder=True, mask_decoder=True)
    expected = sum(
        p.numel()
        for m in (sam.image_encoder, sam.sam_prompt_encoder, sam.sam_mask_decoder)
        for p in m.parameters()
    )
    assert n_all == expected + sam.no_mem_embed.numel()


def test_hiera_t_at_1024_builds() -> None:
    sam = sm.build(sm.SAM2Spec("sam2.1_hiera_t"), seed=0)
    assert sum(p.numel() for p in sam.parameters()) == 38_962_498  # official SAM 2.1 tiny: 38.9 M
    geo = sm.SAM2ImageModel(sam).geometry
    assert (geo.image_size, geo.d_model, geo.embed_size) == (1024, 256, 64)


@pytest.mark.slow
def test_hiera_t_at_1024_forwards() -> None:
    sam = sm.build(sm.SAM2Spec("sam2.1_hiera_t"), seed=0)
    masks, iou = _run(sam, torch.randn(1, 3, 1024, 1024), torch.tensor([[[500.0, 300.0]]]), torch.ones(1, 1))
    assert tuple(masks.shape) == (1, 3, 256, 256) and tuple(iou.shape) == (1, 3)
    assert torch.isfinite(masks).all()


@pytest.mark.slow
@pytest.mark.parametrize("name", OFFICIAL)
def test_official_configs_instantiate(name: str) -> None:
    """Parameter counts match the published sizes (SAM 2.1 adds ~0.07 M for object-pointer encodings)."""
    millions = {"t": 38.9, "s": 46.0, "b+": 80.8, "l": 224.4}[name.rsplit("_", 1)[1]]
    sam = sm.build(sm.SAM2Spec(name), seed=0)
    assert sum(p.numel() for p in sam.parameters()) / 1e6 == pytest.approx(millions, abs=0.1)


# --------------------------------------------------------------------------------------- checkpoints


def _official(tmp_path, state: dict, name: str = "official.pt"):
    path = tmp_path / name
    torch.save({"model": state}, path)
    return path


def test_official_format_loads_strictly_and_reproduces(tiny, tmp_path) -> None:
    spec, sam = tiny
    path = _official(tmp_path, sam.state_dict())
    loaded = load_model(path, spec).module.sam
    image, (coords, labels) = torch.randn(1, 3, 128, 128), _points(1, 2, 128)
    for a, b in zip(_run(sam, image, coords, labels), _run(loaded, image, coords, labels), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(InputError, match="CONFIG:PATH"):
        load_model(path, family="sam2")
    with pytest.raises(InputError, match="not a samsem checkpoint"):
        load_model(path)


def test_missing_unexpected_and_misshaped_keys_are_listed(tiny, tmp_path) -> None:
    spec, sam = tiny
    state = sam.state_dict()
    dropped = dict(state)
    del dropped["no_mem_embed"]
    with pytest.raises(InputError, match=r"1 missing key\(s\): no_mem_embed") as err:
        load_model(_official(tmp_path, dropped), spec)
    assert str(tmp_path) in str(err.value)
    with pytest.raises(InputError, match=r"1 unexpected key\(s\): extra\.weight"):
        load_model(_official(tmp_path, {**state, "extra.weight": torch.zeros(2)}), spec)
    many = {k: v for i, (k, v) in enumerate(state.items()) if i >= 10}
    with pytest.raises(InputError, match=r"10 missing key\(s\): .*\.\.\. and 2 more"):
        load_model(_official(tmp_path, many), spec)
    wider = sm.SAM2Spec(**{**spec.__dict__, "embed_dim": 16})
    with pytest.raises(InputError, match=r"shape mismatch.*image_encoder\.trunk\.pos_embed \(1, 8, 7, 7\)"):
        load_model(_official(tmp_path, state), wider)


def test_foreign_files_give_clear_errors(tiny, tmp_path) -> None:
    spec, _ = tiny
    text = tmp_path / "notes.pt"
    text.write_text("definitely not a checkpoint")
    with pytest.raises(InputError, match=r"not a PyTorch checkpoint \(the file starts with b'definit") as err:
        load_model(text, spec)
    assert not re.search(r"\(\d+\)", str(err.value))  # no bare pickle opcode such as "(105)"
    pickled = tmp_path / "pickled.pt"
    torch.save({"model": {}, "hook": print}, pickled)
    with pytest.raises(InputError, match="holding objects other than weights"):
        load_model(pickled, spec)
    cut = tmp_path / "cut.pt"
    torch.save({"model": {"w": torch.zeros(1000)}}, cut)
    cut.write_bytes(cut.read_bytes()[:300])
    with pytest.raises(InputError, match="damaged or truncated PyTorch checkpoint"):
        load_model(cut, spec)
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(InputError, match="holds a Tensor"):
        load_model(tensor, spec)
    nomodel = tmp_path / "nomodel.pt"
    torch.save({"state_dict": {}}, nomodel)
    with pytest.raises(InputError, match=r"no 'model' state dict.*state_dict"):
        load_model(nomodel, spec)
    lite = tmp_path / "lite.pt"
    torch.save({"format": "samsem-checkpoint", "version": 1, "family": "lite", "model": {}}, lite)
    with pytest.raises(InputError, match="'lite' checkpoint, not a SAM2 one"):
        load_model(lite, family="sam2")
    with pytest.raises(InputError, match="not found"):
        load_model(tmp_path / "absent.pt", spec)


def test_samsem_checkpoint_round_trip(tiny, tmp_path) -> None:
    spec, sam = tiny
    path = tmp_path / "ft.pt"
    save_model(path, sm.SAM2ImageModel(sam), spec, extra={"epoch": 3, "optimizer": {"lr": 1e-4}})
    assert [p.name for p in tmp_path.iterdir()] == ["ft.pt"]  # no temporary file left
    result = load_model(path, family="sam2")
    loaded = result.module.sam
    assert result.spec == spec and result.family.name == "sam2"
    image, (coords, labels) = torch.randn(2, 3, 128, 128), _points(2, 2, 128)
    for a, b in zip(_run(sam, image, coords, labels), _run(loaded, image, coords, labels), strict=True):
        assert torch.equal(a, b)
    raw = torch.load(path, weights_only=True)
    assert (raw["format"], raw["version"], raw["family"], raw["epoch"]) == ("samsem-checkpoint", 1, "sam2", 3)
    with pytest.raises(ConfigError, match="was saved with"):
        load_model(path, sm.tiny_spec(256), family="sam2")
    with pytest.raises(ConfigError, match="reserved"):
        save_model(path, sam, spec, extra={"model": {}})


# -------------------------------------------------------------------------------------------- io-spec


def test_iospec_profiles_and_json_round_trip() -> None:
    from samsem.runtime.models import iospec

    engines = sm.geometry(sm.SAM2Spec(image_size=512)).engines()
    assert iospec.engines_from_json(iospec.engines_to_json(engines)) == engines
    prof = engines["decoder"].profile(1, 4, 8, points_max=6)
    assert prof["image_embed"] == ((1, 256, 32, 32), (4, 256, 32, 32), (8, 256, 32, 32))
    assert prof["feat_s0"][2] == (8, 32, 128, 128) and prof["feat_s1"][0] == (1, 64, 64, 64)
    assert prof["point_coords"] == ((1, 1, 2), (4, 6, 2), (8, 6, 2))
    assert set(engines["model"].profile(1, 1, 2, 3)) == {"image", "point_coords", "point_labels"}
    assert engines["model"].output_names == ("masks", "iou_scores")
    with pytest.raises(ValueError, match="batch_min"):
        engines["model"].profile(2, 1, 4, 3)
    from samsem.runtime.models.lite import LiteSpec
    from samsem.runtime.models.registry import get_family

    lite = get_family("lite").io(LiteSpec(input_size=256))["model"]
    assert lite.inputs[0].dims == ("batch", 1, 256, 256) and lite.output_names == ("logits",)
    out = {"logits": np.zeros((2, 1, 256, 256), np.float32)}
    lite.check_outputs(out, {"batch": 2})
    with pytest.raises(EngineError, match="batch size 2 != input's 3"):
        lite.check_outputs(out, {"batch": 3})
