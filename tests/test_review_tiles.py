"""samsem.server.review.web tile pyramids: tiles equal a direct area downsampling, the cache on disk is
reused until the source changes, concurrent first requests build once, coarse levels come first, and a
build holds about one level."""

import json
import os
import threading
import tracemalloc

import cv2
import numpy as np
import pytest
from starlette.testclient import TestClient

from samsem.io import write_image, write_mask
from samsem.server.review import web


def _folder(tmp_path, h, w, seed=0):
    """OUT with image ``a`` (h x w, noisy uint8 with structure) and a mask of blobs; the review config."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    image = ((xx * 7 + yy * 3) % 200 + rng.integers(0, 50, (h, w))).astype(np.uint8)
    mask = ((xx // 37 + yy // 23) % 3 == 0) & (rng.random((h, w)) > 0.05)
    out, images = tmp_path / "out", tmp_path / "images"
    out.mkdir()
    (out / "a.report.json").write_text(json.dumps({"patches": []}))
    write_image(images / "a.png", image)
    write_mask(out / "a.mask.png", mask)
    return image, mask, web.ReviewConfig(out, images)


def _levels(full):
    """Every DZI level by successive 2x area downsampling of ``full``, level 0 first."""
    levels = [full]
    while max(levels[-1].shape) > 1:
        h, w = levels[-1].shape
        levels.append(cv2.resize(levels[-1], ((w + 1) // 2, (h + 1) // 2), interpolation=cv2.INTER_AREA))
    return levels[::-1]


def _decode(data):
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


def _counting(monkeypatch):
    """Count calls of web.build_pyramid (still building)."""
    calls = []
    build = web.build_pyramid

    def counted(*args, **kwargs):
        calls.append(args[1])
        return build(*args, **kwargs)

    monkeypatch.setattr(web, "build_pyramid", counted)
    return calls


def test_pyramid_tiles_equal_a_direct_area_downsampling(tmp_path):
    image, mask, config = _folder(tmp_path, 700, 1000)
    review = web.Review(config)
    lo, hi = float(image.min()), float(image.max()) + 1.0
    gray = np.clip((image.astype(np.float32) - lo) / (hi - lo) * 255.0, 0, 255).astype(np.uint8)
    images, masks = _levels(gray), _levels(mask.astype(np.uint8) * 255)
    assert web.top_level(700, 1000) == len(images) - 1 == 10
    for level, col, row in [(10, 0, 0), (10, 3, 2), (10, 1, 1), (9, 1, 1), (8, 0, 0), (7, 0, 0), (0, 0, 0)]:
        box = np.s_[row * 256 : (row + 1) * 256, col * 256 : (col + 1) * 256]
        np.testing.assert_array_equal(_decode(review.tile("a", "image", level, col, row)), images[level][box])
        coverage = masks[level][box]
        mask_tile = _decode(review.tile("a", "mask", level, col, row))
        np.testing.assert_array_equal(mask_tile, web._mask_tile(coverage))
        outline = _decode(review.tile("a", "outline", level, col, row))
        np.testing.assert_array_equal(outline, web._outline_tile(coverage))
    assert _decode(review.tile("a", "image", 10, 3, 2)).shape == (700 - 512, 1000 - 768)
    assert review.tile("a", "image", 10, 4, 0) is None and review.tile("a", "image", 11, 0, 0) is None


def test_cache_is_reused_by_a_new_app_until_the_source_changes(tmp_path, monkeypatch):
    _, _, config = _folder(tmp_path, 300, 500)
    calls = _counting(monkeypatch)
    first = web.Review(config).tile("a", "image", 9, 1, 0)
    again = web.Review(config).tile("a", "image", 9, 1, 0)
    assert calls == ["image"] and first == again
    assert (config.out / ".review-cache" / "a" / "image" / "image" / "9" / "1_0.png").read_bytes() == first
    source = config.images / "a.png"
    st = source.stat()
    os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched
    assert web.Review(config).tile("a", "image", 9, 1, 0) == first
    assert calls == ["image", "image"]
    assert [p.name for p in (config.out / ".review-cache" / "a").iterdir()] == ["image"]  # no leftovers


def test_concurrent_first_requests_build_once(tmp_path, monkeypatch):
    _, _, config = _folder(tmp_path, 300, 500)
    calls = _counting(monkeypatch)
    review = web.Review(config)
    start = threading.Barrier(8)
    results = [None] * 8

    def request(i):
        start.wait(timeout=60)
        results[i] = review.tile("a", "mask", 9, 0, 0)

    threads = [threading.Thread(target=request, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert calls == ["mask"]
    assert results[0] is not None and all(r == results[0] for r in results)


def test_building_holds_about_one_level_and_the_source(tmp_path):
    n = 4096
    out, images = tmp_path / "out", tmp_path / "images"
    out.mkdir()
    (out / "a.report.json").write_text(json.dumps({"patches": [], "intensity_levels": [0, 256]}))
    write_image(images / "a.png", (np.arange(n * n, dtype=np.uint32) % 251).astype(np.uint8).reshape(n, n))
    write_mask(out / "a.mask.png", np.eye(n, dtype=bool))
    review = web.Review(web.ReviewConfig(out, images))
    for layer in ("image", "mask"):
        tracemalloc.start()
        try:
            assert review.tile("a", layer, 12, 0, 0) is not None
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        # decoding (a mask: the decoded file and its metal map, n*n bytes each), then the full uint8
        # level (the image's converted in place) and the coarser levels, a third of it
        assert peak < 2.2 * n * n, (layer, peak / (n * n))


def test_coarse_levels_are_served_before_the_deep_ones_are_written(tmp_path, monkeypatch):
    _, _, config = _folder(tmp_path, 300, 500)
    release, reached = threading.Event(), threading.Event()
    write_level = web._write_level

    def held(folder, level, array, kind):
        if level == 9:  # the full-resolution level waits until the test has its coarse tile
            reached.set()
            assert release.wait(timeout=60)
        write_level(folder, level, array, kind)

    monkeypatch.setattr(web, "_write_level", held)
    review = web.Review(config)
    try:
        assert review.tile("a", "image", 8, 0, 0) is not None
        assert reached.wait(timeout=60)
        assert not (config.out / ".review-cache" / "a" / "image" / "manifest.json").exists()
    finally:
        release.set()
    assert _decode(review.tile("a", "image", 9, 1, 1)).shape == (300 - 256, 500 - 256)
    assert (config.out / ".review-cache" / "a" / "image" / "manifest.json").exists()


def test_a_corrected_mask_is_rebuilt(tmp_path):
    _, mask, config = _folder(tmp_path, 300, 500)
    review = web.Review(config)
    before = _decode(review.tile("a", "mask", 9, 0, 0))
    write_mask(config.out / "a.mask.png", ~mask)
    review.changed("a")
    after = _decode(review.tile("a", "mask", 9, 0, 0))
    coverage = np.where(mask[:256, :256], 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(after, web._mask_tile(coverage))
    assert not np.array_equal(before, after)


def test_a_failed_build_is_one_line_and_retried(tmp_path, monkeypatch):
    _, _, config = _folder(tmp_path, 300, 500)
    write_level = web._write_level
    failures = [OSError(28, "No space left on device"), RuntimeError("encoder broke")]

    def failing(*args):
        if failures:
            raise failures.pop(0)
        write_level(*args)

    monkeypatch.setattr(web, "_write_level", failing)
    response = TestClient(web.create_app(config), base_url="http://127.0.0.1:8765").get(
        "/tiles/a/image/9/0_0.png"
    )
    assert response.status_code == 404
    assert "cannot write the tile cache (No space left on device)" in response.json()["error"]
    review = web.Review(config)
    with pytest.raises(RuntimeError, match="encoder broke"):  # an own fault reaches the request
        review.tile("a", "image", 9, 0, 0)
    assert review.tile("a", "image", 9, 0, 0) is not None  # the next request builds again
