"""Assemble per-patch masks into one full-size mask without blending.

Every pixel is taken from exactly one patch: the one whose centre is nearest, ties to the lower
(upper/left) patch (see :mod:`samsem.runtime.stages.tiling` and :attr:`Tiling.owned`). Overlapping margins of
the other patches are discarded, so two patch decisions are never mixed in one pixel, and a pixel is
always predicted by a patch in which it lies away from the patch border where possible.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from samsem.runtime.stages.tiling import Tiling


def paste_owned(out: np.ndarray, patch_mask: np.ndarray, box: np.ndarray, owned: np.ndarray) -> None:
    """Write the owned part of one patch result into ``out`` in place.

    out: (H, W) full-size mask; patch_mask: (patch, patch) or box-sized (h, w) result whose pixel
    (0, 0) is image pixel ``(box[0], box[1])``; box, owned: ``[y0, x0, y1, x1]`` with owned inside box.
    """
    by0, bx0 = int(box[0]), int(box[1])
    oy0, ox0, oy1, ox1 = (int(v) for v in owned)
    if oy1 - by0 > patch_mask.shape[0] or ox1 - bx0 > patch_mask.shape[1] or oy0 < by0 or ox0 < bx0:
        raise ValueError(
            f"patch mask of shape {patch_mask.shape[:2]} at {[by0, bx0]} does not cover owned region "
            f"{[oy0, ox0, oy1, ox1]}"
        )
    out[oy0:oy1, ox0:ox1] = patch_mask[oy0 - by0 : oy1 - by0, ox0 - bx0 : ox1 - bx0]


def stitch(
    tiling: Tiling, patch_masks: Iterable[tuple[int, np.ndarray]], out: np.ndarray | None = None
) -> np.ndarray:
    """Assemble ``(patch index, (patch, patch) mask)`` pairs into a (H, W) mask.

    Writes into ``out`` when given (any dtype, shape (H, W)), else into a new zeroed uint8 array;
    patches that are never given leave their owned region untouched (zero for a new array), which is
    how the pipeline represents patches it skipped as empty. Returns the full mask.
    """
    shape = (tiling.height, tiling.width)
    if out is None:
        out = np.zeros(shape, np.uint8)
    elif out.shape[:2] != shape:
        raise ValueError(f"out has shape {out.shape}, the tiling covers {shape}")
    boxes, owned = tiling.boxes, tiling.owned
    n = len(tiling)
    for index, mask in patch_masks:
        if not 0 <= index < n:
            raise IndexError(f"patch index {index} out of range for a tiling of {n} patches")
        paste_owned(out, mask, boxes[index], owned[index])
    return out
