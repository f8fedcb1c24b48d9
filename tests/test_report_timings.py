"""Per-image timings: an image's seconds are its own, not its batch's (a batched model call is split
among the images in it by their number of inputs)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from samsem.runtime.config import PipelineConfig
from samsem.runtime.pipeline import Pipeline
from samsem.runtime.stages.tiling import TilingConfig

PER_INPUT_S = 0.02


class Slow:
    """A model that takes PER_INPUT_S per input and returns the input as the probability."""

    uses_prompts = False

    def __init__(self, input_size: int) -> None:
        self.input_size = input_size

    def predict(self, images, points=None):
        time.sleep(PER_INPUT_S * len(images))
        return images.astype(np.float32), np.ones(len(images), np.float32)


def test_batched_model_time_is_split_by_inputs() -> None:
    cfg = PipelineConfig(tiling=TilingConfig(64, 0.1), batch_size=32, single_scale=2)
    pipe = Pipeline(None, Slow(64), cfg)
    rng = np.random.default_rng(0)
    small = (rng.random((64, 64)) * 255).astype(np.uint8)  # 1 patch
    large = (rng.random((160, 160)) * 255).astype(np.uint8)  # 3 x 3 patches
    assert pipe.count_inputs(64, 64) == 1 and pipe.count_inputs(160, 160) == 9
    results = list(pipe.segment_many([("small", lambda: small), ("large", lambda: large)]))  # one batch
    t = {r.name: r.report.timings_s for r in results}
    total = t["small"]["model2"] + t["large"]["model2"]
    assert total >= 10 * PER_INPUT_S * 0.95  # together they account for the one batch
    assert t["large"]["model2"] / t["small"]["model2"] == pytest.approx(9.0)  # by their inputs
    assert t["small"]["model2"] < 0.5 * total  # not the batch's whole time
    for r in results:
        assert set(r.report.to_json()["timings_s"]) >= {"read", "prepare", "model2", "stitch"}
