"""The committed stubs in server/ are current with proto/samsem/v1/samsem.proto, and the .proto ships."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from samsem.server import protogen
from samsem.server import samsem_pb2 as pb

REPO = Path(__file__).resolve().parents[1]


def _normalised(text: str) -> list[str]:
    """Generated text without the lines naming generator versions (a newer grpcio-tools is fine)."""
    return [ln for ln in text.splitlines() if "GENERATED_VERSION =" not in ln and "Python Version:" not in ln]


@pytest.mark.skipif(importlib.util.find_spec("grpc_tools") is None, reason="needs grpcio-tools")
def test_committed_stubs_match_the_proto(tmp_path: Path) -> None:
    fresh = protogen.generate(tmp_path)
    assert [p.name for p in fresh] == list(protogen.STUBS)
    # the descriptor compiled from the .proto equals the one embedded in the committed module
    text = (tmp_path / "samsem_pb2.py").read_text()
    committed = (protogen.STUB_DIR / "samsem_pb2.py").read_text()
    start = "AddSerializedFile("
    fresh_blob = text[text.index(start) : text.index("\n", text.index(start))]
    committed_blob = committed[committed.index(start) : committed.index("\n", committed.index(start))]
    assert fresh_blob == committed_blob, "stubs are stale: run `python -m samsem.server.protogen`"
    # the service stubs and type stubs are the generator's output for this descriptor
    for name in ("samsem_pb2_grpc.py", "samsem_pb2.pyi"):
        fresh_text = _normalised((tmp_path / name).read_text())
        assert fresh_text == _normalised((protogen.STUB_DIR / name).read_text()), f"{name} is stale"


def test_service_descriptor() -> None:
    fd = descriptor_pb2.FileDescriptorProto.FromString(pb.DESCRIPTOR.serialized_pb)
    assert fd.name == "samsem/v1/samsem.proto" and fd.package == "samsem.v1"
    (service,) = fd.service
    methods = {m.name: (m.client_streaming, m.server_streaming) for m in service.method}
    assert methods == {
        "Segment": (True, True),
        "SegmentTile": (False, False),
        "SubmitJob": (False, False),
        "GetJob": (False, False),
        "WatchJob": (False, True),
        "CancelJob": (False, False),
        "ListJobs": (False, False),
        "GetModelInfo": (False, False),
    }


def test_proto_is_package_data() -> None:
    """The .proto is installed as package data at samsem/proto/samsem/v1/ (protogen's PROTO_ROOT)."""
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = cfg["tool"]["setuptools"]["package-data"]["samsem.server"]
    server_dir = REPO / cfg["tool"]["setuptools"]["package-dir"]["samsem.server"]
    shipped = {p.resolve() for pat in patterns for p in server_dir.glob(pat)}
    assert (protogen.PROTO_ROOT / protogen.PROTO_FILE).resolve() in shipped
    assert (server_dir / "samsem_pb2.pyi").resolve() in shipped
