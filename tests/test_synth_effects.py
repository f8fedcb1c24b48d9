"""Named synthesis effects: each switches on and off, changes the image the expected way and never the
ground truth; the randomized mode, forced/excluded effects, the real-like preset and the CLI options."""

from __future__ import annotations

import json
from dataclasses import replace

import cv2
import numpy as np
import pytest
from test_synth import CLEAN, ONLY_TRACKS

from samsem.cli import main
from samsem.errors import ConfigError
from samsem.io import read_image, read_mask
from samsem.synth import generate as gen
from samsem.synth.effects import (
    EffectSelection,
    active_effects,
    effect_names,
    effect_rng,
    get_effect,
    parse_effects,
    select_effects,
)
from samsem.synth.generate import generate_sample
from samsem.synth.imaging import ImagingConfig, line_codes, render_sem
from samsem.synth.layout import LayoutConfig, generate_layout
from samsem.synth.presets import SynthConfig, get_preset

TRACKS = replace(ONLY_TRACKS, pitch=(24, 24), width=(12, 12))
CLEAN_PRESET = SynthConfig("fx-clean", TRACKS, CLEAN)  # fixed parameters, wide horizontal tracks
ALL = effect_names()


def _alone(name: str) -> EffectSelection:
    return EffectSelection(force=(name,), exclude=tuple(n for n in ALL if n != name))


