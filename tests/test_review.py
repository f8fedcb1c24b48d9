"""samsem.server.review.core: queue order, per-patch replacement (atomic, original kept), audit log."""

import json

import numpy as np

from samsem.io import read_mask, write_mask
from samsem.server.review import core


def _out(tmp_path):
    patches = [
        {
            "index": 0,
            "box": [0, 0, 4, 4],
            "source": "model1",
            "agreement": 0.9,
            "score": 0.5,
            "flagged": False,
        },
        {
            "index": 1,
            "box": [0, 4, 4, 8],
            "source": "fallback",
            "agreement": 0.2,
            "score": 0.9,
            "flagged": True,
        },
        {
            "index": 2,
            "box": [4, 0, 8, 4],
            "source": "model2",
            "agreement": 0.3,
            "score": 0.1,
            "flagged": False,
        },
        {
            "index": 3,
            "box": [4, 4, 8, 8],
            "source": "model2",
            "agreement": 0.9,
            "score": 0.2,
            "flagged": False,
        },
    ]
    (tmp_path / "a.report.json").write_text(json.dumps({"patches": patches}))
    write_mask(tmp_path / "a.mask.png", np.zeros((8, 8), bool))
    return tmp_path


def test_queue_flagged_then_disagreement_then_low_score(tmp_path):
    assert [q.index for q in core.queue(_out(tmp_path))] == [1, 2, 3, 0]


def test_replace_changes_only_that_patch_keeps_original_and_logs(tmp_path):
    out = _out(tmp_path)
    core.replace(out, "a", 2, np.ones((4, 4), bool), "brush", who="tester")
    mask = read_mask(out / "a.mask.png")
    assert mask[4:8, 0:4].all() and mask.sum() == 16
    assert not read_mask(out / "a.mask.orig.png").any()
    entry = json.loads((out / "review.jsonl").read_text().splitlines()[-1])
    assert (entry["who"], entry["image"], entry["patch"], entry["action"]) == ("tester", "a", 2, "brush")
    core.accept(out, "a", 1, who="tester")
    assert core.summary(out) == {"patches": 4, "reviewed": 2, "actions": {"brush": 1, "accept": 1}}
