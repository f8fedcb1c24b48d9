"""Speckle counts equal OpenCV's 8-connected component areas, in parallel and on one thread."""

from __future__ import annotations

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from samsem.runtime.stages.speckle import count_speckles


def _opencv_counts(masks: np.ndarray, max_size: int) -> np.ndarray:
    out = []
    for m in masks:
        _, _, stats, _ = cv2.connectedComponentsWithStats(m.astype(np.uint8), connectivity=8)
        out.append(int(np.count_nonzero(stats[1:, cv2.CC_STAT_AREA] <= max_size)))
    return np.array(out, np.int32)


def _line_masks(rng: np.random.Generator, n: int, h: int, w: int, salt: float) -> np.ndarray:
    """Manhattan line masks with salt noise and some pepper holes."""
    masks = np.zeros((n, h, w), np.uint8)
    for m in masks:
        for _ in range(rng.integers(1, 8)):
            t = int(rng.integers(2, 12))
            if rng.random() < 0.5:
                y = int(rng.integers(0, h))
                m[y : y + t, int(rng.integers(0, w // 2)) : int(rng.integers(w // 2, w + 1))] = 1
            else:
                x = int(rng.integers(0, w))
                m[int(rng.integers(0, h // 2)) : int(rng.integers(h // 2, h + 1)), x : x + t] = 1
        m[rng.random((h, w)) < salt] = 1
        m[rng.random((h, w)) < salt / 4] = 0
    return masks


@pytest.mark.parametrize("parallel", [True, False])
def test_matches_opencv_on_random_masks(parallel: bool) -> None:
    rng = np.random.default_rng(1234)
    for density in (0.01, 0.05, 0.2, 0.4, 0.6, 0.9):
        for h, w in ((1, 1), (1, 37), (29, 1), (17, 64), (64, 64), (97, 131)):
            masks = (rng.random((7, h, w)) < density).astype(np.uint8)
            for max_size in (1, 3, 16):
                np.testing.assert_array_equal(
                    count_speckles(masks, max_size, parallel=parallel), _opencv_counts(masks, max_size)
                )


@pytest.mark.parametrize("parallel", [True, False])
def test_matches_opencv_on_line_masks_with_salt(parallel: bool) -> None:
    rng = np.random.default_rng(7)
    masks = _line_masks(rng, 24, 256, 256, salt=0.002)
    got = count_speckles(masks, parallel=parallel)
    np.testing.assert_array_equal(got, _opencv_counts(masks, 16))
    assert got.min() > 0  # the salt does make speckles


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 9),
    h=st.integers(1, 40),
    w=st.integers(1, 40),
    density=st.floats(0.0, 1.0),
    max_size=st.integers(1, 30),
    seed=st.integers(0, 2**16),
)
def test_matches_opencv_property(n: int, h: int, w: int, density: float, max_size: int, seed: int) -> None:
    masks = (np.random.default_rng(seed).random((n, h, w)) < density).astype(np.uint8)
    expected = _opencv_counts(masks, max_size)
    np.testing.assert_array_equal(count_speckles(masks, max_size), expected)
    np.testing.assert_array_equal(count_speckles(masks, max_size, parallel=False), expected)


def test_edge_cases() -> None:
    empty = np.zeros((8, 8), np.uint8)
    assert count_speckles(empty[None]).tolist() == [0]
    assert count_speckles(np.ones((1, 8, 8), np.uint8)).tolist() == [0]  # one 64-px component
    assert count_speckles(np.ones((1, 4, 4), np.uint8)).tolist() == [1]  # exactly 16 px is a speckle
    assert count_speckles(np.ones((1, 1, 17), np.uint8)).tolist() == [0]  # 17 px is not
    single = empty.copy()
    single[0, 0] = single[7, 7] = single[3, 4] = 1
    assert count_speckles(single[None]).tolist() == [3]
    diagonal = np.eye(8, dtype=np.uint8)  # touching only at corners: one component of 8 px
    assert count_speckles(diagonal[None]).tolist() == [1]
    anti = np.fliplr(np.eye(20, dtype=np.uint8))  # 20 px along the anti-diagonal: too big
    assert count_speckles(anti[None]).tolist() == [0]
    assert count_speckles(np.zeros((0, 8, 8), np.uint8)).tolist() == []


def test_input_forms() -> None:
    rng = np.random.default_rng(3)
    masks = rng.random((5, 30, 40)) < 0.3
    expected = _opencv_counts(masks, 16)
    np.testing.assert_array_equal(count_speckles(masks), expected)  # bool
    np.testing.assert_array_equal(count_speckles(masks.astype(np.float32) * 255), expected)  # nonzero = fg
    np.testing.assert_array_equal(
        count_speckles(masks.astype(np.uint8)[:, :, ::2]),
        _opencv_counts(np.ascontiguousarray(masks[:, :, ::2]), 16),
    )  # non-contiguous
    assert count_speckles(masks[0]).tolist() == expected[:1].tolist()  # one (h, w) mask
    assert count_speckles(masks).dtype == np.int32
    with pytest.raises(ValueError, match="masks must be"):
        count_speckles(np.zeros(5, np.uint8))


CONCURRENT = """
import threading
import numpy as np
from samsem.runtime.stages.decision import DecisionConfig, decide
from samsem.runtime.stages.speckle import count_speckles
masks = (np.random.default_rng(0).random((64, 48, 48)) > 0.7).astype(np.uint8)
expected = count_speckles(masks, parallel=False)
agreement = decide(masks, masks[::-1], DecisionConfig()).agreement
bad = []
def work():
    for _ in range(30):
        if not np.array_equal(count_speckles(masks), expected):
            bad.append(1)
        if not np.array_equal(decide(masks, masks[::-1], DecisionConfig()).agreement, agreement):
            bad.append(1)
threads = [threading.Thread(target=work) for _ in range(4)]
[t.start() for t in threads]
[t.join() for t in threads]
import numba
print(numba.threading_layer(), len(bad))
"""


@pytest.mark.parametrize("layer", ["workqueue", None])
def test_concurrent_threads_survive_every_threading_layer(layer: str | None) -> None:
    """Numba's workqueue layer aborts the process on concurrent parallel launches; with it forced,
    four threads counting speckles and deciding patches at once must still finish with the right results."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    if layer is not None:
        env["NUMBA_THREADING_LAYER"] = layer
    out = subprocess.run(
        [sys.executable, "-c", CONCURRENT], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    used, bad = out.stdout.split()
    assert bad == "0"
    assert used == layer or (layer is None and used in ("tbb", "omp", "workqueue"))
