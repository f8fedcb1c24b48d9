"""Previews and evaluation overlays explain themselves: legends, and patches from model 1 marked visibly."""

from __future__ import annotations

import numpy as np
import pytest

from samsem.legend import LegendEntry, add_legend
from samsem.runtime.preview import FALLBACK, FLAGGED, MODEL1, OUTLINE, owned_boxes, preview_image
from samsem.runtime.stages.tiling import TilingConfig, make_tiling


def _colours(picture: np.ndarray) -> set[tuple[int, int, int]]:
    return {tuple(int(v) for v in c) for c in np.unique(picture.reshape(-1, 3), axis=0)}


@pytest.mark.parametrize("shape", [(1024, 1024), (3000, 2100), (300, 420), (700, 10000)])
def test_owned_boxes_are_the_tiling_partition(shape: tuple[int, int]) -> None:
    t = make_tiling(*shape, TilingConfig(512, 0.1))
    assert owned_boxes(t.boxes.tolist(), *shape) == [tuple(o) for o in t.owned.tolist()]


def _report(h: int, w: int, sources: list[str], flagged: int | None) -> dict:
    t = make_tiling(h, w, TilingConfig(512, 0.1))
    patches = [
        {"index": i, "box": b, "source": sources[i % len(sources)], "flagged": i == flagged}
        for i, b in enumerate(t.boxes.tolist())
    ]
    return {"name": "dir/img.png", "mode": "two-scale", "intensity_levels": [0.0, 255.0], "patches": patches}


def test_preview_tints_model1_fallback_and_flagged_patches_and_has_a_legend() -> None:
    h, w = 1000, 1000  # 2 x 2 patches
    image = np.full((h, w), 128, np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[100:120, 100:900] = 1
    report = _report(h, w, ["model1", "model2", "fallback", "model2"], flagged=3)
    out = preview_image(image, mask, report)
    assert out.shape[0] > h + 40 and out.shape[1] == w and out.dtype == np.uint8  # legend band below
    owned = owned_boxes([p["box"] for p in report["patches"]], h, w)
    centre = {}
    for rec, (y0, x0, y1, x1) in zip(report["patches"], owned, strict=True):
        centre[rec["index"]] = out[(y0 + y1) // 2 + 10, (x0 + x1) // 2].astype(int)  # BGR, off the mask
    # model 1: clearly blue over the grey image; model 2: untouched grey; fallback: magenta; flagged: red
    assert centre[0][0] > centre[0][2] + 60
    assert tuple(centre[1]) == (128, 128, 128)
    assert centre[2][0] > 150 and centre[2][2] > 150 and centre[2][1] < 110
    assert centre[3][2] > centre[3][0] + 60 and centre[3][2] > centre[3][1] + 60
    picture = out[:h]
    assert {MODEL1, FALLBACK, FLAGGED, OUTLINE} <= _colours(picture)  # frames and the mask outline
    assert {MODEL1, FALLBACK, FLAGGED, OUTLINE} <= _colours(out[h:])  # and their swatches in the legend


def test_single_scale_preview_has_no_model1_tint() -> None:
    image = np.full((600, 600), 100, np.uint8)
    report = _report(600, 600, ["model1"], flagged=None)
    report["mode"] = "single-scale 1"
    out = preview_image(image, np.zeros_like(image), report)
    assert MODEL1 not in _colours(out)


def test_legend_wraps_and_pads_narrow_pictures() -> None:
    picture = np.zeros((50, 80, 3), np.uint8)
    picture[:] = (1, 2, 3)
    entries = [LegendEntry((250, 0, 0), f"a rather long legend entry, number {i}") for i in range(6)]
    out = add_legend(picture, entries, title="title")
    assert out.shape[1] >= 560 and out.shape[0] > 50 + 3 * 20  # wrapped onto several rows
    assert (out[:50, :80] == (1, 2, 3)).all()  # the picture is untouched
    with pytest.raises(ValueError, match="style"):
        LegendEntry((0, 0, 0), "x", "dotted")


@pytest.mark.parametrize("shape", [(64, 20000), (20000, 64)])
def test_long_strip_preview_is_wrapped_into_readable_pieces(shape: tuple[int, int]) -> None:
    """Issue 25.7: a 20000 x 64 strip is cut into 18 pieces shown at full resolution, one under the other
    (beside each other when tall), instead of a 2048 x 7 sliver; every piece shows the strip's lines."""
    h, w = shape
    image = np.full(shape, 60, np.uint8)
    mask = np.zeros(shape, np.uint8)
    if w > h:
        mask[8:56, 50::200] = 1  # a short vertical line every 200 px along the strip
    else:
        mask[50::200, 8:56] = 1
    report = _report(h, w, ["fallback"], flagged=None)
    out = preview_image(image, mask, report)
    pieces, gap = 18, 8
    across = pieces * 64 + (pieces - 1) * gap  # the pieces side by side, 64 px each at full resolution
    along = -(-20000 // pieces)  # the strip's length shared by the pieces
    picture = out[: across if w > h else along, : along if w > h else across]
    assert out.shape[1] == (along if w > h else across) and out.shape[0] > picture.shape[0]  # + legend
    for k in range(pieces):
        band = (
            picture[k * (64 + gap) : k * (64 + gap) + 64]
            if w > h
            else picture[:, k * (64 + gap) : k * (64 + gap) + 64]
        )
        assert (band == OUTLINE).all(axis=2).sum() > 50, k  # the outlines of this piece's lines
        assert (band == FALLBACK).all(axis=2).any(), k  # the frames of its fallback patches
