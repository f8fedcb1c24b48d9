"""`samsem evaluate`: report files, their numbers, overlay colours and clear input errors."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from samsem import cli
from samsem.errors import InputError
from samsem.evaluation.esd import ESDConfig, esd, esd_details
from samsem.evaluation.metrics import aji, pixel_metrics
from samsem.evaluation.overlay import GT_COLOUR, MISSED_COLOUR, PRED_COLOURS, OverlayConfig, render_overlay
from samsem.io import read_mask, write_mask

H, W = 90, 120


@pytest.fixture(autouse=True)
def only_evaluate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the real dispatcher with only this command registered (other commands are not under test)."""
    monkeypatch.setattr(cli, "COMMANDS", {"evaluate": "samsem.runtime.cli:register_evaluate"})


def tracks(rng: np.random.Generator, n: int = 8) -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    for i in range(n):
        y = 8 + 9 * i
        x0 = int(rng.integers(0, 20))
        m[y : y + 4, x0 : x0 + int(rng.integers(80, 100))] = 1  # every track spans x 20..79
    return m


def make_dataset(root: Path, n: int = 3) -> tuple[Path, Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """pred/ and gt/ folders with n pairs: a short, an open, a false positive and a missed line each."""
    rng = np.random.default_rng(0)
    pairs = {}
    for i in range(n):
        gt = tracks(rng)
        pred = gt.copy()
        pred[8:21, 50:53] = 1  # bridges tracks 0 and 1 (short)
        pred[35:39, 60:62] = 0  # cuts track 3 (open)
        pred[71:75] = 0  # track 7 missed
        if i != 1:
            pred[77:83, 100:110] = 1  # a false positive
        name = f"img{i}"
        write_mask(root / "pred" / f"{name}.png", pred)
        write_mask(root / "gt" / f"{name}.png", gt)
        pairs[name] = (pred, gt)
    return root / "pred", root / "gt", pairs


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_report_files_and_numbers(tmp_path: Path) -> None:
    pred_dir, gt_dir, pairs = make_dataset(tmp_path)
    out = tmp_path / "report"
    cfg = ESDConfig(border=5, min_area=10)
    assert cli.main(["evaluate", "--pred", str(pred_dir), "--gt", str(gt_dir), "-o", str(out),
                     "--border", "5", "--min-area", "10"]) == 0  # fmt: skip
    rows = read_csv(out / "per_image.csv")
    assert [r["name"] for r in rows] == sorted(pairs)
    total = None
    for row in rows:
        pred, gt = pairs[row["name"]]
        r = esd(pred, gt, cfg)
        total = r if total is None else total + r
        assert (int(row["height"]), int(row["width"])) == (H, W)
        assert int(row["opens"]) == r.opens == 1
        assert int(row["shorts"]) == r.shorts == 1
        assert int(row["false_negatives"]) == r.false_negatives == 1
        assert int(row["false_positives"]) == r.false_positives
        assert (int(row["gt_lines"]), int(row["gt_lines_ok"])) == (r.gt_lines, r.gt_lines_ok)
        assert float(row["esd_rate"]) == pytest.approx(r.rate)
        for key, value in pixel_metrics(pred, gt).items():
            assert float(row[key]) == pytest.approx(value)
        assert float(row["aji"]) == pytest.approx(aji(pred, gt))
        assert (out / row["overlay"]).is_file()
    assert [int(r["false_positives"]) for r in rows] == [1, 0, 1]

    (tot,) = read_csv(out / "totals.csv")
    assert int(tot["images"]) == 3 and int(tot["pixels"]) == 3 * H * W
    assert int(tot["errors"]) == total.errors and int(tot["gt_lines"]) == total.gt_lines
    assert float(tot["esd_rate"]) == pytest.approx(total.errors / total.gt_lines)
    all_pred = np.concatenate([p for p, _ in pairs.values()])
    all_gt = np.concatenate([g for _, g in pairs.values()])
    assert float(tot["dice"]) == pytest.approx(pixel_metrics(all_pred, all_gt)["dice"])

    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["border"] == 5 and report["settings"]["min_area"] == 10
    assert [r["name"] for r in report["images"]] == sorted(pairs)
    assert report["totals"]["opens"] == 3 and report["totals"]["shorts"] == 3
    hist = cv2.imread(str(out / "esd_histogram.png"))
    assert hist is not None and hist.shape[0] > 200 and hist.std() > 10

    overlay = cv2.imread(str(out / "overlays" / "img0.png"))[..., ::-1]  # RGB
    pred, gt = pairs["img0"]
    np.testing.assert_array_equal(overlay[:H, :W], render_overlay(esd_details(pred, gt, cfg)))
    assert tuple(overlay[9, 51]) == (255, 0, 0)  # the short
    legend = overlay[H:]  # a legend band below, with every class colour as a swatch
    assert legend.shape[0] > 40 and overlay.shape[1] >= W
    colours = {tuple(int(v) for v in c) for c in legend.reshape(-1, 3)}
    assert {PRED_COLOURS[2], PRED_COLOURS[3], PRED_COLOURS[4], MISSED_COLOUR, GT_COLOUR} <= colours


def test_overlay_colours() -> None:
    gt = np.zeros((40, 50), np.uint8)
    gt[10:12, 5:45] = 1  # A: shorted with B
    gt[14:16, 5:45] = 1  # B
    gt[20:22, 5:45] = 1  # C: open
    gt[26:28, 5:45] = 1  # D: ok
    gt[32:34, 5:45] = 1  # E: missed
    pred = gt.copy()
    pred[10:16, 30] = 1
    pred[20:22, 25] = 0
    pred[32:34] = 0
    pred[2:4, 10:20] = 1  # false positive, partly in the band
    cfg = ESDConfig(border=3, min_area=0)
    d = esd_details(pred, gt, cfg)
    assert (d.result.shorts, d.result.opens, d.result.false_negatives, d.result.false_positives) == (
        1,
        1,
        1,
        1,
    )
    img = render_overlay(d, OverlayConfig(dim=0.5, outline_px=1))
    rgb = {name: tuple(int(v) for v in img[y, x]) for name, (y, x) in
           {"short": (10, 30), "open": (20, 10), "ok": (26, 10), "fp": (3, 15), "fp_band": (2, 15),
            "missed_inside": (32, 10), "outline": (31, 10), "outline_below": (34, 10), "bg": (37, 10),
            "band": (0, 0)}.items()}  # fmt: skip
    assert rgb["short"] == PRED_COLOURS[2] == (255, 0, 0)
    assert rgb["open"] == PRED_COLOURS[3]
    assert rgb["ok"] == (255, 255, 255)
    assert rgb["fp"] == (0, 255, 0)
    assert rgb["fp_band"] == (0, 127, 0)  # dimmed by 0.5
    assert rgb["missed_inside"] == GT_COLOUR
    assert rgb["outline"] == rgb["outline_below"] == MISSED_COLOUR
    assert rgb["bg"] == rgb["band"] == (0, 0, 0)


def test_svg_ground_truth_and_segment_output_names(tmp_path: Path) -> None:
    gt = np.zeros((60, 80), np.uint8)
    gt[20:31, 10:71] = 1  # the rectangle below, corners at pixel centres (10, 20) and (70, 30)
    (tmp_path / "gt").mkdir()
    (tmp_path / "gt" / "a.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="80" height="60">'
        '<path d="M10,20 L70,20 L70,30 L10,30 Z"/></svg>'
    )
    np.testing.assert_array_equal(read_mask(tmp_path / "gt" / "a.svg"), gt)
    pred = gt.copy()
    pred[:, 40] = 0
    write_mask(tmp_path / "seg" / "a.mask.png", pred)  # as written by `samsem segment`
    write_mask(tmp_path / "seg" / "a.preview.png", np.ones((5, 5), np.uint8))  # not a prediction
    out = tmp_path / "r"
    argv = ["evaluate", "--pred", str(tmp_path / "seg"), "--gt", str(tmp_path / "gt"), "-o", str(out)]
    assert cli.main([*argv, "--border", "5"]) == 0
    (row,) = read_csv(out / "per_image.csv")
    assert row["name"] == "a" and int(row["opens"]) == 1 and int(row["gt_lines"]) == 1


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert cli.main(["evaluate", *argv]) == 2
    return capsys.readouterr().err


def test_missing_partners_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pred_dir, gt_dir, _ = make_dataset(tmp_path)
    (pred_dir / "img0.png").rename(pred_dir / "other.png")
    err = _error(capsys, ["--pred", str(pred_dir), "--gt", str(gt_dir), "-o", str(tmp_path / "r")])
    assert "no ground truth" in err and "other.png" in err
    assert "no prediction" in err and "img0.png" in err
    assert not (tmp_path / "r").exists()


def test_size_mismatch_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pred_dir, gt_dir, _ = make_dataset(tmp_path)
    write_mask(gt_dir / "img1.png", np.zeros((H + 1, W), np.uint8))
    err = _error(capsys, ["--pred", str(pred_dir), "--gt", str(gt_dir), "-o", str(tmp_path / "r")])
    assert "size mismatch" in err and f"img1.png is {H}x{W} px but img1.png is {H + 1}x{W} px" in err


def test_empty_or_missing_directories(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pred_dir, gt_dir, _ = make_dataset(tmp_path)
    (tmp_path / "empty").mkdir()
    err = _error(capsys, ["--pred", str(tmp_path / "empty"), "--gt", str(gt_dir), "-o", str(tmp_path / "r")])
    assert "prediction directory holds no files" in err
    err = _error(capsys, ["--pred", str(pred_dir), "--gt", str(tmp_path / "nope"), "-o", str(tmp_path / "r")])
    assert "nope" in err and "not found" in err


def test_duplicate_names_are_an_error(tmp_path: Path) -> None:
    from samsem.evaluation.report import files_by_name

    pred_dir, _, _ = make_dataset(tmp_path)
    write_mask(pred_dir / "img0.tif", np.zeros((H, W), np.uint8))
    with pytest.raises(InputError, match="same name"):
        files_by_name(pred_dir, (".png", ".tif"), "prediction")


@pytest.mark.skipif(
    importlib.util.find_spec("samsem.runtime.pipeline") is None,
    reason="samsem.runtime.pipeline (segmentation pipeline) is not available",
)
def test_images_mode_segments_then_evaluates(tmp_path: Path) -> None:
    """--images runs the (classical, model-free) pipeline; the report must match its written masks."""
    from samsem.io import write_image

    rng = np.random.default_rng(1)
    gts = {}
    for i in range(2):
        gt = tracks(rng)
        image = np.clip(40 + 160 * gt + rng.normal(0, 12, gt.shape), 0, 255).astype(np.uint8)
        write_image(tmp_path / "img" / f"s{i}.png", image)
        write_mask(tmp_path / "gt" / f"s{i}.png", gt)
        gts[f"s{i}"] = gt
    out = tmp_path / "r"
    argv = ["evaluate", "--images", str(tmp_path / "img"), "--gt", str(tmp_path / "gt"), "-o", str(out)]
    assert cli.main([*argv, "--border", "0", "--min-area", "5"]) == 0
    rows = read_csv(out / "per_image.csv")
    assert [r["name"] for r in rows] == ["s0", "s1"]
    for row in rows:
        mask = read_mask(out / "masks" / f"{row['name']}.mask.png")
        r = esd(mask, gts[row["name"]], ESDConfig(border=0, min_area=5))
        assert int(row["errors"]) == r.errors and int(row["gt_lines_ok"]) == r.gt_lines_ok
        assert float(row["dice"]) == pytest.approx(pixel_metrics(mask, gts[row["name"]])["dice"])
        assert float(row["dice"]) > 0.5  # the clean synthetic image is segmented sensibly
    settings = json.loads((out / "report.json").read_text())["settings"]
    from samsem.runtime.load import default_bundle

    family = "classical" if default_bundle() is None else "lite"
    assert settings["model"]["family"] == family  # the model that made the masks, never null


def test_a_corrupt_later_file_leaves_no_partial_report(tmp_path: Path, capsys) -> None:
    pred, gt, _ = make_dataset(tmp_path)
    (pred / "img2.png").write_bytes((pred / "img2.png").read_bytes()[:60])
    out = tmp_path / "report"
    assert cli.main(["evaluate", "--pred", str(pred), "--gt", str(gt), "-o", str(out)]) == 2
    assert "img2.png" in capsys.readouterr().err
    assert not out.exists()  # no overlays of the earlier images, no report
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".report.")]  # staging removed
    (out / "keep.txt").parent.mkdir()
    (out / "keep.txt").write_text("an earlier file")
    make_dataset(tmp_path)
    assert cli.main(["evaluate", "--pred", str(pred), "--gt", str(gt), "-o", str(out)]) == 0
    assert (out / "report.json").is_file() and (out / "overlays" / "img2.png").is_file()
    assert (out / "keep.txt").read_text() == "an earlier file"


