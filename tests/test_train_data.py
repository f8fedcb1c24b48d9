"""Training data: discovery of the folder layouts, deterministic per-IC splits, items, prompts, dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from samsem.errors import InputError
from samsem.io import write_image, write_mask
from samsem.runtime.stages.tiling import TilingConfig
from samsem.train.augment import AugmentConfig
from samsem.train.data import (
    Sample,
    TrainDataset,
    discover,
    discover_all,
    epoch_order,
    make_items,
    point_prompt,
    split_counts,
    split_samples,
)


def _write_pair(folder: Path, stem: str, size: int = 96, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = np.zeros((size, size), np.uint8)
    mask[20:28, 8:-8] = 1
    mask[8:-8, 60:66] = 1
    image = (mask * 150 + 40 + rng.integers(0, 20, mask.shape)).astype(np.uint8)
    write_image(folder / "images" / f"{stem}.png", image)
    write_mask(folder / "masks" / f"{stem}.png", mask)
    return mask


def _fake(ic: str, n: int) -> list[Sample]:
    return [Sample(f"{ic}/{k:03d}", ic, Path(f"{ic}{k}.png"), Path(f"{ic}{k}m.png")) for k in range(n)]


@pytest.mark.parametrize(
    ("n", "expected"),
    [(1, (1, 0, 0)), (2, (1, 1, 0)), (3, (1, 1, 1)), (4, (2, 1, 1)), (10, (7, 1, 2)), (20, (14, 2, 4))],
)
def test_split_counts(n, expected):
    assert split_counts(n, 0.1, 0.2) == expected


def test_splits_are_deterministic_per_ic_and_disjoint():
    samples = _fake("a", 10) + _fake("b", 20)
    s1 = split_samples(samples, seed=3)
    s2 = split_samples(list(reversed(samples)), seed=3)
    assert s1 == s2
    names = [s.name for k in ("train", "val", "test") for s in s1[k]]
    assert sorted(names) == sorted(s.name for s in samples)
    for ic, n in (("a", 10), ("b", 20)):
        counts = tuple(sum(s.ic == ic for s in s1[k]) for k in ("train", "val", "test"))
        assert counts == split_counts(n, 0.1, 0.2)
    other = split_samples(samples, seed=4)
    assert other["val"] != s1["val"] or other["test"] != s1["test"]
    assert s1["ood"] == []


def test_ood_split_holds_out_whole_ics():
    samples = _fake("a", 10) + _fake("b", 5)
    s = split_samples(samples, ood_ics=["b"])
    assert [x.ic for x in s["ood"]] == ["b"] * 5
    assert all(x.ic == "a" for k in ("train", "val", "test") for x in s[k])
    with pytest.raises(InputError, match="not in the data"):
        split_samples(samples, ood_ics=["zz"])


def test_discover_layouts(tmp_path):
    _write_pair(tmp_path / "flat", "x1")
    _write_pair(tmp_path / "flat", "x0")
    flat = discover(tmp_path / "flat")
    assert [s.name for s in flat] == ["flat/x0", "flat/x1"] and flat[0].ic == "flat"

    for ic in ("chipB", "chipA"):
        _write_pair(tmp_path / "nested" / ic, "im")
    nested = discover(tmp_path / "nested")
    assert [(s.ic, s.name) for s in nested] == [("chipA", "chipA/im"), ("chipB", "chipB/im")]

    man = tmp_path / "man"
    _write_pair(man, "p")
    _write_pair(man, "q")
    entries = [
        {"image": f"images/{k}.png", "mask": f"masks/{k}.png", "ic": ic} for k, ic in (("p", "u"), ("q", "v"))
    ]
    (man / "manifest.json").write_text(json.dumps({"samples": entries}))
    assert [(s.ic, s.image.name) for s in discover(man)] == [("u", "p.png"), ("v", "q.png")]

    assert len(discover_all([tmp_path / "flat", tmp_path / "nested"])) == 4
    with pytest.raises(InputError, match="also used"):
        discover_all([tmp_path / "flat", tmp_path / "flat"])


def test_discover_errors_and_svg_labels(tmp_path):
    bad = tmp_path / "bad"
    _write_pair(bad, "a")
    (bad / "masks" / "a.png").unlink()
    with pytest.raises(InputError, match="no mask"):
        discover(bad)
    (bad / "labels").mkdir()
    (bad / "labels" / "a.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="96" height="96">'
        '<rect x="10" y="10" width="20" height="5"/></svg>'
    )
    (s,) = discover(bad)
    assert s.mask.suffix == ".svg"
    ds = TrainDataset([s], "model1", 96, AugmentConfig(p=0.0), TilingConfig(64), seed=0)
    assert ds[0]["mask"].sum() == 21 * 6
    with pytest.raises(InputError, match="no labelled images"):
        discover(tmp_path / "bad" / "labels")
    with pytest.raises(InputError, match="not found"):
        discover(tmp_path / "missing")


def test_items_follow_target_and_runtime_tiling():
    tiling = TilingConfig(64, 0.1)
    sizes = [(128, 128), (64, 100)]
    single = make_items(sizes, "single", tiling)
    assert [i.scale for i in single].count(1) == 2
    assert len(make_items(sizes, "model2", tiling)) == 9 + 2
    assert make_items(sizes, "model1", tiling)[1].box == (0, 0, 64, 100)
    boxes = [i.box for i in make_items(sizes, "model2", tiling) if i.sample == 0]
    assert boxes[0] == (0, 0, 64, 64) and boxes[-1] == (64, 64, 128, 128)


def test_point_prompt_on_foreground_and_empty():
    rng = np.random.default_rng(0)
    mask = np.zeros((32, 32), np.uint8)
    mask[5:7, 10:20] = 1
    for _ in range(20):
        ((x, y),) = point_prompt(mask, rng)
        assert mask[int(y), int(x)] == 1
    pts = point_prompt(np.zeros((32, 32), np.uint8), rng)
    assert pts.shape == (1, 2) and pts.min() >= 0 and pts.max() < 32


def test_dataset_items_are_seeded_by_epoch(tmp_path):
    _write_pair(tmp_path / "d", "a", 128)
    samples = discover(tmp_path / "d")
    ds = TrainDataset(samples, "single", 64, AugmentConfig(p=1.0, intensity=0.3), TilingConfig(64), seed=1)
    assert len(ds) == 1 + 9
    ds.set_epoch(0)
    a, b = ds[3], ds[3]
    assert a["image"].shape == a["mask"].shape == (1, 64, 64) and a["points"].shape == (1, 2)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    ds.set_epoch(1)
    assert not np.array_equal(a["image"], ds[3]["image"])
    ((x, y),) = ds[3]["points"].numpy()
    assert ds[3]["mask"][0, int(y), int(x)] == 1 or ds[3]["mask"].sum() == 0
    assert epoch_order(10, 1, 0) == epoch_order(10, 1, 0) != epoch_order(10, 1, 1)
    assert sorted(epoch_order(10, 1, 0)) == list(range(10))


def test_dataset_patch_matches_source(tmp_path):
    mask = _write_pair(tmp_path / "d", "a", 128)
    ds = TrainDataset(discover(tmp_path / "d"), "model2", 128, AugmentConfig(p=0.0), TilingConfig(64), seed=0)
    item = ds.items[4]
    y0, x0, y1, x1 = item.box
    out = ds[4]
    # a 64-px patch upscaled 2x: the mask is the nearest-neighbour-like upscale of the source patch
    src = mask[y0:y1, x0:x1].astype(np.float32)
    np.testing.assert_array_equal(out["mask"][0].numpy()[::2, ::2], src)
    img = out["image"][0].numpy()
    assert img[out["mask"][0].numpy() == 1].mean() > img[out["mask"][0].numpy() == 0].mean() + 0.4


def test_discover_synth_output(tmp_path):
    from samsem.synth.generate import generate_dataset

    generate_dataset(tmp_path / "syn", "medium", 2, 96, 96, seed=0, progress=False)
    samples = discover(tmp_path / "syn")
    assert [s.ic for s in samples] == ["medium", "medium"]
    assert all(s.image.is_file() and s.mask.is_file() for s in samples)
    # samples cut from an SVG layout belong to that layout's IC
    manifest = json.loads((tmp_path / "syn" / "manifest.json").read_text())
    first = next(iter(manifest["images"].values()))
    first["source"] = {"kind": "svg", "file": "label0003.svg", "crop_yx": [0, 0], "scale": 1.0}
    (tmp_path / "syn" / "manifest.json").write_text(json.dumps(manifest))
    assert sorted(s.ic for s in discover(tmp_path / "syn")) == ["label0003", "medium"]
