"""Generate the committed Python stubs of ``proto/samsem/v1/samsem.proto`` into ``server/``.

Run ``python -m samsem.server.protogen`` after editing the .proto. The stubs are flat modules of
this package (``samsem_pb2``, ``samsem_pb2_grpc``, ``samsem_pb2.pyi``) so that the runtime does not
need grpcio-tools; the generated absolute import ``from samsem.v1 import samsem_pb2`` is rewritten
to ``from samsem.server import samsem_pb2``. ``tests/test_server_proto.py`` regenerates them into a
temporary directory and fails when the committed ones differ from the .proto.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parents[1] / "proto"  # repo: proto/, installed: samsem/proto/
PROTO_FILE = "samsem/v1/samsem.proto"
STUB_DIR = Path(__file__).resolve().parent
STUBS = ("samsem_pb2.py", "samsem_pb2.pyi", "samsem_pb2_grpc.py")
_HEADER = (
    "# ruff: noqa\n# fmt: off\n"
    "# Generated from proto/samsem/v1/samsem.proto by `python -m samsem.server.protogen`.\n"
)


def generate(out_dir: Path) -> list[Path]:
    """Run protoc (grpcio-tools) on the .proto and write the fixed-up stubs into ``out_dir``."""
    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            PROTO_FILE,
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"protoc failed:\n{done.stderr}")
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for name in STUBS:
            text = (Path(tmp) / "samsem" / "v1" / name).read_text()
            text = text.replace("from samsem.v1 import samsem_pb2", "from samsem.server import samsem_pb2")
            target = out_dir / name
            target.write_text(_HEADER + text)
            written.append(target)
    return written


def main() -> int:
    """Regenerate the stubs in place (``server/``)."""
    with tempfile.TemporaryDirectory() as tmp:
        for path in generate(Path(tmp)):
            shutil.copyfile(path, STUB_DIR / path.name)
            print(f"wrote {STUB_DIR / path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
