"""`samsem segment` end to end: outputs, resume, bad files in a batch, a tiny random SAM2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from samsem.cli import main
from samsem.io import read_mask, write_image
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
        assert "bundled default model lite" in capsys.readouterr().err
