"""Bad invocations end with one clear line (what, which path, what was expected) and exit code 2 (1 when
the server is unreachable), never a traceback. Each runs as a user would, in its own process."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "examples" / "images"


def _run_all(cases: dict[str, list[str]], cwd: Path) -> dict[str, subprocess.CompletedProcess]:
    """Run every case's `samsem ARGS` at once (they are independent) and collect the results."""
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "samsem.cli", *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, args in cases.items()
    }
    out = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=600)
        out[name] = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    return out


def test_bad_invocations_give_one_line_and_no_traceback(tmp_path: Path, lines_dataset) -> None:
    (tmp_path / "afile").write_text("a file where a folder is expected")
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = str(busy.getsockname()[1])
    data = lines_dataset(3, 96, seed=3, vertical=True, prefix="e")
    tiny = ["--family", "lite", "--config", "tiny", "--input-size", "64", "--epochs", "1", "--device", "cpu"]
    cases = {
        "segment -o file": (["segment", str(IMAGES), "-o", "afile"], 2, ["afile", "not a directory"]),
        "segment -o file/sub": (["segment", str(IMAGES), "-o", "afile/sub"], 2, ["afile/sub", "afile"]),
        "evaluate -o file": (
            [
                "evaluate",
                "--pred",
                str(ROOT / "examples" / "masks"),
                "--gt",
                str(ROOT / "examples" / "masks"),
                "-o",
                "afile",
            ],
            2,
            ["afile", "not a directory"],
        ),
        "train --out file": (
            ["train", "--data", str(data), "--out", "afile", *tiny],
            2,
            ["afile", "directory"],
        ),
        "serve busy port": (["serve", "--model", "classical", "--port", port], 2, [port, "another port"]),
        "client dead server": (
            ["client", "segment", str(IMAGES), "-o", "c", "--server", f"127.0.0.1:{port}9"],
            1,
            ["cannot connect", f"127.0.0.1:{port}9"],
        ),
        "misspelt flag": (
            ["segment", str(IMAGES), "-o", "x", "--previw"],
            2,
            ["usage: samsem segment", "--previw"],
        ),
        "foreign checkpoint": (
            ["segment", str(IMAGES), "-o", "x", "--model", "notes.pt"],
            2,
            ["notes.pt", "not a PyTorch checkpoint"],
        ),
    }
    if importlib.util.find_spec("tensorrt") is None:
        cases["export trt without TensorRT"] = (
            ["export", "--checkpoint", "notes.pt", "--out", "b", "--formats", "trt"],
            2,
            ["tensorrt", "pip install 'samsem[trt]'"],
        )
    try:
        results = _run_all({name: args for name, (args, _, _) in cases.items()}, tmp_path)
    finally:
        busy.close()
    for name, (_, code, fragments) in cases.items():
        res = results[name]
        assert "Traceback" not in res.stderr, f"{name}:\n{res.stderr}"
        assert res.returncode == code, f"{name}: exit {res.returncode}\n{res.stderr}"
        errors = [line for line in res.stderr.splitlines() if "error:" in line or "cannot connect" in line]
        assert len(errors) == 1, f"{name}: expected one error line\n{res.stderr}"
        for fragment in fragments:
            assert fragment in res.stderr, f"{name}: {fragment!r} missing\n{res.stderr}"
    assert not (tmp_path / "x").exists()  # refused before writing anything


@pytest.mark.parametrize("argv", [["segment", "--help"], ["evaluate", "--help"], ["train", "--help"]])
def test_help_states_the_defaults_that_are_used(argv: list[str], capsys) -> None:
    from samsem.cli import main

    with pytest.raises(SystemExit):
        main(argv)
    text = " ".join(capsys.readouterr().out.split())
    if argv[0] in ("segment", "evaluate"):
        from samsem.runtime.load import default_bundle

        want = "the bundled lite model" if default_bundle() is not None else "classical Sauvola segmenter"
        assert f"default: {want}" in text
    else:  # per family, where the families differ
        assert "--input-size N model input side S in pixels (default sam2: 1024, lite: 512)" in text
        assert "--lr X AdamW learning rate (default sam2: 1.111e-05, lite: 0.001)" in text
        assert "the largest that fits in memory, at most sam2 12, lite 8" in text


def test_top_level_help_speaks_to_users(capsys) -> None:
    from samsem.cli import main

    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "dispatcher" not in text and "segments metal lines" in text and "samsem COMMAND --help" in text
