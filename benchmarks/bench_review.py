"""`samsem review` tile pyramids: time to the first tile and to a deepest-level tile of a large image,
and the process's peak memory.

Workload: a synthetic SIZE^2 uint8 image (a 2048-px structured tile with noise, repeated) and a mask of
the same size, written with samsem.io as TIFF into a fresh `samsem segment`-like folder. Times are from
the first request, in the page's order: an image tile of the whole-image view (level 10, 1024 px across,
as OpenSeadragon opens it; starts the image pyramid's build), the mask and outline tiles there (start
the mask's build), then a tile of the deepest level (full resolution) of the image and of the mask (each
waits for its build to finish); last, the first tile of a new app on the same folder (cache reused).
"peak RSS" is the process's VmHWM over the builds (reset just before), against its RSS before them.

    python benchmarks/bench_review.py [--size 16384]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from samsem.io import write_image, write_mask
from samsem.server.review import web


def _rss(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16384)
    args = parser.parse_args()
    n = args.size
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:2048, 0:2048]
    tile = ((xx * 7 + yy * 3) % 200 + rng.integers(0, 50, (2048, 2048))).astype(np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        out, images = Path(tmp) / "out", Path(tmp) / "images"
        out.mkdir()
        (out / "a.report.json").write_text(json.dumps({"patches": [], "intensity_levels": [0, 256]}))
        image = np.tile(tile, (n // 2048, n // 2048))
        write_image(images / "a.tif", image)
        write_mask(out / "a.mask.tif", image > 128)
        del image
        base = _rss("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        config = web.ReviewConfig(out, images)
        review = web.Review(config)
        top = web.top_level(n, n)
        rows = []
        t0 = time.perf_counter()

        def timed(what: str, r: web.Review, layer: str, level: int, col: int, row: int) -> None:
            assert r.tile("a", layer, level, col, row) is not None
            rows.append((what, time.perf_counter() - t0))

        mid = n // 2 // web.TILE
        timed("first image tile of the whole view (level 10)", review, "image", 10, 0, 0)
        timed("first mask and outline tiles (level 10)", review, "mask", 10, 0, 0)
        assert review.tile("a", "outline", 10, 0, 0) is not None
        timed(f"an image tile of the deepest level ({top})", review, "image", top, mid, mid)
        timed(f"a mask tile of the deepest level ({top})", review, "mask", top, mid, mid)
        t0 = time.perf_counter()
        timed(
            "a new app on the same folder: first tile (cache reused)", web.Review(config), "image", top, 0, 0
        )
        files = sum(1 for _ in (out / web.CACHE_DIR).rglob("*.png"))
        cache_mb = sum(p.stat().st_size for p in (out / web.CACHE_DIR).rglob("*.png")) / 2**20
        for what, s in rows:
            print(f"| {what} | {s:.2f} s |")
        peak, mb = _rss("VmHWM"), n * n / 2**20
        print(
            f"| peak RSS {peak:.0f} MB: {peak - base:.0f} MB over {base:.0f} MB before (image {mb:.0f} MB) |"
        )
        print(f"| cache: {files} tiles, {cache_mb:.0f} MB |")


if __name__ == "__main__":
    main()
