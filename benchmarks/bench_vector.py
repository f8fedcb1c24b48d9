"""Vectorizing masks: time and memory of samsem.vector per mask size and output format.

Workload: a segmentation-like mask (a synthetic Manhattan layout from samsem.synth with jagged edges
and specks: Gaussian blur, noise, threshold) of 2048x2048 pixels, tiled to each size. Each size runs in
its own process: the mask is built, the Numba kernels are warmed up on a small mask, then exact
extraction, simplification (``--tolerance``) and each writer are timed once. "peak MB" is the growth
of the process's peak RSS (reset just before, Linux VmHWM) over its RSS with the mask in memory, so it
counts what vectorizing needs on top of the mask; with --big the 16384^2 mask is written to a TIFF and
extracted band by band (samsem.vector.iter_bands), so there the mask itself is not in memory. The
segmentation reference is the ~3 MP/s of the default model on the 2-core dev CPU.

    python benchmarks/bench_vector.py [--sizes 1024 4096 10000] [--big] [--tolerance 1.0]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

TILE = 2048


def segmentation_like(size: int, noise: float = 0.5, seed: int = 0) -> np.ndarray:
    """(size, size) uint8 mask: a 2048x2048 synthetic layout tile with jagged edges, repeated.

    The layout is blurred (sigma 1.5 px) and thresholded after adding smooth noise (normal, blurred with
    sigma 1.5 px, times ``noise``): 0.5 gives about 16k polygon vertices per megapixel and no specks
    (the bundled default model's output on examples/images/sem_medium.png has 4.5k), 2.0 about 110k
    and many specks and holes.
    """
    from samsem.synth.layout import LayoutConfig, generate_layout

    rng = np.random.default_rng(seed)
    tile = generate_layout(TILE, TILE, LayoutConfig(), rng).mask.astype(np.float32)
    wiggle = cv2.GaussianBlur(rng.normal(0, 1, tile.shape).astype(np.float32), (0, 0), 1.5)
    tile = (cv2.GaussianBlur(tile, (0, 0), 1.5) + noise * wiggle > 0.5).astype(np.uint8)
    reps = -(-size // TILE)
    return np.ascontiguousarray(np.tile(tile, (reps, reps))[:size, :size])


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def _reset_peak() -> None:
    """Reset the process's peak RSS (Linux: writing 5 to /proc/self/clear_refs resets VmHWM)."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def _peak_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def run_one(size: int, tolerance: float, noise: float, streamed: bool) -> dict:
    """Measure one size in this process; returns the row as a dict."""
    from samsem.io import write_mask
    from samsem.vector import VectorOptions, extract, extract_bands, iter_bands, write_polygons
    from samsem.vector.simplify import simplify_levels

    warm = segmentation_like(64)
    with tempfile.TemporaryDirectory() as tmp:
        write_polygons(
            simplify_levels(extract(warm), 1.0)[0], tmp, "w", VectorOptions(formats=("svg", "geojson", "gds"))
        )
    del warm
    mask = segmentation_like(size, noise)
    row: dict = {"size": size, "pixels": size * size, "metal": float(mask.mean())}
    with tempfile.TemporaryDirectory() as tmp:
        if streamed:  # the mask only on disk: extraction reads it band by band
            path = write_mask(Path(tmp) / "m.tif", mask)
            del mask
            _reset_peak()
            base = _rss_mb()
            t0 = time.perf_counter()
            polys = extract_bands(iter_bands(path), size)
        else:
            _reset_peak()
            base = _rss_mb()
            t0 = time.perf_counter()
            polys = extract(mask)
        row["extract_s"] = time.perf_counter() - t0
        row["lines"], row["polygons"], row["vertices"] = polys.n_lines, polys.n_polygons, len(polys.xy)
        t0 = time.perf_counter()
        simple, used = simplify_levels(polys, tolerance)
        row["simplify_s"] = time.perf_counter() - t0
        row["vertices_simplified"] = len(simple.xy)
        row["lines_at_full_tolerance"] = float(np.mean(used == tolerance)) if len(used) else 1.0
        for fmt in ("svg", "geojson", "gds"):
            t0 = time.perf_counter()
            out = write_polygons(simple, tmp, "img", VectorOptions(formats=(fmt,)))[fmt]
            row[f"{fmt}_s"] = time.perf_counter() - t0
            row[f"{fmt}_MB"] = out.stat().st_size / 2**20
    row["peak_MB"] = _peak_mb() - base
    row["streamed"] = streamed
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 10000])
    ap.add_argument("--big", action="store_true", help="also 16384x16384, extracted band-wise from a TIFF")
    ap.add_argument("--tolerance", type=float, default=1.0)
    ap.add_argument(
        "--noise", type=float, default=0.5, help="edge noise of the workload (see segmentation_like)"
    )
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--streamed", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.tolerance, args.noise, args.streamed)))
        return
    jobs = [(s, False) for s in args.sizes] + ([(16384, True)] if args.big else [])
    print(
        f"tolerance {args.tolerance} px, edge noise {args.noise}; times in s;"
        " peak = RSS growth over the mask (MB)"
    )
    head = (
        f"{'size':>12} {'MP':>6} {'lines':>7} {'polys':>7} {'vertices':>17} {'extract':>8} {'simplify':>8}"
        f" {'svg':>6} {'geojson':>7} {'gds':>6} {'total':>6} {'MP/s':>6} {'peak':>6}"
    )
    print(head)
    for size, streamed in jobs:
        cmd = [sys.executable, __file__, "--one", str(size), "--tolerance", str(args.tolerance)]
        cmd += ["--noise", str(args.noise)]
        out = subprocess.run([*cmd, *(["--streamed"] if streamed else [])], capture_output=True, text=True)
        if out.returncode:
            print(out.stderr)
            raise SystemExit(out.returncode)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        total = r["extract_s"] + r["simplify_s"] + r["svg_s"] + r["geojson_s"] + r["gds_s"]
        name = f"{size}^2" + (" (TIFF)" if streamed else "")
        verts = f"{r['vertices']}->{r['vertices_simplified']}"
        print(
            f"{name:>12} {r['pixels'] / 1e6:6.1f} {r['lines']:7d} {r['polygons']:7d} {verts:>17}"
            f" {r['extract_s']:8.2f} {r['simplify_s']:8.2f} {r['svg_s']:6.2f} {r['geojson_s']:7.2f}"
            f" {r['gds_s']:6.2f} {total:6.2f} {r['pixels'] / 1e6 / total:6.1f} {r['peak_MB']:6.0f}"
        )
        print(
            f"{'':>12} files: svg {r['svg_MB']:.1f} MB, geojson {r['geojson_MB']:.1f} MB,"
            f" gds {r['gds_MB']:.1f} MB;"
            f" lines at the full tolerance: {100 * r['lines_at_full_tolerance']:.0f}%"
        )


if __name__ == "__main__":
    main()
