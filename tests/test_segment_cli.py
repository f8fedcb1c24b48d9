"""`samsem segment` end to end: outputs, resume, bad files in a batch, a tiny random SAM2."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from samsem.cli import main
from samsem.io import list_images, read_mask, write_image
from samsem.runtime.models import sam2 as sm
from samsem.runtime.models.registry import save_model
from samsem.synth.generate import generate_sample


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    for i, size in enumerate([(300, 420), (256, 256)]):
        write_image(folder / f"sem{i}.png", generate_sample("easy", *size, seed=i).image)
    return folder


def test_segment_writes_outputs_and_resumes(image_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["segment", str(image_dir), "-o", str(out), "--preview", "--model", "classical"]) == 0
    for stem, shape in [("sem0", (300, 420)), ("sem1", (256, 256))]:
        mask = read_mask(out / f"{stem}.mask.png")
        assert mask.shape == shape and 0.02 < mask.mean() < 0.9
        report = json.loads((out / f"{stem}.report.json").read_text())
        assert report["height"] == shape[0] and report["model"]["family"] == "classical"
        assert (out / f"{stem}.preview.png").stat().st_size > 0
    assert "classical sauvola segmenter (as asked)" in capsys.readouterr().err

    before = (out / "sem0.report.json").stat().st_mtime_ns
    assert main(["segment", str(image_dir), "-o", str(out), "--model", "classical"]) == 0
    assert "0 segmented, 2 skipped" in capsys.readouterr().err
    assert (out / "sem0.report.json").stat().st_mtime_ns == before
    assert (
        main(["segment", str(image_dir / "sem0.png"), "-o", str(out), "--overwrite", "--model", "classical"])
        == 0
    )
    assert "1 segmented" in capsys.readouterr().err


def test_bad_files_do_not_stop_the_batch(image_dir: Path, tmp_path: Path, capsys) -> None:
    (image_dir / "broken.png").write_text("not an image at all")
    truncated = image_dir / "cut.png"
    truncated.write_bytes((image_dir / "sem1.png").read_bytes()[:200])
    out = tmp_path / "out"
    assert main(["segment", str(image_dir), "-o", str(out), "--model", "classical:otsu"]) == 1
    err = capsys.readouterr().err
    assert "2 segmented" in err and "2 failed" in err
    assert "FAILED broken.png" in err and "FAILED cut.png" in err
    assert (out / "sem0.mask.png").exists() and not (out / "broken.mask.png").exists()


def test_missing_input_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert main(["segment", str(tmp_path / "nope.png"), "-o", str(tmp_path / "o")]) == 2
    assert "nope.png" in capsys.readouterr().err


def test_tiny_random_sam2_runs_whole_pipeline(image_dir: Path, tmp_path: Path) -> None:
    from samsem.runtime.models.sam2 import tiny_spec

    spec = tiny_spec(image_size=128)
    ckpt = tmp_path / "tiny.pt"
    save_model(ckpt, sm.build(spec, seed=0), spec)
    out = tmp_path / "out"
    args = ["segment", str(image_dir / "sem0.png"), "-o", str(out), "--model", str(ckpt), "--batch-size", "4"]
    assert main(args) == 0
    report = json.loads((out / "sem0.report.json").read_text())
    assert report["model"]["family"] == "sam2" and report["mode"] == "two-scale"
    assert report["n_patches"] == len(report["patches"]) == 1
    assert {r["source"] for r in report["patches"]} <= {"model1", "model2", "fallback"}
    mask = read_mask(out / "sem0.mask.png")
    assert mask.shape == (300, 420) and set(np.unique(mask)) <= {0, 1}
    # deterministic for a given seed: a second run gives the same bytes
    out2 = tmp_path / "out2"
    assert main([*args[:3], str(out2), *args[4:]]) == 0
    np.testing.assert_array_equal(read_mask(out2 / "sem0.mask.png"), mask)


def test_default_model_is_the_bundled_one(image_dir: Path, tmp_path: Path, capsys) -> None:
    from samsem.runtime.load import default_bundle

    out = tmp_path / "out"
    assert main(["segment", str(image_dir / "sem1.png"), "-o", str(out)]) == 0
    report = json.loads((out / "sem1.report.json").read_text())
    if default_bundle() is None:
        assert report["model"]["family"] == "classical"
        assert "no model in the package" in capsys.readouterr().err
    else:
        assert report["model"]["family"] == "lite" and report["model"]["source"] == str(default_bundle())
        err = capsys.readouterr().err
        assert "bundled default model lite" in err and "--precision" not in err


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_precision_an_engine_cannot_run_is_said(
    image_dir: Path, tmp_path: Path, capsys, precision: str
) -> None:
    """The bundled model's ONNX engine is fp32: asking for fp16/bf16 says so in one line, then runs fp32."""
    from samsem.runtime.load import default_bundle

    if default_bundle() is None:
        pytest.skip("this install has no bundled model")
    out = tmp_path / "out"
    args = ["segment", str(image_dir / "sem1.png"), "-o", str(out), "--backend", "onnxruntime"]
    assert main([*args, "--precision", precision]) == 0
    err = capsys.readouterr().err.splitlines()
    line = f"samsem segment: --precision {precision} is not available on onnxruntime/cpu; running fp32"
    assert err.count(line) == 1
    assert json.loads((out / "sem1.report.json").read_text())["model"]["precision"] == "fp32"


