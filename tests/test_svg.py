"""Tests of samsem.svg: path parsing, exact rasterization, viewBox/scale handling, errors, real layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from samsem.errors import InputError
from samsem.io import read_mask
from samsem.svg import Layout, rasterize, read_layout

HAND_MADE = """<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="40" height="30" viewBox="0 0 40 30">
  <defs><path d="M0,0 L39,0 L39,29 L0,29 Z"/></defs>
  <title>test layout</title>
  <path d="M2,3 L7,3 L7,5 L2,5 Z" fill="lime"/>
  <path d="M5,4 L12,4 L12,8 L5,8 Z" fill="lime"/>
  <path d="m20,2 h4 v3 l-4,0 z"/>
  <path d="M30,20 L32,20 L32,22 L30,22 Z m5,0 l1,0 0,1 -1,0 z"/>
  <g fill="lime"><path d="M2,25 H6 V27 H2 Z"/></g>
  <rect x="14" y="12" width="3" height="2"/>
  <polygon points="25,12 27,12 27,13 25,13"/>
  <circle cx="10" cy="20" r="3" fill="red"/>
</svg>
"""

# pixel boxes (rows, cols) of the shapes above: integer coordinates are pixel centres, outlines included
SHAPE_BOXES = [
    (slice(3, 6), slice(2, 8)),  # first rectangle, 6x3
    (slice(4, 9), slice(5, 13)),  # overlapping rectangle, 8x5 (6 pixels shared with the first)
    (slice(2, 6), slice(20, 25)),  # relative path
    (slice(20, 23), slice(30, 33)),  # two-subpath path, first subpath
    (slice(20, 22), slice(35, 37)),  # second subpath, relative moveto after Z
    (slice(25, 28), slice(2, 7)),  # H/V path inside <g>
    (slice(12, 15), slice(14, 18)),  # rect
    (slice(12, 14), slice(25, 28)),  # polygon
]


def _write(tmp_path: Path, text: str, name: str = "layout.svg") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _svg(body: str, attrs: str = 'width="20" height="10"') -> str:
    return f'<svg xmlns="http://www.w3.org/2000/svg" {attrs}>{body}</svg>'


def test_hand_made_layout_parses(tmp_path: Path) -> None:
    layout = read_layout(_write(tmp_path, HAND_MADE))
    assert (layout.width, layout.height) == (40, 30)
    assert len(layout.polygons) == 8  # the <defs> content is not rendered
    assert all(p.dtype == np.float64 and p.shape[1] == 2 for p in layout.polygons)
    np.testing.assert_array_equal(layout.polygons[2], [[20, 2], [24, 2], [24, 5], [20, 5]])
    np.testing.assert_array_equal(layout.polygons[4], [[35, 20], [36, 20], [36, 21], [35, 21]])
    np.testing.assert_array_equal(layout.polygons[6], [[14, 12], [17, 12], [17, 14], [14, 14]])
    np.testing.assert_array_equal(layout.circles, [[10, 20, 3]])


def test_hand_made_layout_rasterizes_exactly(tmp_path: Path) -> None:
    mask = rasterize(read_layout(_write(tmp_path, HAND_MADE)))
    assert mask.shape == (30, 40) and mask.dtype == np.uint8
    expected = np.zeros((30, 40), np.uint8)
    for rows, cols in SHAPE_BOXES:
        expected[rows, cols] = 1
    assert expected.sum() == 18 + 40 - 6 + 20 + 9 + 4 + 15 + 12 + 6
    yy, xx = np.mgrid[:30, :40]
    expected[(xx - 10) ** 2 + (yy - 20) ** 2 <= 9] = 1  # via: pixel centres within r=3 of (10, 20)
    np.testing.assert_array_equal(mask, expected)
    assert mask.sum() == 118 + 29


def test_unit_square_covers_2x2_pixels() -> None:
    square = np.array([[1.0, 1.0], [2.0, 1.0], [2.0, 2.0], [1.0, 2.0]])
    mask = rasterize(Layout(4, 4, (square,), np.zeros((0, 3))))
    expected = np.zeros((4, 4), np.uint8)
    expected[1:3, 1:3] = 1
    np.testing.assert_array_equal(mask, expected)


def test_rasterize_scale_and_shape() -> None:
    rect = np.array([[2.0, 3.0], [7.0, 3.0], [7.0, 5.0], [2.0, 5.0]])
    layout = Layout(40, 30, (rect,), np.array([[20.0, 20.0, 2.0]]))
    big = rasterize(layout, scale=3)
    assert big.shape == (90, 120)
    # pixel centre x maps to (x + 0.5) * 3 - 0.5 = 3x + 1: columns 7..22, rows 10..16
    expected_top = np.zeros((30, 120), np.uint8)
    expected_top[10:17, 7:23] = 1
    np.testing.assert_array_equal(big[:30], expected_top)
    yy, xx = np.mgrid[30:90, :120]
    np.testing.assert_array_equal(big[30:], (xx - 61) ** 2 + (yy - 61) ** 2 <= 36)  # via r=2 -> 6 at (61, 61)
    small = rasterize(layout, scale=0.5)
    assert small.shape == (15, 20)
    clipped = rasterize(layout, shape=(4, 6))
    np.testing.assert_array_equal(clipped, rasterize(layout)[:4, :6])
    padded = rasterize(layout, shape=(50, 60))
    assert padded.sum() == rasterize(layout).sum()
    with pytest.raises(ValueError, match="scale must be positive"):
        rasterize(layout, scale=0)


def test_viewbox_translation_and_scale(tmp_path: Path) -> None:
    body = '<path d="M6,6 L8,6 L8,7 Z"/><circle cx="7" cy="8" r="1"/>'
    shifted = read_layout(_write(tmp_path, _svg(body, 'width="10" height="10" viewBox="5 5 10 10"')))
    np.testing.assert_array_equal(shifted.polygons[0], [[1, 1], [3, 1], [3, 2]])
    np.testing.assert_array_equal(shifted.circles, [[2, 3, 1]])
    scaled = read_layout(_write(tmp_path, _svg(body, 'width="20px" height="20" viewBox="5 5 10 10"')))
    np.testing.assert_array_equal(scaled.polygons[0], [[2.5, 2.5], [6.5, 2.5], [6.5, 4.5]])
    np.testing.assert_array_equal(scaled.circles, [[4.5, 6.5, 2]])


def test_degenerate_subpaths_dropped(tmp_path: Path) -> None:
    body = '<path d="M1,1 L5,1 Z M2,2 L2,2 L2,2 Z M3,3 L6,3 L6,6 L3,3 Z"/><circle cx="3" cy="3" r="0"/>'
    layout = read_layout(_write(tmp_path, _svg(body)))
    assert len(layout.polygons) == 1
    np.testing.assert_array_equal(layout.polygons[0], [[3, 3], [6, 3], [6, 6]])  # closing vertex removed
    assert layout.circles.shape == (0, 3)


@pytest.mark.parametrize(
    "text,reason",
    [
        ('<svg width="10" height="10"><path d="M0,0 L1,1 Z"></svg>', "malformed SVG (XML error"),
        ('<html width="10" height="10"/>', "not an SVG file (root element is <html>)"),
        (_svg("", 'height="10"'), "<svg> has no width attribute"),
        (_svg("", 'width="10mm" height="10"'), "width='10mm' is not a positive pixel size"),
        (_svg("", 'width="10" height="10" viewBox="0 0 10 20"'), "scales x and y differently"),
        (_svg("", 'width="10" height="10" viewBox="0 0 10"'), "invalid viewBox"),
        (_svg('<path d="M0,0 C1,1 2,2 3,3 Z"/>'), "unsupported path command 'C'"),
        (_svg('<path d="L1,1 L2,2 Z"/>'), "must start with a moveto"),
        (_svg('<path d="M0,0 L1"/>'), "command 'L' needs 2 number(s)"),
        (_svg('<path d="M0,0 L1,#2"/>'), "cannot parse '#"),
        (_svg('<path d="M0,0 L1,1 L2,0 Z 5"/>'), "number '5' after closepath"),
        (
            _svg('<g transform="translate(1,2)"><path d="M0,0 L1,1 L1,0 Z"/></g>'),
            "transform attribute on <g>",
        ),
        (_svg('<ellipse cx="1" cy="1" rx="1" ry="2"/>'), "unsupported SVG element <ellipse>"),
        (_svg('<circle cx="1" cy="1" r="-2"/>'), "negative radius"),
        (_svg('<circle cx="1" cy="1"/>'), "<circle> element #1 has no r attribute"),
        (_svg('<circle cx="a" cy="1" r="1"/>'), "invalid cx='a'"),
        (_svg('<polygon points="1,1 2,2 3"/>'), "points must be an even number of numbers"),
    ],
)
def test_bad_svg_raises_input_error(tmp_path: Path, text: str, reason: str) -> None:
    path = _write(tmp_path, text, "bad.svg")
    with pytest.raises(InputError) as err:
        read_layout(path)
    assert reason in str(err.value) and "bad.svg" in str(err.value), str(err.value)


def test_missing_svg(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="file not found"):
        read_layout(tmp_path / "none.svg")


def test_real_layouts(shared_layouts: list[Path]) -> None:
    fractions = []
    for path in shared_layouts:
        layout = read_layout(path)
        assert (layout.width, layout.height) == (4096, 3536)
        assert len(layout.polygons) >= 500 and len(layout.circles) >= 500
        vertices = np.concatenate(layout.polygons)
        assert vertices.min() >= 0 and vertices[:, 0].max() <= 4095 and vertices[:, 1].max() <= 3535
        mask = read_mask(path, shape=(3536, 4096))
        assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
        fractions.append(mask.mean())
        if path.name == "label0000.svg":  # tracks drawn up to coordinate W-1 / H-1 reach the last column/row
            assert mask[-1].any() and mask[:, -1].any()
    # observed metal fractions 0.16..0.27 on the five HY5SYN layouts
    assert all(0.1 < f < 0.4 for f in fractions), fractions