def test_layout_ground_truth_geojson_and_design_gds(tmp_path: Path) -> None:
    """GeoJSON labels carry their size; a design GDSII is cropped by --offset and scaled by --nm-per-px."""
    from samsem.vector import VectorOptions, write_vectors

    rng = np.random.default_rng(5)
    design = np.zeros((200, 300), np.uint8)
    for _ in range(40):
        y, x = int(rng.integers(0, 190)), int(rng.integers(0, 250))
        design[y : y + 4, x : x + int(rng.integers(10, 50))] = 1
    y0, x0 = 40, 60
    gt = design[y0 : y0 + H, x0 : x0 + W].copy()
    pred = gt.copy()
    pred[:, 50:52] = 0  # opens
    pred[5:85, 20] = 1  # shorts
    write_mask(tmp_path / "pred" / "img0.png", pred)
    write_vectors(gt, tmp_path / "gt", "img0", VectorOptions(formats=("geojson",), tolerance_px=0))
    opts = VectorOptions(formats=("gds",), tolerance_px=0, nm_per_px=4.0, gds_layer=10)
    write_vectors(design, tmp_path / "design", "chip", opts)
    want = esd(pred, gt, ESDConfig(border=5, min_area=10))
    assert want.opens > 0 and want.shorts > 0

    out = tmp_path / "r1"
    argv = ["--pred", str(tmp_path / "pred"), "--border", "5", "--min-area", "10"]
    assert cli.main(["evaluate", *argv, "--gt", str(tmp_path / "gt"), "-o", str(out)]) == 0
    (row,) = read_csv(out / "per_image.csv")
    assert (int(row["opens"]), int(row["shorts"]), int(row["errors"])) == (
        want.opens,
        want.shorts,
        want.errors,
    )

    out = tmp_path / "r2"
    gds = ["--gt", str(tmp_path / "design" / "chip.gds"), "--gds-layer", "10", "--nm-per-px", "4"]
    offset = f"--offset={x0 * 4},{-y0 * 4}"
    assert cli.main(["evaluate", *argv, *gds, offset, "-o", str(out)]) == 0
    (row,) = read_csv(out / "per_image.csv")
    assert row["name"] == "img0" and int(row["errors"]) == want.errors
    assert int(row["gt_lines"]) == want.gt_lines
    settings = json.loads((out / "report.json").read_text())["settings"]
    assert settings["layout"]["offset_nm"] == [240.0, -160.0] and settings["layout"]["gds_layer"] == 10
    # the wrong layer gives an empty ground truth: every predicted line is a false positive
    assert cli.main(["evaluate", *argv, *gds[:2], "-o", str(tmp_path / "r3"), offset]) == 0
    (row,) = read_csv(tmp_path / "r3" / "per_image.csv")
    assert int(row["gt_lines"]) == 0 and int(row["false_positives"]) > 0


