"""samsem.server.review.core: queue order, per-patch replacement (atomic, original kept), audit log."""

import json

import numpy as np
import pytest

from samsem.cli import main
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


def test_cli_list_prints_the_queue_in_order(tmp_path, capsys):
    assert main(["review", str(_out(tmp_path)), "--list"]) == 0
    lines = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [line[1] for line in lines] == ["1", "2", "3", "0"]
    assert lines[0] == ["a", "1", "fallback", "flagged", "0.800", "0.900"]


def test_cli_accept_replace_and_summary(tmp_path, capsys):
    out = _out(tmp_path)
    other = tmp_path / "other.mask.png"
    write_mask(other, np.ones((8, 8), bool))
    assert main(["review", str(out), "--accept", "a:1"]) == 0
    assert main(["review", str(out), "--replace", f"a:2={other}"]) == 0
    assert read_mask(out / "a.mask.png").sum() == 16
    capsys.readouterr()
    assert main(["review", str(out), "--summary"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "patches": 4,
        "reviewed": 2,
        "actions": {"accept": 1, "replace": 1},
    }


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--accept", "a"], "expected IMAGE:PATCH"),
        (["--accept", "a:9"], "no patch 9"),
        (["--accept", "b:0"], "no report for image 'b'"),
        (["--replace", "a:1"], "expects IMAGE:PATCH=MASKFILE"),
        (["--replace", "a:1=missing.png"], "missing.png"),
        (["--alternative", "model3=.", "--list"], "--alternative expects SOURCE=DIR"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys, args, needle):
    out = _out(tmp_path)
    assert main(["review", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not (out / "review.jsonl").exists()


def test_cli_folder_without_reports_exit_2(tmp_path, capsys):
    assert main(["review", str(tmp_path), "--list"]) == 2
    assert "no NAME.report.json" in capsys.readouterr().err
