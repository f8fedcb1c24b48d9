"""Speckle counting: the Numba kernel vs a Python loop of ``cv2.connectedComponentsWithStats``.

Workload: the patches of one 10k x 10k image at both scales (484 model-1 + 484 model-2 masks of
512 x 512 by default), synthetic Manhattan line masks with salt noise (a spread of speckle counts,
from clean to heavily speckled). Timed single-threaded (Numba ``parallel=False`` vs
``cv2.setNumThreads(1)``) and with all cores (Numba ``prange`` over patches vs OpenCV's own threads);
each figure is the best of ``--repeat`` runs. Both must give identical counts.

    python benchmarks/bench_speckle.py [--patches 968] [--size 512] [--repeat 3] [--seed 0]
"""

from __future__ import annotations

import argparse
import os

import cv2
import numba
import numpy as np
from timing import best_ms

from samsem.runtime.stages.speckle import count_speckles


def make_masks(n: int, size: int, seed: int) -> np.ndarray:
    """(n, size, size) uint8 {0,1} line masks: 2-12 lines 4-40 px wide plus 0-400 salt speckles each."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), np.uint8)
    for m in masks:
        for _ in range(rng.integers(2, 13)):
            w = int(rng.integers(4, 41))
            a, b = sorted(rng.integers(0, size, 2).tolist())
            p = int(rng.integers(0, size))
            if rng.random() < 0.5:
                m[p : p + w, a : b + 1] = 1
            else:
                m[a : b + 1, p : p + w] = 1
        k = int(rng.integers(0, 401))
        ys, xs = rng.integers(0, size, (2, k))
        m[ys, xs] ^= 1  # salt on dielectric, pepper holes in metal
    return masks


def opencv_loop(masks: np.ndarray, max_size: int = 16) -> np.ndarray:
    """Reference: one ``connectedComponentsWithStats`` call per patch."""
    out = np.empty(len(masks), np.int32)
    for i, m in enumerate(masks):
        _, _, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
        out[i] = np.count_nonzero(stats[1:, cv2.CC_STAT_AREA] <= max_size)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patches", type=int, default=968, help="number of patches (default: 2 x 484)")
    parser.add_argument("--size", type=int, default=512, help="patch side in pixels")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per variant, best is reported")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    masks = make_masks(args.patches, args.size, args.seed)
    cores = os.cpu_count() or 1
    numba_threads = numba.config.NUMBA_NUM_THREADS
    cv_threads = cv2.getNumThreads()

    rows = []
    cv2.setNumThreads(1)
    cv_ms, cv_counts = best_ms(lambda: opencv_loop(masks), args.repeat)
    nb_ms, nb_counts = best_ms(lambda: count_speckles(masks, parallel=False), args.repeat)
    rows.append(("1 thread", cv_ms, nb_ms, np.array_equal(cv_counts, nb_counts)))

    cv2.setNumThreads(cv_threads)
    numba.set_num_threads(numba_threads)
    cv_ms, cv_counts_p = best_ms(lambda: opencv_loop(masks), args.repeat)
    nb_ms, nb_counts_p = best_ms(lambda: count_speckles(masks, parallel=True), args.repeat)
    rows.append((f"all cores ({cores})", cv_ms, nb_ms, np.array_equal(cv_counts_p, nb_counts_p)))

    n = len(masks)
    print(
        f"{n} patches of {args.size}x{args.size}, speckles/patch: median {int(np.median(cv_counts))}, "
        f"max {int(cv_counts.max())}; best of {args.repeat}; OpenCV {cv2.__version__}, "
        f"Numba {numba.__version__} ({numba.threading_layer()} threading layer)"
    )
    head = ("OpenCV ms", "ms/patch", "Numba ms", "ms/patch")
    print(f"{'threads':<16}{head[0]:>11}{head[1]:>10}{head[2]:>10}{head[3]:>10}{'speedup':>9}  same")
    for name, c, m, same in rows:
        print(f"{name:<16}{c:>11.1f}{c / n:>10.3f}{m:>10.1f}{m / n:>10.3f}{c / m:>8.2f}x  {same}")
    if not all(same for *_, same in rows):
        raise SystemExit("Numba and OpenCV speckle counts differ")


if __name__ == "__main__":
    main()
