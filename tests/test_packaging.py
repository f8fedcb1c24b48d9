"""Packaging metadata installs without warnings: an SPDX license string, and every folder that holds
package files is a listed package (setuptools warns about data folders missing from ``packages``)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_license_is_an_spdx_string_and_setuptools_supports_it() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert isinstance(meta["project"]["license"], str)  # the table form is deprecated
    assert any(r.startswith("setuptools>=77") for r in meta["build-system"]["requires"])


def test_every_folder_with_package_files_is_a_listed_package() -> None:
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    packages = set(tool["packages"])
    roots = tool["package-dir"]  # package name -> folder
    missing = []
    for name, folder in roots.items():
        base = ROOT / folder
        for d in [base, *(p for p in base.rglob("*") if p.is_dir())]:
            if "__pycache__" in d.parts or not any(f.is_file() for f in d.iterdir()):
                continue
            dotted = ".".join([name, *d.relative_to(base).parts])
            if not any(dotted == p for p in packages):
                missing.append(f"{d.relative_to(ROOT)} ({dotted})")
    assert not missing, f"folders with files missing from [tool.setuptools] packages: {missing}"
