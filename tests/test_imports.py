"""Import boundaries: train -> export -> runtime <- server; inside the runtime, stages know no models or
backends; the core (io, synthesis, evaluation) knows no stage; heavy libraries only where they are owned;
nobody imports another module's private names."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# source folder (relative to the checkout) -> samsem modules it must never import
FORBIDDEN = {
    "runtime": ("samsem.train", "samsem.export", "samsem.server"),
    "runtime/stages": (
        "samsem.runtime.models",
        "samsem.runtime.backends",
        "samsem.runtime.bundle",
        "samsem.runtime.load",
        "samsem.runtime.pipeline",
    ),
    "runtime/models": ("samsem.runtime.backends", "samsem.runtime.bundle", "samsem.runtime.load"),
    "export": ("samsem.train", "samsem.server"),
    "server": ("samsem.train", "samsem.export"),
    "samsem/evaluation": ("samsem.runtime", "samsem.train", "samsem.export", "samsem.server"),
    "samsem/synth": ("samsem.runtime", "samsem.train", "samsem.export", "samsem.server"),
    "samsem": ("samsem.train", "samsem.export", "samsem.server"),
}
SOURCES = ("runtime", "export", "train", "server", "samsem", "benchmarks", "tools", "tests")
# the one module that may name every front-end by string: the command table it imports them from lazily
COMPOSITION_ROOT = ROOT / "samsem" / "cli.py"
_MODULE_PATH = re.compile(r"[A-Za-z_]\w*(\.\w+)+(:\w+)?")  # "samsem.train.task" or "...task:SAM2Task"


def _imports(path: Path) -> list[ast.ImportFrom | ast.Import]:
    return [
        n
        for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(n, ast.Import | ast.ImportFrom)
    ]


def _modules(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    return [node.module] if node.module else []


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_stages_import_one_way(folder: str) -> None:
    bad = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in _imports(path):
            for name in _modules(node):
                if name.startswith(FORBIDDEN[folder]):
                    bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, bad


def _string_references(source: str, forbidden: tuple[str, ...]) -> list[str]:
    """String constants naming a forbidden module ("samsem.train.task:SAM2Task"): an import by name."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and _MODULE_PATH.fullmatch(node.value)
        ):
            module = node.value.partition(":")[0]
            if any(module == f or module.startswith(f"{f}.") for f in forbidden):
                out.append(f"{node.lineno}: {node.value!r}")
    return out


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_no_string_names_a_forbidden_module(folder: str) -> None:
    """No "module:attr" string (resolved with importlib later) hides an import the boundaries forbid."""
    bad = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        if path != COMPOSITION_ROOT:
            refs = _string_references(path.read_text(encoding="utf-8"), FORBIDDEN[folder])
            bad += [f"{path.relative_to(ROOT)}:{r}" for r in refs]
    assert not bad, bad


def test_string_reference_check_catches_a_dotted_path() -> None:
    source = 'FAMILY = ModelFamily(name="sam2", task="samsem.train.task:SAM2Task")\nx = "samsem.trainer"\n'
    assert _string_references(source, FORBIDDEN["runtime"]) == ["1: 'samsem.train.task:SAM2Task'"]
    assert _string_references('"""See :mod:`samsem.train.task`."""', FORBIDDEN["runtime"]) == []


def test_no_module_imports_private_names_of_another() -> None:
    bad = []
    for folder in SOURCES:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in _imports(path):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("samsem"):
                    names = [
                        a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")
                    ]
                    bad += [f"{path.relative_to(ROOT)}: {node.module}.{n}" for n in names]
    assert not bad, bad


def test_family_names_are_only_compared_in_the_registry() -> None:
    bad = []
    for folder in ("runtime", "export", "train", "server"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if "family ==" in line or "family !=" in line:
                    bad.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not bad, bad


def test_runtime_import_loads_no_heavy_optional_library() -> None:
    code = (
        "import sys, json\n"
        "import samsem, samsem.cli, samsem.runtime.pipeline, samsem.runtime.load\n"
        "import samsem.runtime.bundle.open\n"
        "import samsem.runtime.backends.ort, samsem.runtime.backends.trt, samsem.evaluation.esd\n"
        "import samsem.runtime.models.registry, samsem.runtime.outputs, samsem.runtime.cluster\n"
        "samsem.cli.build_parser()\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout))
    heavy = {"tensorrt", "onnxruntime", "grpc", "ray", "pyarrow", "topolosses", "optuna", "gdstk"}
    heavy.add("samsem.train.loop")
    assert not heavy & loaded, heavy & loaded


def test_command_line_help_imports_no_model_code() -> None:
    code = (
        "import sys, samsem.cli\n"
        "samsem.cli.build_parser()\n"
        "print('torch' in sys.modules, 'cv2' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_only_the_cluster_runner_imports_ray() -> None:
    """Ray (and pyarrow, which comes with it) belong to samsem.runtime.cluster; samsem.runtime.cli
    imports that module only when --ray is given."""
    owner = ROOT / "runtime" / "cluster.py"
    bad = []
    for folder in ("runtime", "export", "train", "server", "samsem"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in _imports(path):
                for name in _modules(node):
                    if name.split(".")[0] in ("ray", "pyarrow") and path != owner:
                        bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, bad
    code = (
        "import sys, samsem.runtime.cli; print(sorted({'ray', 'samsem.runtime.cluster'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
