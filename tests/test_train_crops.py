"""The random-crop training recipe (`samsem train --sampler crops`): runtime-identical input mapping,
seeded crops, hard negatives, dark-metal samples, a whole run with kept checkpoints; the held-out
tools that measure it."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from samsem.errors import ConfigError
from samsem.io import write_image, write_mask
from samsem.runtime.stages.preprocess import apply_range, estimate_background, intensity_range
from samsem.train.augment import AugmentConfig
from samsem.train.config import family_config
from samsem.train.data import CropDataset, Sample, discover, prepare_sample

REPO = Path(__file__).resolve().parents[1]


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _half_empty(root: Path, stem: str = "a", size: int = 256, dark: bool = False) -> Sample:
    """Lines in the top half only; the bottom half is empty, noisy dielectric with a brightness ramp."""
    rng = np.random.default_rng(3)
    mask = np.zeros((size, size), np.uint8)
    for y in range(10, size // 2 - 12, 24):
        mask[y : y + 8, 8 : size - 8] = 1
    ramp = np.linspace(0, 40, size)[None, :]
    metal, bg = (40, 170) if dark else (200, 60)
    image = np.where(mask > 0, metal, bg) + ramp + rng.normal(0, 8, mask.shape)
    write_image(root / "images" / f"{stem}.png", image.clip(0, 255).astype(np.uint8))
    write_mask(root / "masks" / f"{stem}.png", mask)
    return Sample(
        f"ic/{stem}", "ic", root / "images" / f"{stem}.png", root / "masks" / f"{stem}.png", str(root), dark
    )


def _dataset(samples, **kw) -> CropDataset:
    args = dict(
        crop_size=64,
        crops_per_epoch=16,
        scales=(1, 2),
        scale_probs=(0.5, 0.5),
        negative_fraction=0.0,
        flatten=32,
        augment_cfg=AugmentConfig(p=0.0),
        seed=0,
    )
    args.update(kw)
    return CropDataset(samples, **args)


def test_crops_are_mapped_like_the_runtime(tmp_path):
    sample = _half_empty(tmp_path)
    prep = prepare_sample(sample, 32, 64)
    raw = prep.raw
    background = estimate_background(raw, 32)
    levels = intensity_range(raw, background=background)
    assert prep.levels == levels
    expected = apply_range(background.flatten(raw), levels)[40:104, 30:94]
    np.testing.assert_allclose(prep.mapped(40, 30, 104, 94), expected, atol=2e-6)


def test_crops_are_seeded_and_sized(tmp_path):
    ds = _dataset([_half_empty(tmp_path)])
    a, b = ds[3], ds[3]
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert a["image"].shape == a["mask"].shape == (1, 64, 64)
    ds.set_epoch(1)
    assert not np.array_equal(ds[3]["image"], a["image"])
    factors = {ds.crop(i)[2] for i in range(16)}
    assert factors == {1, 2}


def test_negative_crops_hold_no_metal(tmp_path):
    ds = _dataset([_half_empty(tmp_path, size=384)], negative_fraction=1.0, scales=(1,), scale_probs=(1.0,))
    masks = [ds.crop(i)[1] for i in range(16)]
    assert all(m.sum() == 0 for m in masks)
    uniform = _dataset(
        [_half_empty(tmp_path, size=384)], negative_fraction=0.0, scales=(1,), scale_probs=(1.0,)
    )
    assert sum(uniform.crop(i)[1].sum() > 0 for i in range(16)) >= 4


def test_dark_metal_samples_are_mapped_bright(tmp_path):
    sample = _half_empty(tmp_path, dark=True)
    prep = prepare_sample(sample, 32, 64)
    image = prep.mapped(0, 0, 256, 256)
    assert image[prep.mask > 0].mean() > image[prep.mask == 0].mean() + 0.4


def test_manifest_marks_inverted_images_dark(tmp_path):
    _half_empty(tmp_path, "a")
    _half_empty(tmp_path, "b", dark=True)
    entry = {"image": "images/{}.png", "mask": "masks/{}.png", "preset": "p"}
    images = {s: {k: v.format(s) for k, v in entry.items()} for s in "ab"}
    images["b"]["effects"] = ["inverted", "noise"]
    (tmp_path / "manifest.json").write_text(json.dumps({"images": images}))
    samples = {s.name: s for s in discover(tmp_path)}
    assert (samples["p/a"].dark_metal, samples["p/b"].dark_metal) == (False, True)
    assert samples["p/a"].group == str(tmp_path)


def test_config_checks_the_crop_settings():
    base = family_config("lite")
    with pytest.raises(ConfigError, match="sampler"):
        base.with_overrides(sampler="pixels")
    with pytest.raises(ConfigError, match="crop_scales"):
        base.with_overrides(crop_scales=(1, 2), crop_scale_probs=(1.0,))
    with pytest.raises(ConfigError, match="negative_fraction"):
        base.with_overrides(negative_fraction=1.5)
    from samsem.runtime.config import PipelineConfig

    assert base.flatten == PipelineConfig().flatten  # training inputs and validation flatten as the runtime
    cfg = base.with_overrides(sampler="crops", crop_scales=(1, 4), crop_scale_probs=(0.7, 0.3))
    assert type(cfg).from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_crop_run_keeps_every_epoch_and_resumes(tmp_path):
    from samsem.train.loop import train

    data = tmp_path / "data"
    for stem in "abcd":
        _half_empty(data, stem, size=192)
    cfg = family_config("lite").with_overrides(
        data=(str(data),),
        out=str(tmp_path / "run"),
        model_config="tiny",
        input_size=64,
        patch_size=64,
        device="cpu",
        progress=False,
        sampler="crops",
        crop_size=64,
        crops_per_epoch=8,
        batch_size=4,
        epochs=2,
        flatten=32,
        keep_checkpoints=True,
        test_fraction=0.0,
        val_fraction=0.25,
    )
    result = train(cfg)
    assert len(result.history) == 2 and result.history[-1]["steps"] == 4
    assert sorted(p.name for p in (tmp_path / "run" / "epochs").iterdir()) == ["epoch_000.pt", "epoch_001.pt"]
    again = train(cfg.with_overrides(epochs=3))
    assert [r["epoch"] for r in again.history] == [0, 1, 2]
    # the learning curve: every kept checkpoint on the test set, plus the logged validation rates
    run = tmp_path / "run"
    assert _tool("learning_curve").main([str(run), "--tests", str(data), "--images", "1"]) == 0
    with (run / "learning_curve.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["epoch"], r["test_set"]) for r in rows if r["test_set"] == "data") == [
        ("0", "data"),
        ("1", "data"),
        ("2", "data"),
    ]
    assert len([r for r in rows if r["test_set"] == "validation"]) == 3
    assert (run / "learning_curve.png").stat().st_size > 0


def test_independent_renderer_is_deterministic_and_keeps_polarity():
    render = _tool("independent_render").render
    mask = np.zeros((128, 128), bool)
    mask[20:30, 10:120] = mask[60:70, 10:120] = True
    for condition in ("poisson", "lowcontrast", "charging", "textured", "inverted"):
        image, out_mask = render(mask, condition, seed=5)
        again, _ = render(mask, condition, seed=5)
        assert np.array_equal(image, again) and image.dtype == np.uint8
        metal, bg = image[out_mask > 0].mean(), image[out_mask == 0].mean()
        assert (metal < bg) if condition == "inverted" else (metal > bg), condition
    _, emptied = render(mask, "textured", seed=5)
    assert 0 < emptied.sum() < mask.sum()
