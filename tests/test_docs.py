"""The README runs as written: its Python example, and every command of its bash blocks, in order, in a
scratch folder holding the checkout's ``examples/`` (as a fresh clone would), at small sizes.

Commands are run in this process (``samsem.cli.main``), except ``samsem serve ... &``, which runs in the
background for the client command that follows. What is changed, and why, is listed in ``SKIP`` and
``SUBSTITUTIONS``; each skip shows in pytest's summary (``-ra``) with its reason, each substitution in
the case's output. Afterwards every file the commands wrote must be ignored by the checkout's .gitignore.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# command pattern -> why the test does not run it
SKIP = {
    r"^python3 -m venv ": "creates the virtual environment (.ci/run does, in a fresh clone)",
    r"^\. \.venv/bin/activate$": "activates the virtual environment (.ci/run does)",
    r"^\./install\.sh$": "installs packages from the network, minutes (.ci/run does)",
    r"^python -m pytest": "the test suite itself",
    r"^ray start ": "starts a node of a Ray cluster",
    r"^samsem review (?!.*--(list|accept|replace|summary)\b)": "serves the review page until Ctrl-C "
    "(tests/test_review_browser.py serves and drives it)",
    r"^samsem segment .* --ray \S+": "needs that Ray cluster and its shared storage (tests/test_cluster.py "
    "runs the same command on a local cluster)",
}
# (pattern, replacement, reason), applied in order to every command
SUBSTITUTIONS: list[tuple[str, str, str]] = [
    (r"--count \d+ (.*)--out data/chipA", r"--count 5 \1--out data/chipA", "5 training images"),
    (r"--count \d+(?!.*data/chipA)", "--count 2", "2 images"),
    (r"--size \d+", "--size 128", "128-px images"),
    (r"^(samsem synth (?!.*--count).*--out .*)$", r"\1 --count 2", "2 images"),
    (r"^(samsem synth (?!.*--size).*--out .*)$", r"\1 --size 128", "128-px images"),
    (
        r"--config sam2\.1_hiera_t --checkpoint sam2\.1_hiera_tiny\.pt",
        "--config tiny --input-size 64 --patch-size 128 --epochs 1",
        "official SAM2 weights cannot be downloaded here: a tiny random SAM2 at 64 px, one epoch",
    ),
    (r"^(samsem train --out runs/t1) --epochs \d+", r"\1 --epochs 2", "one more epoch"),
    (
        r"^(samsem train --family lite (?!.*--epochs).*)$",
        r"\1 --config tiny --input-size 64 --patch-size 128 --epochs 1",
        "the tiny lite model at 64 px, one epoch",
    ),
    (
        r"^samsem tune (.*)--config sam2\.1_hiera_t (.*)--trials \d+",
        r"samsem tune \1--config tiny --input-size 64 --patch-size 128 --epochs 1 --step 1 \2--trials 1",
        "one trial of step 1, tiny SAM2 at 64 px, one epoch",
    ),
    (r"--port 50051 --metrics-port 9090", "--port 0 --metrics-port 0", "free ports"),
]


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)


def readme_commands() -> list[tuple[int, str]]:
    """(line number, command) of every command in the README's bash blocks, in order (comments dropped,
    ``&&`` and ``;`` split)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    out = []
    for block in re.finditer(r"```bash\n(.*?)```", text, re.S):
        first = text[: block.start()].count("\n") + 2
        for k, line in enumerate(block.group(1).splitlines()):
            code = line.split(" #", 1)[0].strip()
            for part in re.split(r"\s*(?:&&|;)\s*", code):
                if part:
                    out.append((first + k, part))
    return out


COMMANDS = readme_commands()


def test_readme_python_api_example_runs() -> None:
    blocks = _python_blocks()
    assert blocks, "README has no Python example"
    for code in blocks:
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
        )
        assert out.returncode == 0, out.stderr
        assert "(1024, 1024) uint8" in out.stdout


def test_readme_lists_every_command_family() -> None:
    """The docs test would miss nothing: the README has commands of every subcommand it documents."""
    used = {shlex.split(c)[1] for _, c in COMMANDS if c.startswith("samsem ")}
    assert used >= {"synth", "segment", "evaluate", "train", "tune", "export", "serve", "client", "review"}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A scratch folder with the checkout's examples/, the current directory while the commands run;
    state shared by the commands (the background server)."""
    root = tmp_path_factory.mktemp("readme")
    os.symlink(ROOT / "examples", root / "examples")
    before = Path.cwd()
    os.chdir(root)
    state: dict = {"root": root, "server": None}
    try:
        yield state
    finally:
        os.chdir(before)
        if state["server"] is not None:
            state["server"].terminate()
            state["server"].wait(timeout=60)


def _substitute(command: str) -> tuple[str, list[str]]:
    reasons = []
    for pattern, replacement, reason in SUBSTITUTIONS:
        new = re.sub(pattern, replacement, command)
        if new != command:
            reasons.append(reason)
            command = new
    return command, reasons


def _argv(command: str) -> list[str]:
    """Shell words with globs expanded (sorted) as bash would, relative to the current directory."""
    words = []
    for word in shlex.split(command):
        matches = sorted(glob.glob(word)) if any(c in word for c in "*?[") else []
        words.extend(matches or [word])
    return words


def _start_server(command: str, state: dict) -> None:
    ready = state["root"] / "serve.addr"
    argv = [sys.executable, "-m", "samsem.cli", *_argv(command)[1:], "--ready-file", str(ready)]
    state["server"] = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not ready.exists():
        if state["server"].poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"samsem serve did not start:\n{state['server'].stderr.read()}")
        time.sleep(0.2)
    state["address"] = ready.read_text().strip()


@pytest.mark.parametrize(("line", "command"), COMMANDS, ids=[f"L{n}: {c[:60]}" for n, c in COMMANDS])
def test_readme_command_runs(line: int, command: str, workspace: dict, capsys) -> None:
    from samsem.cli import main

    for pattern, reason in SKIP.items():
        if re.search(pattern, command):
            pytest.skip(f"README line {line}: {reason}")
    run, reasons = _substitute(command)
    if reasons:
        print(f"README line {line}: running `{run}` ({'; '.join(reasons)})")
    if run.endswith("&"):  # a server for the next command
        _start_server(run.rstrip("& "), workspace)
        return
    if "--server 127.0.0.1:50051" in run:
        run = run.replace("127.0.0.1:50051", workspace["address"])
    argv = _argv(run)
    assert argv[0] == "samsem", f"README line {line}: not a samsem command: {command}"
    code = main(argv[1:])
    err = capsys.readouterr().err
    assert code == 0, f"README line {line}: `{run}` exited {code}\n{err}"
    assert "Traceback" not in err


def test_readme_outputs_are_ignored_by_git(workspace: dict) -> None:
    """Runs after the commands (same module): everything they wrote is in .gitignore."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    written = sorted(p.name for p in workspace["root"].iterdir() if p.name not in ("examples", "serve.addr"))
    assert {"data", "out", "report", "runs", "bundles"} <= set(written), written
    for name in written:
        path = f"{name}/" if (workspace["root"] / name).is_dir() else name
        ignored = subprocess.run(["git", "check-ignore", "--no-index", "-q", path], cwd=ROOT, check=False)
        assert ignored.returncode == 0, f"{path}, written by README commands, is not in .gitignore"
