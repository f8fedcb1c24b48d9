"""Synthetic SEM generator: layout geometry, imaging effects, presets, generation API and CLI."""

from __future__ import annotations

import json
from dataclasses import replace

import cv2
import numpy as np
import pytest

from samsem.cli import main
from samsem.errors import ConfigError
from samsem.io import read_image, read_mask
from samsem.synth import generate as gen
from samsem.synth.generate import generate_sample, image_seed
from samsem.synth.imaging import ImagingConfig, count_lines, line_codes, render_sem
from samsem.synth.layout import LayoutConfig, generate_layout
from samsem.synth.presets import SynthConfig, get_preset, preset_names, register_preset

# a config with every imaging effect off: exact levels, no noise
CLEAN = ImagingConfig(
    edge_gain=0.0,
    voltage_contrast=0.0,
    grain=0.0,
    via_contrast=0.0,
    blur_sigma=0.0,
    dose=0.0,
    read_noise=0.0,
)
ONLY_TRACKS = LayoutConfig(
    pitch=(14, 14),
    width=(6, 6),
    route_prob=0.0,
    pad_prob=0.0,
    rail_prob=0.0,
    stub_prob=0.0,
    via_prob=0.0,
    near_miss_prob=0.0,
    vertical_prob=0.0,
)


def _components(mask: np.ndarray) -> tuple[int, np.ndarray]:
    n, lab = cv2.connectedComponents(mask, connectivity=8, ltype=cv2.CV_32S)
    return n - 1, lab


def _close_pairs(mask: np.ndarray, max_gap: int) -> int:
    """Pixels whose (2r+1)^2 window holds two different lines, r = ceil((max_gap+1)/2): > 0 iff some
    distinct lines are at most `max_gap` background px apart (Chebyshev)."""
    _, lab = _components(mask)
    r = (max_gap + 2) // 2
    k = np.ones((2 * r + 1, 2 * r + 1), np.uint8)
    big = np.where(lab > 0, lab, np.iinfo(np.int32).max).astype(np.float32)
    hi = cv2.dilate(lab.astype(np.float32), k)
    lo = cv2.erode(big, k)
    return int(np.count_nonzero((hi > 0) & (lo < hi)))


def _lines_mask() -> np.ndarray:
    """Two 20-px lines, a 4-px line and a 60x60 pad on 160x160."""
    m = np.zeros((160, 160), np.uint8)
    m[20:40, 10:150] = 1
    m[60:80, 10:150] = 1
    m[100:104, 10:150] = 1
    m[110:160, 100:160] = 1
    return m


# ------------------------------------------------------------------------------------------------ layout


@pytest.mark.parametrize("seed", range(4))
def test_layout_line_count_equals_8_connected_components(seed: int) -> None:
    cfg = LayoutConfig(near_miss_prob=0.3, vertical_prob=0.5, pad_prob=0.3, route_prob=0.35)
    lay = generate_layout(384, 320, cfg, np.random.default_rng(seed))
    assert lay.mask.shape == (384, 320) and lay.mask.dtype == np.uint8
    assert set(np.unique(lay.mask)) <= {0, 1}
    assert _components(lay.mask)[0] == len(lay.lines) > 10
    for info in lay.lines:  # every bbox holds metal and lies inside the image
        y0, x0, y1, x1 = info.bbox
        assert 0 <= y0 < y1 <= 384 and 0 <= x0 < x1 <= 320
        assert lay.mask[y0:y1, x0:x1].any()


def test_fixed_width_tracks_are_exact_rectangles() -> None:
    lay = generate_layout(300, 400, ONLY_TRACKS, np.random.default_rng(1))
    n, _, stats, _ = cv2.connectedComponentsWithStats(lay.mask, connectivity=8)
    stats = stats[1:]
    assert n - 1 == len(lay.lines) > 30
    assert np.all(stats[:, cv2.CC_STAT_HEIGHT] == 6)
    assert np.all(stats[:, cv2.CC_STAT_AREA] == 6 * stats[:, cv2.CC_STAT_WIDTH])
    tops = np.unique(stats[:, cv2.CC_STAT_TOP])
    assert np.all(np.diff(tops) == 14)  # one track every pitch


