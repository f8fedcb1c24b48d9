"""Import boundaries: train -> export -> runtime <- server, heavy libraries only where they are owned."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# stage folder -> samsem subpackages it must never import
FORBIDDEN = {
    "runtime": ("samsem.train", "samsem.export", "samsem.server"),
    "export": ("samsem.train", "samsem.server"),
    "server": ("samsem.train", "samsem.export"),
    "samsem": ("samsem.train", "samsem.export", "samsem.server"),
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_stages_import_one_way(folder: str) -> None:
    bad = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for name in _imports(path):
            if name.startswith(FORBIDDEN[folder]):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, bad


def test_runtime_import_loads_no_heavy_optional_library() -> None:
    code = (
        "import sys, json\n"
        "import samsem.cli, samsem.runtime.pipeline, samsem.runtime.load, samsem.runtime.bundle.manifest\n"
        "import samsem.runtime.backends.ort, samsem.runtime.backends.trt, samsem.evaluation.esd\n"
        "samsem.cli.build_parser()\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout))
    heavy = {"tensorrt", "onnxruntime", "grpc", "ray", "topolosses", "optuna", "samsem.train.loop"}
    assert not heavy & loaded, heavy & loaded
