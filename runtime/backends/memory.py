"""The batch size from free GPU memory: a function of (model, input size, free memory).

:func:`measure` runs a segmenter at batch 1 and 2 on random inputs of its size and reads the peak of
torch's CUDA allocator: the difference is what one more input costs, the rest is fixed (weights,
workspaces). :func:`batch_size_for` then takes the largest power of two whose predicted peak stays under
a share of the free memory. Used by :func:`samsem.runtime.load.load_pipeline` on CUDA when the caller
gives no batch size. Memory that an engine allocates outside torch (TensorRT's own activations) is not
seen; the headroom covers such engines and fragmentation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from samsem.runtime.models.segmenter import Segmenter

DEFAULT_BATCH = 8  # what a CPU run (or a model that cannot be measured) uses
MAX_BATCH = 64


@dataclass(frozen=True)
class MemoryCost:
    """Peak device bytes of a model: ``fixed + per_input * batch``."""

    per_input: int
    fixed: int


def batch_size_for(cost: MemoryCost, free_bytes: int, limit: int = MAX_BATCH, headroom: float = 0.7) -> int:
    """Largest power of two ``b <= limit`` with ``cost.fixed + b * cost.per_input <= headroom * free``
    (at least 1)."""
    budget = headroom * free_bytes - cost.fixed
    b = 1
    while b * 2 <= limit and (b * 2) * max(cost.per_input, 1) <= budget:
        b *= 2
    return b


def measure(seg: Segmenter, device: str) -> MemoryCost:
    """Peak CUDA allocator bytes of ``seg`` at batch 1 and 2 on random inputs of its size."""
    import torch

    dev = torch.device(device)
    rng = np.random.default_rng(0)
    peaks = []
    for batch in (1, 2):
        images = rng.random((batch, seg.input_size, seg.input_size), dtype=np.float32)
        points = (rng.random((batch, 5, 2)) * seg.input_size).astype(np.float32) if seg.uses_prompts else None
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        seg.predict(images, points)
        torch.cuda.synchronize(dev)
        peaks.append(torch.cuda.max_memory_allocated(dev) - base)
    per_input = max(peaks[1] - peaks[0], 1)
    return MemoryCost(per_input=per_input, fixed=max(peaks[0] - per_input, 0))


def auto_batch_size(seg: Segmenter, device: str, limit: int = MAX_BATCH) -> int:
    """The batch size for ``seg`` on ``device``: from its measured cost and the free memory on CUDA,
    :data:`DEFAULT_BATCH` elsewhere."""
    import torch

    if torch.device(device).type != "cuda":
        return DEFAULT_BATCH
    cost = measure(seg, device)
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return batch_size_for(cost, free, limit)