def _inside(mask: np.ndarray, r: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Metal and dielectric pixels at least r px from any edge: two (H, W) bool arrays."""
    k = np.ones((2 * r + 1, 2 * r + 1), np.uint8)
    return cv2.erode(mask, k) > 0, cv2.dilate(mask, k) == 0


def _tracks_mask() -> np.ndarray:
    m = np.zeros((192, 192), np.uint8)
    for y in range(10, 180, 30):
        m[y : y + 14, 12:180] = 1
    return m


# ----------------------------------------------------------------------------------------- the registry


def test_effect_names_and_errors() -> None:
    assert len(ALL) >= 15 and len(set(ALL)) == len(ALL)
    for name in (
        "low-contrast",
        "inverted",
        "bright-vias",
        "soft-edges",
        "show-through",
        "charging",
        "shading",
        "grain",
        "polish",
        "dust",
        "scratches",
        "residue",
        "delayered",
        "scan",
        "noise",
    ):
        assert name in ALL and get_effect(name).description
    assert parse_effects(" dust,noise ,dust") == ("dust", "noise")  # registry order, no duplicates
    assert parse_effects(None) == () and parse_effects("") == ()
    with pytest.raises(
        ConfigError, match=r"unknown effect\(s\) bogus; valid effects: low-contrast, inverted"
    ):
        parse_effects("dust,bogus")
    with pytest.raises(ConfigError, match="both forced and excluded"):
        EffectSelection(force=("dust",), exclude=("dust", "noise"))
    with pytest.raises(ConfigError, match="valid effects"):
        get_effect("nope")


@pytest.mark.parametrize("name", ALL)
def test_each_effect_switches_on_and_off_and_keeps_the_ground_truth(name: str) -> None:
    plain = generate_sample("random", 160, 160, 5, effects=EffectSelection(exclude=ALL))
    on = generate_sample("random", 160, 160, 5, effects=_alone(name))
    assert plain.meta["effects"] == [] and on.meta["effects"] == [name]
    assert np.array_equal(on.mask, plain.mask)  # no effect changes the ground truth
    assert on.meta["imaging"] != plain.meta["imaging"]
    if name not in ("dust", "scratches"):  # sparse: a 160-px image may hold none (tested below)
        assert not np.array_equal(on.image, plain.image)
    # forcing an effect onto a fixed preset applies it; excluding it from there removes it again
    forced = generate_sample("medium", 96, 96, 2, effects=EffectSelection(force=(name,)))
    assert name in forced.meta["effects"]
    off = generate_sample("hard", 96, 96, 2, effects=EffectSelection(exclude=(name,)))
    assert name not in off.meta["effects"]


# ------------------------------------------------------------------------------ directions of the effects


def _levels(sample) -> tuple[float, float]:
    metal, dielectric = _inside(sample.mask)
    return float(sample.image[metal].mean()), float(sample.image[dielectric].mean())


def test_inverted_and_low_contrast_levels() -> None:
    metal, bg = _levels(generate_sample(CLEAN_PRESET, 160, 160, 1))
    assert metal / bg == pytest.approx(0.55 / 0.18, rel=0.02)
    inv = generate_sample(CLEAN_PRESET, 160, 160, 1, effects=EffectSelection(force=("inverted",)))
    metal, bg = _levels(inv)
    assert metal < bg and bg / metal == pytest.approx(0.55 / 0.18, rel=0.02)
    ratios = []
    for seed in range(6):
        low = generate_sample(CLEAN_PRESET, 128, 128, seed, effects=EffectSelection(force=("low-contrast",)))
        metal, bg = _levels(low)
        ratios.append(metal / bg)
        both = EffectSelection(force=("low-contrast", "inverted"))
        metal, bg = _levels(generate_sample(CLEAN_PRESET, 128, 128, seed, effects=both))
        assert 1.27 <= bg / metal <= 1.73
    assert all(1.27 <= r <= 1.73 for r in ratios) and np.ptp(ratios) > 0.05
    # excluding low contrast lifts a low-contrast preset to a ratio of at least 1.8
    faint = replace(CLEAN_PRESET, name="faint", imaging=replace(CLEAN, metal_level=0.22))
    metal, bg = _levels(
        generate_sample(faint, 128, 128, 0, effects=EffectSelection(exclude=("low-contrast",)))
    )
    assert metal / bg >= 1.79


def test_show_through_dust_charging_residue_leave_metal_and_mask() -> None:
    plain = generate_sample(CLEAN_PRESET, 256, 256, 3)
    metal, dielectric = _inside(plain.mask)
    shown = generate_sample(CLEAN_PRESET, 256, 256, 3, effects=EffectSelection(force=("show-through",)))
    assert np.array_equal(shown.mask, plain.mask)
    assert np.array_equal(shown.image[metal], plain.image[metal])  # seen through the dielectric only
    assert shown.image[dielectric].std() > plain.image[dielectric].std() + 1
    assert shown.meta["show_through"] in ("parallel", "perpendicular")
    kinds = {
        generate_sample(CLEAN_PRESET, 64, 64, s, effects=EffectSelection(force=("show-through",))).meta[
            "show_through"
        ]
        for s in range(12)
    }
    assert kinds == {"parallel", "perpendicular"}
    charged = generate_sample(CLEAN_PRESET, 256, 256, 3, effects=EffectSelection(force=("charging",)))
    assert np.array_equal(charged.mask, plain.mask)
    assert charged.image.mean() > plain.image.mean() + 2 and charged.image.max() > plain.image.max()
    film = generate_sample(CLEAN_PRESET, 256, 256, 3, effects=EffectSelection(force=("residue",)))
    assert np.array_equal(film.mask, plain.mask) and film.image.mean() < plain.image.mean() - 1


def test_show_through_is_amplified_under_charging() -> None:
    m = np.zeros((256, 256), np.uint8)
    faint = replace(CLEAN, ghost_contrast=0.05, ghost_blur=1.0, charge_regions=1e-6, charge_scale=30.0)
    strong = replace(faint, ghost_charge_gain=6.0)
    a = render_sem(m, faint, seed=4, ghost_vertical=True).astype(float)
    b = render_sem(m, strong, seed=4, ghost_vertical=True).astype(float)
    assert np.abs(np.diff(b, axis=1)).max() > 3 * np.abs(np.diff(a, axis=1)).max()  # stripes much brighter


def test_dust_and_scratches() -> None:
    m = _tracks_mask()
    base = render_sem(m, CLEAN, seed=2).astype(int)
    dark = render_sem(m, replace(CLEAN, dust_density=300.0, dust_size=4.0, dust_dark=1.0), seed=2).astype(int)
    changed = dark != base
    assert changed.sum() > 100 and np.all(dark[changed] < base[changed])  # every particle dark
    scratched = render_sem(m, replace(CLEAN, scratches=400.0, scratch_width=2.0), seed=2).astype(int)
    diff = scratched - base
    assert (diff > 10).sum() > 50 and (diff < -10).sum() > 50  # bright and dark scratches
    # long and thin: the changed pixels form elongated components
    _, _, stats, _ = cv2.connectedComponentsWithStats((diff != 0).astype(np.uint8), connectivity=8)
    longest = max(max(s[cv2.CC_STAT_WIDTH], s[cv2.CC_STAT_HEIGHT]) for s in stats[1:])
    assert longest > 60


def test_delayered_lines_stay_whole_lines_in_the_ground_truth() -> None:
    plain = generate_sample(CLEAN_PRESET, 192, 192, 6)
    layered = generate_sample(CLEAN_PRESET, 192, 192, 6, effects=EffectSelection(force=("delayered",)))
    assert np.array_equal(layered.mask, plain.mask)
    metal, _ = _inside(plain.mask, 2)
    assert layered.image[metal].mean() < plain.image[metal].mean() - 3
    m = _tracks_mask()
    patchy = replace(CLEAN, patchy_prob=1.0, delayer_level=0.0, patch_scale=4.0)
    codes, n = line_codes(m, patchy, seed=1)
    assert n == 6 and set(np.unique(codes[m > 0]) // 85) == {2}  # every line patchy (84 levels per kind)
    img = render_sem(m, patchy, seed=1).astype(int)
    inner = _inside(m, 2)[0]
    full = round(0.55 * 255)
    assert (img[inner] >= full - 1).mean() > 0.1 and (img[inner] <= round(0.18 * 255) + 1).mean() > 0.1


def test_soft_edges_dome_grain_polish_scan_shading() -> None:
    m = _tracks_mask()
    flat = render_sem(m, CLEAN, seed=0).astype(float)
    dome = render_sem(m, replace(CLEAN, edge_profile=0.6, profile_width=2.5), seed=0).astype(float)
    assert dome[17, 90] > dome[11, 90] + 20 and dome[17, 90] == pytest.approx(flat[17, 90], abs=3)
    metal, dielectric = _inside(m)
    grainy = render_sem(m, replace(CLEAN, bg_grain=0.05), seed=0)
    assert grainy[dielectric].std() > 5 and np.array_equal(grainy[metal], flat[metal].astype(np.uint8))
    empty = np.zeros((256, 256), np.uint8)
    polished = render_sem(empty, replace(CLEAN, polish=0.08, polish_width=1.0), seed=5).astype(float)
    assert polished.std() > 2
    # streaks: along their direction the image changes far less than across it
    gy, gx = np.abs(np.diff(polished, axis=0)).mean(), np.abs(np.diff(polished, axis=1)).mean()
    assert max(gy, gx) > 1.2 * min(gy, gx) or polished.std() > 2
    rows = render_sem(empty, replace(CLEAN, row_offset=0.03), seed=5).astype(float)
    assert rows.mean(axis=1).std() > 3 and rows.mean(axis=0).std() < 1
    line = np.zeros((32, 128), np.uint8)
    line[:, 40:60] = 1
    lag = render_sem(line, replace(CLEAN, scan_lag=4.0), seed=0).astype(float)
    assert lag[10, 62] > lag[10, 37] + 10  # a tail after the line along the scan, none before it
    shaded = render_sem(empty, replace(CLEAN, shading=0.08, shading_gain=0.2), seed=7).astype(float)
    assert np.ptp(cv2.resize(shaded, (4, 4), interpolation=cv2.INTER_AREA)) > 8


def test_all_effects_at_once_are_deterministic_and_independent_of_strips() -> None:
    cfg, active = select_effects(
        get_preset("random").imaging, 9, randomized=False, selection=EffectSelection(ALL)
    )
    assert active == ALL
    cfg = replace(cfg, dust_density=300.0, scratches=300.0, patchy_prob=0.5)  # make sure strips are crossed
    lay = generate_layout(300, 260, LayoutConfig(via_pair_prob=0.5), np.random.default_rng(7))
    kw = {"vias": lay.vias, "ghost_vertical": True}
    whole = render_sem(lay.mask, cfg, seed=11, **kw)
    again = render_sem(lay.mask, cfg, seed=11, **kw)
    strips = render_sem(lay.mask, cfg, seed=11, max_strip_pixels=64 * 260, **kw)
    assert np.array_equal(whole, again) and np.array_equal(whole, strips)


def test_new_imaging_fields_are_validated() -> None:
    for bad in ({"patchy_prob": 1.5}, {"shading_gain": 2.0}, {"dust_dark": -0.1}, {"scratches": -1.0}):
        with pytest.raises(ConfigError):
            ImagingConfig(**bad)
    ImagingConfig(edge_gain=-0.2, ghost_contrast=-0.1)  # dark rims and dark show-through are allowed


# ----------------------------------------------------------------------------------- the randomized mode


def test_randomized_mode_draws_each_effect_from_its_own_stream() -> None:
    base = get_preset("random").imaging
    counts = dict.fromkeys(ALL, 0)
    n = 300
    for seed in range(n):
        _, on = select_effects(base, seed, randomized=True)
        drawn = tuple(e for e in ALL if effect_rng(seed, e).random() < get_effect(e).prob)
        assert on == drawn  # what the image shows is what was drawn
        for e in on:
            counts[e] += 1
        # leave one out: the other effects keep their draws
        _, without = select_effects(base, seed, randomized=True, selection=EffectSelection(exclude=("dust",)))
        assert without == tuple(e for e in on if e != "dust")
        _, forced = select_effects(base, seed, randomized=True, selection=EffectSelection(force=("scan",)))
        assert set(forced) == set(on) | {"scan"}
    for e in ALL:
        assert abs(counts[e] / n - get_effect(e).prob) < 0.1, e


def test_randomized_samples_are_deterministic_and_varied() -> None:
    a = generate_sample("random", 128, 128, 21)
    b = generate_sample("random", 128, 128, 21)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask) and a.meta == b.meta
    metas = [generate_sample("random", 64, 64, s).meta for s in range(16)]
    assert len({tuple(m["effects"]) for m in metas}) > 10
    mags = [m["imaging"]["magnification"] for m in metas]
    assert min(mags) >= 0.45 and max(mags) <= 6.5 and max(mags) / min(mags) > 3
    assert len({json.dumps(m["layout"], sort_keys=True) for m in metas}) > 4


def test_line_widths_span_2_to_60_px() -> None:
    p = get_preset("random")
    widths = [v.scaled(m).width for v in p.layout_variants for m in (0.45, 6.5)]
    assert min(w[0] for w in widths) <= 2 and max(w[1] for w in widths) >= 58


def test_via_pairs() -> None:
    cfg = replace(LayoutConfig(), via_prob=1.0, via_pair_prob=1.0, vertical_prob=0.0)
    lay = generate_layout(256, 320, cfg, np.random.default_rng(3))
    cx, cy = np.rint(lay.vias[:, 0]).astype(int), np.rint(lay.vias[:, 1]).astype(int)
    assert len(lay.vias) > 20 and lay.mask[cy, cx].all()
    d = np.hypot(*(lay.vias[:, None, :2] - lay.vias[None, :, :2]).transpose(2, 0, 1))
    np.fill_diagonal(d, np.inf)
    nearest = d.min(axis=1) / (2 * lay.vias[:, 2])  # in via diameters
    assert np.mean((nearest > 1.1) & (nearest < 1.7)) > 0.5  # most vias have a partner next to them


def test_real_like_preset() -> None:
    s = generate_sample("real-like", 320, 320, 4)
    inner, outer = _inside(s.mask)
    metal, bg = np.median(s.image[inner]), np.median(s.image[outer])  # medians: vias saturate
    assert 1.7 < metal / bg < 2.8 and 35 < bg < 55  # grey on grey
    assert s.image.max() == 255 and s.meta["via_count"] > 4  # saturated vias
    assert "bright-vias" in s.meta["effects"] and "soft-edges" in s.meta["effects"]


def test_preferred_direction_of_a_mask() -> None:
    m = _tracks_mask()
    assert not gen._preferred_vertical(m) and gen._preferred_vertical(np.ascontiguousarray(m.T))


def test_random_preset_with_svg_layouts(shared_layouts: list) -> None:
    from samsem.svg import read_layout

    layout = read_layout(shared_layouts[0])
    s = generate_sample("random", 256, 256, 3, source=layout, source_name="x")
    scale = s.meta["source"]["scale"]
    assert scale == pytest.approx(s.meta["imaging"]["magnification"] * get_preset("random").svg_scale)
    assert s.meta["line_count"] > 0 and s.mask.any()


# ---------------------------------------------------------------------------------------------------- CLI


def test_cli_effect_options(tmp_path, capsys) -> None:
    out = tmp_path / "ds"
    argv = ["synth", "--preset", "random", "--size", "96", "--count", "2", "--out", str(out)]
    assert main([*argv, "--effects", "dust,charging", "--exclude-effects", "noise"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    for entry in manifest["images"].values():
        assert entry["request"]["effects"] == ["charging", "dust"]
        assert entry["request"]["exclude_effects"] == ["noise"]
        assert {"charging", "dust"} <= set(entry["effects"]) and "noise" not in entry["effects"]
        assert read_mask(out / entry["mask"]).shape == read_image(out / entry["image"]).shape == (96, 96)
    first = {p.name: p.read_bytes() for p in (out / "images").iterdir()}
    capsys.readouterr()
    assert main([*argv, "--effects", "charging,dust", "--exclude-effects", "noise"]) == 0  # same request
    assert "wrote 0 image(s), skipped 2" in capsys.readouterr().out
    assert main([*argv, "--effects", "dust"]) == 0  # another request: regenerated
    assert "wrote 2 image(s)" in capsys.readouterr().out
    twin = tmp_path / "twin"
    twin_argv = [*argv[:-1], str(twin), "--effects", "dust,charging", "--exclude-effects", "noise"]
    assert main(twin_argv) == 0
    assert {p.name: p.read_bytes() for p in (twin / "images").iterdir()} == first
    assert main(["synth", "--list-effects"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in ALL)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--effects", "dust,glitter"], "unknown effect(s) glitter; valid effects: low-contrast, inverted"),
        (["--exclude-effects", "nope"], "valid effects: low-contrast"),
        (["--effects", "dust", "--exclude-effects", "dust"], "both forced and excluded"),
    ],
)
def test_cli_effect_errors(tmp_path, capsys, argv: list[str], message: str) -> None:
    assert main(["synth", *argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_active_effects_of_the_existing_presets() -> None:
    assert active_effects(replace(CLEAN, dose=50.0)) == ()
    hard = get_preset("hard").sample_imaging(np.random.default_rng(0))
    assert {"show-through", "charging", "delayered", "dust"} <= set(active_effects(hard))


# ------------------------------------------------------------------------------------------ held-out sets


def _heldout_tool():
    import importlib.util
    import sys
    from pathlib import Path

    if "make_heldout_sets" not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "tools" / "make_heldout_sets.py"
        spec = importlib.util.spec_from_file_location("make_heldout_sets", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["make_heldout_sets"] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules["make_heldout_sets"]


def test_make_heldout_sets(tmp_path, capsys) -> None:
    tool = _heldout_tool()
    out = tmp_path / "heldout"
    argv = [
        str(out),
        "--count",
        "1",
        "--size",
        "64",
        "--conditions",
        "clean,charging",
        "--layouts",
        str(tmp_path),
    ]
    assert tool.main([*argv, "--leave-one-out", "dust"]) == 0
    assert "label0004.svg is absent" in capsys.readouterr().out
    index = json.loads((out / "heldout.json").read_text())
    assert [s["folder"] for s in index["sets"]] == [
        "charging-procedural",
        "clean-procedural",
        "loo-dust-procedural",
    ]
    seeds = [s["base_seed"] for s in index["sets"]]
    assert len(set(seeds)) == 3 and min(seeds) >= tool.HELDOUT_SEED  # disjoint from training seeds
    entry = next(
        iter(json.loads((out / "charging-procedural" / "manifest.json").read_text())["images"].values())
    )
    assert set(entry["effects"]) == {"charging", "show-through"}
    entry = next(
        iter(json.loads((out / "clean-procedural" / "manifest.json").read_text())["images"].values())
    )
    assert entry["effects"] == []
    image = (out / "clean-procedural" / "images").iterdir().__next__().read_bytes()
    assert tool.main(argv) == 0  # rerun: resumes, same bytes
    assert "wrote 0, kept 1" in capsys.readouterr().out
    assert (out / "clean-procedural" / "images").iterdir().__next__().read_bytes() == image
    assert tool.main([*argv[:-4], "--conditions", "nope"]) == 2
    assert "unknown condition(s) nope" in capsys.readouterr().err


def test_make_heldout_sets_uses_the_held_out_layout(tmp_path, shared_layouts: list, capsys) -> None:
    tool = _heldout_tool()
    out = tmp_path / "heldout"
    argv = [str(out), "--count", "1", "--size", "64", "--conditions", "real-like"]
    assert tool.main([*argv, "--layouts", str(shared_layouts[0].parent)]) == 0
    entry = next(
        iter(json.loads((out / "real-like-label0004" / "manifest.json").read_text())["images"].values())
    )
    assert entry["source"]["file"] == "label0004.svg"