def test_single_files_and_several_predictions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pred_dir, gt_dir, pairs = make_dataset(tmp_path)
    out = tmp_path / "r"
    argv = ["--pred", str(pred_dir / "img1.png"), "--gt", str(gt_dir / "img2.png"), "-o", str(out)]
    assert cli.main(["evaluate", *argv]) == 0  # one file each: paired whatever their names
    (row,) = read_csv(out / "per_image.csv")
    assert row["name"] == "img1"
    assert int(row["errors"]) == esd(pairs["img1"][0], pairs["img2"][1]).errors
    err = _error(capsys, ["--pred", str(pred_dir), "--gt", str(gt_dir / "img2.png"), "-o", str(out)])
    assert "one ground-truth file for 3 predictions" in err


def test_report_names_the_model_and_the_border_rule(tmp_path: Path) -> None:
    """report.json says which model made the masks (from samsem segment's reports) and the ESD rules."""
    pred_dir, gt_dir, _ = make_dataset(tmp_path, n=1)
    out = tmp_path / "r"
    argv = ["evaluate", "--pred", str(pred_dir), "--gt", str(gt_dir), "-o", str(out)]
    assert cli.main([*argv, "--border-rule", "drop"]) == 0
    settings = json.loads((out / "report.json").read_text())["settings"]
    assert settings["border_rule"] == "drop"
    assert settings["model"].startswith("unknown: the predicted masks have no samsem reports")
    (pred_dir / "img0.report.json").write_text(json.dumps({"model": {"family": "sam2", "device": "cuda"}}))
    (pred_dir / "img0.png").rename(pred_dir / "img0.mask.png")
    assert cli.main(argv) == 0
    settings = json.loads((out / "report.json").read_text())["settings"]
    assert settings["model"] == [{"family": "sam2", "device": "cuda"}]
    assert settings["border_rule"] == "published"