def test_fixed_width_routes_are_exactly_that_wide() -> None:
    cfg = replace(ONLY_TRACKS, route_prob=1.0, width=(5, 5), pitch=(12, 12))
    lay = generate_layout(320, 320, cfg, np.random.default_rng(2))
    assert {i.kind for i in lay.lines} == {"route"}
    eroded5 = cv2.erode(lay.mask, np.ones((5, 5), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    eroded6 = cv2.erode(lay.mask, np.ones((6, 6), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    assert not eroded6.any()  # nowhere wider than 5 px
    # every route interior (away from the image border) survives a 5x5 erosion: at least 5 px wide
    _, lab = _components(lay.mask)
    inner = [i for i in range(1, lab.max() + 1) if (lab[2:-2, 2:-2] == i).any()]
    assert all(eroded5[lab == i].any() for i in inner)
    # horizontal legs: every column run through metal is exactly 5 rows tall where no jog passes
    runs = np.diff(np.pad(lay.mask, ((1, 1), (0, 0))).astype(np.int8), axis=0)
    lengths = np.flatnonzero(runs.T.ravel() == -1) - np.flatnonzero(runs.T.ravel() == 1)
    assert np.bincount(lengths).argmax() == 5


def test_min_space_holds_without_near_misses_and_near_misses_appear_on_request() -> None:
    far = replace(LayoutConfig(min_space=4), near_miss_prob=0.0)
    lay = generate_layout(384, 384, far, np.random.default_rng(3))
    assert _close_pairs(lay.mask, 3) == 0  # all distinct lines >= 4 px apart
    assert len(lay.near_misses) == 0
    near = replace(far, near_miss_prob=1.0)
    lay = generate_layout(384, 384, near, np.random.default_rng(3))
    n, lab = _components(lay.mask)
    assert n == len(lay.lines)  # still distinct
    assert _close_pairs(lay.mask, 1) > 0 and _close_pairs(lay.mask, 3) > _close_pairs(lay.mask, 1)
    assert len(lay.near_misses) > 10
    widest = max(i.width for i in lay.lines)
    for y, x, gap in lay.near_misses:
        assert 1 <= gap <= 3 and lay.mask[y, x] == 0
        r = gap + widest
        window = lab[max(y - r, 0) : y + r + 1, max(x - r, 0) : x + r + 1]
        assert len(np.unique(window[window > 0])) >= 2


def test_layout_vias_lie_on_metal() -> None:
    cfg = replace(LayoutConfig(), via_prob=1.0, vertical_prob=1.0)
    lay = generate_layout(256, 256, cfg, np.random.default_rng(4))
    assert lay.vertical and len(lay.vias) > 10
    cx, cy = np.rint(lay.vias[:, 0]).astype(int), np.rint(lay.vias[:, 1]).astype(int)
    assert lay.mask[cy, cx].all()


def test_layout_config_validation_and_scaling() -> None:
    with pytest.raises(ConfigError, match="does not fit pitch"):
        LayoutConfig(pitch=(8, 10), width=(6, 8), min_space=4)
    with pytest.raises(ConfigError, match="probability"):
        LayoutConfig(density=1.5)
    with pytest.raises(ConfigError, match="min_space"):
        LayoutConfig(min_space=0, width=(2, 3))
    big = LayoutConfig().scaled(2.0)
    assert big.pitch == (24, 40) and big.width == (8, 18) and big.near_miss_gap == (1, 3)
    small = LayoutConfig().scaled(0.25)
    assert small.width[0] + small.min_space <= small.pitch[0]
    assert LayoutConfig.from_dict(big.to_dict()) == big


# ----------------------------------------------------------------------------------------------- imaging


def test_line_codes_join_pieces_across_strips() -> None:
    rng = np.random.default_rng(5)
    blobs = (cv2.GaussianBlur(rng.random((300, 200)).astype(np.float32), (0, 0), 3) > 0.52).astype(np.uint8)
    blobs[10:290, 50:53] = 1  # a long vertical line crossing every strip
    n, lab = _components(blobs)
    codes, n_lines = line_codes(blobs, replace(CLEAN, delayer_prob=0.5), seed=1, max_strip_pixels=64 * 200)
    assert n_lines == n == count_lines(blobs, max_strip_pixels=64 * 200)
    assert np.array_equal(codes > 0, blobs > 0)
    for i in range(1, n + 1):  # one code per line, whatever the strips
        assert len(np.unique(codes[lab == i])) == 1
    whole, _ = line_codes(blobs, replace(CLEAN, delayer_prob=0.5), seed=1)
    assert np.array_equal(codes, whole)
    assert (
        len(np.unique(whole[whole > 0] & 127)) > 5 and (whole >= 128).any() and (whole[whole > 0] < 128).any()
    )


def test_render_sem_levels_and_bit_depths() -> None:
    m = _lines_mask()
    img = render_sem(m, CLEAN, seed=0)
    assert img.dtype == np.uint8 and img.shape == m.shape
    assert np.all(img[m == 1] == round(0.55 * 255)) and np.all(img[m == 0] == round(0.18 * 255))
    img16 = render_sem(m, CLEAN, seed=0, bit_depth=16)
    assert img16.dtype == np.uint16
    assert np.all(img16[m == 1] == round(0.55 * 65535))
    real = render_sem(m, ImagingConfig(), seed=0)
    assert real[m == 1].mean() > real[m == 0].mean() + 60
    with pytest.raises(ConfigError, match="bit depth"):
        render_sem(m, CLEAN, seed=0, bit_depth=12)
    with pytest.raises(ConfigError, match="uint8"):
        render_sem(m.astype(bool), CLEAN, seed=0)


def test_more_dose_means_less_noise() -> None:
    m = _lines_mask()
    flat = m == 0
    stds = [render_sem(m, replace(CLEAN, dose=d), seed=1)[flat].std() for d in (5.0, 50.0, 500.0)]
    assert stds[0] > 2 * stds[1] > 4 * stds[2] > 0
    # Poisson: the variance scales with the mean signal, metal is noisier than dielectric
    img = render_sem(m, replace(CLEAN, dose=20.0), seed=1).astype(np.float64)
    assert img[20:40, 20:140].std() > img[m == 0].std()


def test_edge_brightening_raises_the_rim() -> None:
    m = _lines_mask()
    plain = render_sem(m, CLEAN, seed=0).astype(int)
    edged = render_sem(m, replace(CLEAN, edge_gain=0.3, edge_width=1.0), seed=0).astype(int)
    rim, centre = edged[20, 30:130], edged[30, 30:130]  # top edge row vs the middle of a 20-px line
    assert rim.mean() > centre.mean() + 40
    assert centre.mean() == pytest.approx(plain[30, 30:130].mean(), abs=2)
    outside = edged[40, 30:130].mean() - plain[40, 30:130].mean()  # first dielectric row below the line
    assert 5 < outside < (rim.mean() - plain[20, 30:130].mean()) / 2  # a weaker glow off the edge
    narrow = edged[101:103, 30:130].mean()  # a 4-px line: both rims overlap -> brighter than a wide one
    assert narrow > centre.mean() + 30


def test_outline_only_lines_have_dark_interiors_but_stay_metal() -> None:
    m = _lines_mask()
    cfg = replace(CLEAN, edge_gain=0.3, edge_width=1.0)
    full = render_sem(m, cfg, seed=0).astype(int)
    hollow = render_sem(m, replace(cfg, delayer_prob=1.0, delayer_level=0.1), seed=0).astype(int)
    assert hollow[25:35, 30:130].mean() < full[25:35, 30:130].mean() - 60
    assert hollow[25:35, 30:130].mean() < 0.18 * 255 + 0.15 * 0.37 * 255 + 3  # interior near dielectric
    assert hollow[20, 30:130].mean() > hollow[30, 30:130].mean() + 40  # the rim stays bright


def test_voltage_contrast_varies_per_line_not_within() -> None:
    m = np.zeros((200, 200), np.uint8)
    for k in range(10):
        m[10 + 18 * k : 20 + 18 * k, 10:190] = 1
    img = render_sem(m, replace(CLEAN, voltage_contrast=0.3), seed=2).astype(int)
    means = [img[12 + 18 * k : 18 + 18 * k, 20:180] for k in range(10)]
    assert all(v.std() == 0 for v in means)  # constant inside a line
    assert np.std([v.mean() for v in means]) > 10  # different between lines


def test_blur_jitter_ghost_charging_dust_drift_change_the_image_as_expected() -> None:
    m = _lines_mask()
    base = render_sem(m, CLEAN, seed=3).astype(float)
    blurred = render_sem(m, replace(CLEAN, blur_sigma=2.0), seed=3).astype(float)
    assert np.abs(np.diff(blurred[30], axis=0)).max() < np.abs(np.diff(base[30])).max() / 2
    assert np.abs(np.diff(blurred[:, 60])).max() < np.abs(np.diff(base[:, 60])).max() / 2
    # jitter: the left end of a line moves from row to row
    jit = render_sem(m, replace(CLEAN, jitter=1.5), seed=3).astype(float)
    ends = [np.argmax(jit[r] > 80) for r in range(22, 38)]
    assert len(set(ends)) > 1 and len({int(np.argmax(base[r] > 80)) for r in range(22, 38)}) == 1
    # ghost: structure appears in the dielectric only
    ghost = render_sem(m, replace(CLEAN, ghost_contrast=0.1), seed=3).astype(float)
    assert ghost[m == 0].std() > 2 and np.array_equal(ghost[m == 1], base[m == 1])
    empty = np.zeros((256, 256), np.uint8)
    across = render_sem(empty, replace(CLEAN, ghost_contrast=0.3), seed=3, ghost_vertical=True).astype(float)
    assert np.abs(np.diff(across, axis=1)).sum() > 2 * np.abs(np.diff(across, axis=0)).sum()  # vertical lines
    # charging: dielectric next to the large pad glows more than far from metal
    pad = np.zeros((256, 256), np.uint8)
    pad[96:160, 96:160] = 1
    charged = render_sem(pad, replace(CLEAN, charging=0.3, charging_radius=20.0), seed=3).astype(float)
    assert charged[90, 128] > charged[10, 10] + 10 and charged[128, 128] > base.max()
    dusty = render_sem(m, replace(CLEAN, dust_density=400.0, dust_size=4.0), seed=3)
    assert np.count_nonzero(dusty != base) > 200
    drift = render_sem(np.zeros((512, 512), np.uint8), replace(CLEAN, drift=0.3, drift_scale=100), seed=3)
    quads = [
        drift[:256, :256].mean(),
        drift[:256, 256:].mean(),
        drift[256:, :256].mean(),
        drift[256:, 256:].mean(),
    ]
    assert np.ptp(quads) > 3
    vias = np.array([[60.0, 30.0, 4.0]])
    with_via = render_sem(m, replace(CLEAN, via_contrast=0.2), seed=3, vias=vias).astype(float)
    assert with_via[30, 60] > base[30, 60] + 30 and with_via[30, 120] == base[30, 120]


def test_render_is_deterministic_and_independent_of_strip_size() -> None:
    lay = generate_layout(300, 260, LayoutConfig(), np.random.default_rng(7))
    cfg = get_preset("hard").sample_imaging(np.random.default_rng(0))
    cfg = replace(cfg, dust_density=200.0)  # make sure dust crosses strip borders
    whole = render_sem(lay.mask, cfg, seed=11, vias=lay.vias)
    again = render_sem(lay.mask, cfg, seed=11, vias=lay.vias)
    strips = render_sem(lay.mask, cfg, seed=11, vias=lay.vias, max_strip_pixels=64 * 260)
    other = render_sem(lay.mask, cfg, seed=12, vias=lay.vias)
    assert np.array_equal(whole, again)
    assert np.array_equal(whole, strips)
    assert np.count_nonzero(whole != other) > whole.size // 2


def test_magnification_scales_lengths() -> None:
    cfg = ImagingConfig(magnification=2.0, blur_sigma=1.5, edge_width=1.0, dose=30.0)
    phys = cfg.physical()
    assert phys.blur_sigma == 3.0 and phys.edge_width == 2.0 and phys.dose == 30.0 and phys.magnification == 1
    fixed = SynthConfig("fixedwidth", ONLY_TRACKS, replace(CLEAN, magnification=2.0))
    sample = generate_sample(fixed, 256, 256, seed=1)
    _, _, stats, _ = cv2.connectedComponentsWithStats(sample.mask, connectivity=8)
    assert np.all(stats[1:, cv2.CC_STAT_HEIGHT] == 12)  # 6 px at magnification 1


def test_imaging_config_validation() -> None:
    with pytest.raises(ConfigError, match="magnification"):
        ImagingConfig(magnification=0.0)
    with pytest.raises(ConfigError, match="blur_sigma"):
        ImagingConfig(blur_sigma=-1.0)
    with pytest.raises(ConfigError, match="finite"):
        ImagingConfig(dose=float("nan"))
    with pytest.raises(ConfigError, match="unknown imaging"):
        ImagingConfig.from_dict({"bogus": 1.0})


# ------------------------------------------------------------------------------------------------ presets


def test_presets_registry() -> None:
    assert preset_names()[:4] == ("easy", "medium", "hard", "extreme") and "dense" in preset_names()
    with pytest.raises(ConfigError, match="already registered"):
        register_preset(SynthConfig("hard", LayoutConfig(), ImagingConfig()))
    with pytest.raises(ConfigError, match=r"unknown preset 'nope'; valid presets: easy, medium, hard"):
        get_preset("nope")
    custom = SynthConfig("x", LayoutConfig(), ImagingConfig())
    assert get_preset(custom) is custom
    with pytest.raises(ConfigError, match="preset name"):
        SynthConfig("bad name", LayoutConfig(), ImagingConfig())


def test_preset_draws_stay_in_range_and_get_harder() -> None:
    rng = np.random.default_rng(0)
    for name in preset_names():
        p = get_preset(name)
        for _ in range(20):
            d = p.sample_imaging(rng)
            for field, lo in p.imaging.to_dict().items():
                hi = p.imaging_high.to_dict()[field]
                assert min(lo, hi) - 1e-12 <= getattr(d, field) <= max(lo, hi) + 1e-12
    doses = [get_preset(n).imaging_high.dose for n in ("easy", "medium", "hard", "extreme")]
    blurs = [get_preset(n).imaging.blur_sigma for n in ("easy", "medium", "hard", "extreme")]
    assert doses == sorted(doses, reverse=True) and blurs == sorted(blurs)


# ------------------------------------------------------------------------------------------- generation


def test_generate_sample_deterministic_and_exact() -> None:
    a = generate_sample("medium", 256, 320, seed=5)
    b = generate_sample("medium", 256, 320, seed=5)
    c = generate_sample("medium", 256, 320, seed=6)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask) and a.meta == b.meta
    assert not np.array_equal(a.mask, c.mask) and not np.array_equal(a.image, c.image)
    assert a.image.shape == a.mask.shape == (256, 320) and a.image.dtype == np.uint8
    assert a.meta["line_count"] == _components(a.mask)[0]
    assert a.meta["preset"] == "medium" and a.meta["seed"] == 5 and a.meta["source"]["kind"] == "procedural"
    assert set(ImagingConfig().to_dict()) == set(a.meta["imaging"])
    assert a.image[a.mask == 1].mean() > a.image[a.mask == 0].mean() + 40
    json.dumps(a.meta)  # JSON-ready
    deep = generate_sample("hard", 128, 128, seed=5, bit_depth=16)
    assert deep.image.dtype == np.uint16 and deep.image.max() > 255


@pytest.mark.parametrize("bad", [(0, 10), (10, 16385), (-1, 5)])
def test_generate_sample_rejects_bad_sizes(bad: tuple[int, int]) -> None:
    with pytest.raises(ConfigError, match="between 1 and 16384"):
        generate_sample("easy", bad[0], bad[1], seed=0)


def test_image_seeds_are_distinct_and_stable() -> None:
    seeds = [image_seed(0, i) for i in range(50)]
    assert len(set(seeds)) == 50 and seeds == [image_seed(0, i) for i in range(50)]
    assert image_seed(1, 0) != image_seed(0, 0)


def test_svg_layout_source(shared_layouts: list) -> None:
    from samsem.svg import rasterize, read_layout

    layout = read_layout(shared_layouts[0])
    s = generate_sample("medium", 384, 512, seed=2, source=layout, source_name=shared_layouts[0].name)
    src = s.meta["source"]
    assert src["kind"] == "svg" and src["file"] == shared_layouts[0].name and s.meta["layout"] is None
    y0, x0 = src["crop_yx"]
    window = rasterize(layout, scale=src["scale"])[y0 : y0 + 384, x0 : x0 + 512]
    # the crop is the same window of the whole layout up to cv2's clipping of polygons that leave the crop
    # (a boundary pixel may flip); any difference lies on an edge
    differ = s.mask != window
    k = np.ones((3, 3), np.uint8)
    edge = cv2.dilate(window, k) != cv2.erode(window, k)
    assert differ.mean() < 0.01 and np.all(edge[differ])
    assert s.meta["line_count"] == _components(s.mask)[0] > 1
    assert s.image[s.mask == 1].mean() > s.image[s.mask == 0].mean() + 30
    # a crop taller than the scaled layout raises the magnification so that it still fits
    mask, _, mag, (y0, x0) = gen._svg_mask(layout, 3600, 300, 0.5, np.random.default_rng(0))
    assert mag == 3600 / layout.height and mask.shape == (3600, 300) and y0 == 0


# ---------------------------------------------------------------------------------------------------- CLI


def _run_cli(*argv: str) -> int:
    return main(["synth", *argv])


def _easy(out, count: int, seed: int) -> int:
    return _run_cli(
        "--preset", "easy", "--count", str(count), "--size", "192", "--out", str(out), "--seed", str(seed)
    )


def test_cli_writes_resumes_and_is_deterministic(tmp_path, capsys) -> None:
    out = tmp_path / "ds"
    assert (
        _run_cli("--preset", "easy", "--count", "3", "--size", "192", "--out", str(out), "--seed", "4") == 0
    )
    manifest = json.loads((out / "manifest.json").read_text())
    names = sorted(manifest["images"])
    assert names == [f"easy_s4_{i:05d}" for i in range(3)]
    for name in names:
        entry = manifest["images"][name]
        image, mask = read_image(out / entry["image"]), read_mask(out / entry["mask"])
        assert image.shape == mask.shape == (192, 192)
        assert entry["line_count"] == _components(mask)[0]
        assert entry["seed"] == image_seed(4, entry["request"]["index"])
        assert entry["imaging"]["dose"] > 0 and entry["layout"]["pitch"]
    assert manifest["presets"]["easy"]["imaging"]["dose"] == get_preset("easy").imaging.dose
    first = {p.name: p.read_bytes() for p in (out / "images").iterdir()}
    stamp = (out / "images" / f"{names[1]}.png").stat().st_mtime_ns
    # resume: nothing is regenerated, a missing image is rebuilt byte for byte, more images are added
    (out / "images" / f"{names[2]}.png").unlink()
    capsys.readouterr()
    assert (
        _run_cli("--preset", "easy", "--count", "4", "--size", "192", "--out", str(out), "--seed", "4") == 0
    )
    assert "wrote 2 image(s), skipped 2" in capsys.readouterr().out
    assert (out / "images" / f"{names[1]}.png").stat().st_mtime_ns == stamp
    again = {p.name: p.read_bytes() for p in (out / "images").iterdir()}
    assert all(again[k] == v for k, v in first.items()) and len(again) == 4
    assert len(json.loads((out / "manifest.json").read_text())["images"]) == 4
    # same seed in a fresh directory: identical bytes; another seed: different images
    twin = tmp_path / "twin"
    assert (
        _run_cli("--preset", "easy", "--count", "3", "--size", "192", "--out", str(twin), "--seed", "4") == 0
    )
    for name, data in first.items():
        assert (twin / "images" / name).read_bytes() == data
        assert (twin / "masks" / name).read_bytes() == (out / "masks" / name).read_bytes()
    other = tmp_path / "other"
    assert (
        _run_cli("--preset", "easy", "--count", "1", "--size", "192", "--out", str(other), "--seed", "5") == 0
    )
    assert (
        read_image(other / "images" / "easy_s5_00000.png").tobytes()
        != read_image(out / "images" / f"{names[0]}.png").tobytes()
    )


def test_cli_regenerates_when_the_request_changes(tmp_path) -> None:
    out = tmp_path / "ds"
    assert _run_cli("--preset", "hard", "--size", "128", "--out", str(out)) == 0
    small = read_image(out / "images" / "hard_s0_00000.png")
    assert _run_cli("--preset", "hard", "--height", "128", "--width", "160", "--out", str(out)) == 0
    assert read_image(out / "images" / "hard_s0_00000.png").shape == (128, 160) != small.shape


def test_cli_16_bit_and_tiff_for_large_sides(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(gen, "PNG_MAX_SIDE", 100)
    out = tmp_path / "ds"
    assert _run_cli("--preset", "medium", "--size", "128", "--bit-depth", "16", "--out", str(out)) == 0
    image = read_image(out / "images" / "medium_s0_00000.tif")
    assert image.dtype == np.uint16 and image.shape == (128, 128) and image.max() > 255
    assert read_mask(out / "masks" / "medium_s0_00000.tif").shape == (128, 128)


def test_cli_with_svg_layouts(tmp_path, shared_layouts: list) -> None:
    out = tmp_path / "ds"
    folder = str(shared_layouts[0].parent)
    assert (
        _run_cli("--preset", "easy", "--count", "2", "--size", "160", "--layouts", folder, "--out", str(out))
        == 0
    )
    entries = json.loads((out / "manifest.json").read_text())["images"]
    files = [e["source"]["file"] for e in entries.values()]
    assert files == [shared_layouts[0].name, shared_layouts[1 % len(shared_layouts)].name]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--size", "0"], "between 1 and 16384"),
        (["--size", "16385"], "between 1 and 16384"),
        (["--preset", "nope"], "valid presets: easy"),
        (["--count", "0"], "count must be a positive integer"),
        (["--layouts", "/does/not/exist"], "layout file or directory not found"),
    ],
)
def test_cli_errors(tmp_path, capsys, argv: list[str], message: str) -> None:
    assert _run_cli(*argv, "--out", str(tmp_path / "o")) == 2
    assert message in capsys.readouterr().err


def test_cli_rejects_a_folder_without_svgs_and_lists_presets(tmp_path, capsys) -> None:
    assert _run_cli("--layouts", str(tmp_path), "--out", str(tmp_path / "o")) == 2
    assert "contains no SVG layouts" in capsys.readouterr().err
    assert _run_cli("--list-presets") == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in preset_names())
    assert _run_cli("--preset", "easy") == 2
    assert "--out DIR is required" in capsys.readouterr().err
