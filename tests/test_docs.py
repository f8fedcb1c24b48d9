"""The README's Python examples run as written (from the checkout's root)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)


def test_readme_python_api_example_runs() -> None:
    blocks = _python_blocks()
    assert blocks, "README has no Python example"
    for code in blocks:
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
        )
        assert out.returncode == 0, out.stderr
        assert "(1024, 1024) uint8" in out.stdout
