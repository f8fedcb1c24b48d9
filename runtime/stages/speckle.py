"""Speckle counting: the per-patch noise measure of the multi-scale decision.

A speckle is an 8-connected foreground component of at most ``max_size`` pixels (16 in the paper).
Counts equal those from OpenCV's ``connectedComponentsWithStats(connectivity=8)`` areas, but all
patches are processed in one Numba call: the labelling is the run-based one of
:mod:`samsem.evaluation.components`, patches are split into contiguous chunks that run in parallel
(``prange``), and each chunk allocates its run buffers once (sized for the worst case of an h x w
mask), so nothing is allocated per patch.

``parallel=False`` runs the very same per-chunk kernel once over all patches from Python, on the
calling thread only (no ``numba.set_num_threads`` juggling, so it is safe to call from any thread).

Threads. The server calls these kernels from several threads at once. Numba's ``workqueue`` threading
layer, its fallback where neither TBB nor an OpenMP runtime can be loaded, kills the process when two
threads launch parallel kernels concurrently. So, unless ``NUMBA_THREADING_LAYER`` says otherwise,
importing this module asks Numba for a thread-safe layer ("threadsafe": TBB, else OpenMP) when one is
available; and every parallel launch here goes through :func:`parallel_guard`, which serializes the
launches whenever the layer in use is (or may turn out to be) ``workqueue``.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
from collections.abc import Iterator

import numba as nb
import numpy as np
from numba.core import config as nb_config

from samsem.evaluation.components import label_runs, run_buffers

# chunks per worker thread: > 1 so that chunks with denser (slower) masks even out
_CHUNKS_PER_THREAD = 4
_SAFE_LAYERS = ("tbb", "omp")
_LAUNCH = threading.Lock()  # serializes parallel launches on the workqueue layer


def _layer_loads(name: str) -> bool:
    """Whether Numba's threading layer ``name`` can be loaded here (its library is present)."""
    try:
        importlib.import_module(f"numba.np.ufunc.{name}pool")
    except (ImportError, OSError):
        return False
    return True


def choose_threading_layer() -> str:
    """Ask Numba for a thread-safe threading layer unless the user chose one; returns the choice made
    ("threadsafe", or Numba's configured value when it is left alone)."""
    configured = str(nb_config.THREADING_LAYER)  # type: ignore[attr-defined]
    if "NUMBA_THREADING_LAYER" in os.environ or configured != "default":
        return configured
    if any(_layer_loads(name) for name in _SAFE_LAYERS):
        nb_config.THREADING_LAYER = configured = "threadsafe"  # type: ignore[attr-defined]
    return configured


choose_threading_layer()


def _layer_is_safe() -> bool:
    """True once Numba runs a thread-safe layer (before the first parallel launch it is unknown)."""
    try:
        return nb.threading_layer() in _SAFE_LAYERS
    except ValueError:  # no parallel kernel has run yet
        return False


@contextlib.contextmanager
def parallel_guard() -> Iterator[None]:
    """Wrap every call of a ``parallel=True`` kernel: serializes the calls unless Numba's threading
    layer is thread-safe (TBB or OpenMP), so concurrent threads never reach ``workqueue`` together."""
    if _layer_is_safe():
        yield
        return
    with _LAUNCH:
        yield


@nb.njit(cache=True, nogil=True)
def label_specks(mask, rows, starts, ends, labels, sizes, max_size: int, out, write: bool) -> int:
    """Label ``mask`` (h, w) (nonzero = fg) with the caller's run buffers; return its number of
    speckles (components of ``<= max_size`` pixels); with ``write`` set ``out`` (h, w), zeroed by the
    caller, to 1 on every larger component (the mask without its specks)."""
    n_runs, n_comp = label_runs(mask, rows, starts, ends, labels)
    sizes[: n_comp + 1] = 0
    for r in range(n_runs):
        sizes[labels[r]] += ends[r] - starts[r]
    count = 0
    for c in range(1, n_comp + 1):
        if sizes[c] <= max_size:
            count += 1
    if write:
        for r in range(n_runs):
            if sizes[labels[r]] > max_size:
                out[rows[r], starts[r] : ends[r]] = 1
    return count


@nb.njit(cache=True, nogil=True)
def _count_range(masks: np.ndarray, max_size: int, lo: int, hi: int, out: np.ndarray) -> None:
    """Speckle counts of ``masks[lo:hi]`` (N, h, w) uint8 into ``out[lo:hi]``."""
    h, w = masks.shape[1], masks.shape[2]
    rows, starts, ends, labels, sizes = run_buffers(h, w)
    for i in range(lo, hi):
        out[i] = label_specks(masks[i], rows, starts, ends, labels, sizes, max_size, masks[i], False)


@nb.njit(cache=True, parallel=True)
def _count_parallel(masks: np.ndarray, max_size: int, n_chunks: int, out: np.ndarray) -> None:
    n = masks.shape[0]
    for c in nb.prange(n_chunks):
        _count_range(masks, max_size, c * n // n_chunks, (c + 1) * n // n_chunks, out)


def count_speckles(masks: np.ndarray, max_size: int = 16, parallel: bool = True) -> np.ndarray:
    """Number of speckles in each mask.

    masks: (N, h, w) uint8 or bool, nonzero = foreground (a single (h, w) mask is taken as N=1).
    Returns (N,) int32: per mask, the number of 8-connected components of ``<= max_size`` pixels.
    ``parallel`` spreads the masks over Numba's worker threads; False uses the calling thread only.
    """
    m = np.asarray(masks)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3:
        raise ValueError(f"masks must be (N, h, w), got shape {m.shape}")
    if m.dtype == np.bool_:
        m = m.view(np.uint8)
    elif m.dtype != np.uint8:
        m = m != 0
        m = m.view(np.uint8)
    m = np.ascontiguousarray(m)
    n = m.shape[0]
    out = np.zeros(n, np.int32)
    if n == 0 or m.shape[1] == 0 or m.shape[2] == 0:
        return out
    if parallel and n > 1:
        n_chunks = min(n, _CHUNKS_PER_THREAD * nb.get_num_threads())
        with parallel_guard():
            _count_parallel(m, int(max_size), n_chunks, out)
    else:
        _count_range(m, int(max_size), 0, n, out)
    return out