def test_precision_of_the_classical_segmenter_is_said_not_to_apply(
    image_dir: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out"
    assert (
        main(
            [
                "segment",
                str(image_dir / "sem1.png"),
                "-o",
                str(out),
                "--model",
                "classical",
                "--precision",
                "bf16",
            ]
        )
        == 0
    )
    assert "samsem segment: --precision bf16 does not apply to the classical" in capsys.readouterr().err


def test_rerun_in_place_never_takes_outputs_as_inputs(image_dir: Path, capsys) -> None:
    """`samsem segment D -o D` twice: the second run skips, it does not segment sem0.mask.png."""
    stale = image_dir / ".sem0.mask.0123456789ab.tmp.png"  # left by a killed run
    stale.write_bytes((image_dir / "sem0.png").read_bytes())
    assert main(["segment", str(image_dir), "-o", str(image_dir), "--preview", "--model", "classical"]) == 0
    assert "2 segmented, 0 skipped" in capsys.readouterr().err
    assert not stale.exists()
    assert main(["segment", str(image_dir), "-o", str(image_dir), "--model", "classical"]) == 0
    assert "0 segmented, 2 skipped" in capsys.readouterr().err
    assert not list(image_dir.glob("*.mask.mask.*")) and not list(image_dir.glob("*.preview.mask.*"))
    assert sorted(p.name for p in list_images([image_dir])) == ["sem0.png", "sem1.png"]
    assert list_images([image_dir / "sem0.mask.png"]) == [image_dir / "sem0.mask.png"]  # named: taken


def _cli(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "samsem.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw
    )


def test_libpng_messages_stay_off_stderr(image_dir: Path, tmp_path: Path) -> None:
    (image_dir / "cut.png").write_bytes((image_dir / "sem1.png").read_bytes()[:-300])
    proc = _cli("segment", str(image_dir), "-o", str(tmp_path / "out"), "--model", "classical")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert b"FAILED cut.png" in err and b"libpng error" not in err, err.decode()


def test_sigterm_stops_like_ctrl_c(tmp_path: Path) -> None:
    folder = tmp_path / "many"
    for i in range(40):
        write_image(folder / f"img{i:02d}.png", generate_sample("easy", 512, 512, seed=i).image)
    out = tmp_path / "out"
    proc = _cli("segment", str(folder), "-o", str(out), "--model", "classical")
    t0 = time.monotonic()
    while not list(out.glob("*.report.json")):
        assert proc.poll() is None and time.monotonic() - t0 < 120
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err.decode()
    assert b"terminated (SIGTERM); finished outputs are kept" in err
    assert not [p for p in out.iterdir() if ".tmp" in p.name]
    assert len(list(out.glob("*.report.json"))) < 40


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def test_rerun_with_new_outputs_writes_only_the_missing_ones(image_dir: Path, tmp_path: Path, capsys) -> None:
    """An image is finished only when every requested output exists; a rerun asking for more writes the
    missing previews and vector files from the existing mask without segmenting again."""
    from samsem.vector import read_layout_mask

    out = tmp_path / "out"
    base = ["segment", str(image_dir), "-o", str(out), "--model", "classical"]
    assert main(base) == 0
    capsys.readouterr()
    masks = {s: (out / f"{s}.mask.png").stat().st_mtime_ns for s in ("sem0", "sem1")}

    assert main([*base, "--preview"]) == 0
    err = capsys.readouterr().err
    assert "0 segmented, 2 completed from existing masks, 0 skipped" in err, err
    for stem in ("sem0", "sem1"):
        assert (out / f"{stem}.preview.png").stat().st_size > 0
        assert (out / f"{stem}.mask.png").stat().st_mtime_ns == masks[stem]
        assert json.loads((out / f"{stem}.report.json").read_text())["preview"] == f"{stem}.preview.png"

    assert main([*base, "--preview", "--vector", "svg,geojson,gds", "--tolerance", "0"]) == 0
    assert "2 completed" in capsys.readouterr().err
    for stem, shape in [("sem0", (300, 420)), ("sem1", (256, 256))]:
        mask = read_mask(out / f"{stem}.mask.png")
        for suffix in (".mask.svg", ".mask.geojson", ".mask.gds"):
            back = read_layout_mask(out / f"{stem}{suffix}", shape)
            np.testing.assert_array_equal(back, mask)  # tolerance 0: exact pixel outlines
        report = json.loads((out / f"{stem}.report.json").read_text())
        assert report["vectors"]["gds"] == {
            "file": f"{stem}.mask.gds",
            "tolerance_px": 0.0,
            "nm_per_px": 1.0,
            "layer": 0,
            "datatype": 0,
        }
        assert report["preview"] == f"{stem}.preview.png"  # kept

    before = _mtimes(out)
    assert main([*base, "--preview", "--vector", "svg"]) == 0
    assert "0 segmented, 2 skipped" in capsys.readouterr().err
    assert _mtimes(out) == before

    (out / "sem1.mask.geojson").unlink()
    assert main([*base, "--vector", "geojson"]) == 0
    assert "1 completed" in capsys.readouterr().err
    changed = {k for k, v in _mtimes(out).items() if before.get(k) != v}
    assert changed == {"sem1.mask.geojson", "sem1.report.json"}


def test_vector_outputs_of_a_fresh_run_use_the_gds_options(image_dir: Path, tmp_path: Path) -> None:
    from samsem.evaluation.esd import esd
    from samsem.vector import read_layout_mask

    out = tmp_path / "out"
    args = ["segment", str(image_dir / "sem0.png"), "-o", str(out), "--model", "classical"]
    opts = ["--vector", "gds,svg", "--nm-per-px", "4", "--gds-layer", "17", "--gds-datatype", "3"]
    assert main([*args, *opts]) == 0
    assert not (out / "sem0.mask.geojson").exists()
    mask = read_mask(out / "sem0.mask.png")
    gds = read_layout_mask(out / "sem0.mask.gds", mask.shape, gds_layer=17, gds_datatype=3, nm_per_px=4.0)
    assert esd(gds, mask) == esd(mask, mask)  # simplified within 1 px, every line kept
    assert read_layout_mask(out / "sem0.mask.gds", mask.shape, gds_layer=0, nm_per_px=4.0).sum() == 0


def test_vectors_of_a_large_tiff_mask_are_read_band_by_band(
    image_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Masks above LARGE_PIXELS are TIFFs; completing their vector files reads them band by band."""
    from samsem.runtime import outputs
    from samsem.vector import extract, iter_bands, read_layout_mask

    monkeypatch.setattr(outputs, "LARGE_PIXELS", 100 * 100)
    seen: list[int] = []

    def bands(path, band_rows: int = 64):
        for band in iter_bands(path, band_rows):
            seen.append(band.shape[0])
            yield band

    monkeypatch.setattr("samsem.vector.iter_bands", bands)
    out = tmp_path / "out"
    args = ["segment", str(image_dir / "sem0.png"), "-o", str(out), "--model", "classical"]
    assert main(args) == 0
    assert (out / "sem0.mask.tif").exists()
    assert main([*args, "--vector", "geojson", "--tolerance", "0"]) == 0
    mask = read_mask(out / "sem0.mask.tif")
    assert seen and max(seen) == 64 and sum(seen) == 300  # never the whole mask at once
    np.testing.assert_array_equal(read_layout_mask(out / "sem0.mask.geojson"), mask)
    assert len(extract(mask).lines) > 0


def test_bad_vector_options_are_usage_errors(image_dir: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    import importlib.util

    args = ["segment", str(image_dir / "sem0.png"), "-o", str(tmp_path / "o"), "--model", "classical"]
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--vector", "svg,dxf"])
    assert exit_.value.code == 2 and "unknown format(s) dxf" in capsys.readouterr().err
    assert main([*args, "--vector", "gds", "--nm-per-px", "-1"]) == 2
    assert "nm per pixel must be positive" in capsys.readouterr().err
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "gdstk" else real(name))
    assert main([*args, "--vector", "gds"]) == 2
    assert "pip install 'samsem[vector]'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_metal_dark_segments_an_inverted_image(tmp_path: Path) -> None:
    sample = generate_sample("easy", 256, 256, seed=5)
    write_image(tmp_path / "in" / "inv.png", (255 - sample.image.astype(np.int32)).astype(np.uint8))
    out = tmp_path / "out"
    args = ["segment", str(tmp_path / "in"), "--model", "classical:otsu"]
    assert main([*args, "-o", str(out), "--metal", "dark"]) == 0
    assert main([*args, "-o", str(tmp_path / "plain")]) == 0
    truth = sample.mask.astype(bool)
    dark = read_mask(out / "inv.mask.png").astype(bool)
    plain = read_mask(tmp_path / "plain" / "inv.mask.png").astype(bool)
    dice = 2 * (dark & truth).sum() / (dark.sum() + truth.sum())
    assert dice > 0.8 and (plain & truth).sum() < 0.5 * truth.sum()
    assert json.loads((out / "inv.report.json").read_text())["config"]["metal"] == "dark"


def test_flatten_and_contrast_flags_reach_the_report_and_bad_values_fail(tmp_path: Path, capsys) -> None:
    write_image(tmp_path / "in" / "a.png", generate_sample("easy", 256, 256, seed=6).image)
    args = ["segment", str(tmp_path / "in"), "--model", "classical:otsu"]
    assert main([*args, "-o", str(tmp_path / "off"), "--flatten", "0"]) == 0
    assert main([*args, "-o", str(tmp_path / "on")]) == 0
    assert json.loads((tmp_path / "off" / "a.report.json").read_text())["config"]["flatten"] == 0
    assert json.loads((tmp_path / "on" / "a.report.json").read_text())["config"]["flatten"] == 128
    assert main([*args, "-o", str(tmp_path / "unfiltered"), "--min-contrast", "0"]) == 0
    config = json.loads((tmp_path / "unfiltered" / "a.report.json").read_text())["config"]
    assert config["postprocess"]["min_contrast"] == 0 and config["flatten"] == 128
    assert main([*args, "-o", str(tmp_path / "bad2"), "--min-contrast", "2"]) == 2
    assert "min_contrast must lie in [0, 1]" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main([*args, "-o", str(tmp_path / "bad"), "--flatten", "-1"])
    assert exc.value.code == 2 and "--flatten: must be >= 0, got -1" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
