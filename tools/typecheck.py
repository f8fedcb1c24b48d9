"""Run mypy over the samsem package as installed, i.e. with its stage folders mapped into it.

pyproject maps ``train/ export/ runtime/ server/`` to ``samsem.train`` ... (package-dir), which mypy cannot
follow from the source tree, and it does not read the import hook of an editable install. So this script
mirrors the mapping as a tree of symbolic links in ``.mypy_tree/`` (ignored by git; rebuilt each run, so
new modules are seen) and runs ``mypy -p samsem`` there with the settings of ``[tool.mypy]`` in
pyproject.toml; mypy's cache stays valid between runs. Exit code: mypy's.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    mapping: dict[str, str] = project["tool"]["setuptools"]["package-dir"]
    tree = ROOT / ".mypy_tree"
    shutil.rmtree(tree / "samsem", ignore_errors=True)
    top = tree / "samsem"
    top.mkdir(parents=True)
    for entry in (ROOT / mapping["samsem"]).iterdir():
        (top / entry.name).symlink_to(entry)
    for package, folder in mapping.items():
        if package != "samsem":
            (tree / package.replace(".", "/")).symlink_to(ROOT / folder)
    cmd = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), "-p", "samsem"]
    return subprocess.run(cmd, cwd=tree).returncode


if __name__ == "__main__":
    sys.exit(main())
