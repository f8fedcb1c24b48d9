"""TLS, mutual TLS and bearer tokens (certificates made with the openssl command line tool)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import grpc
import pytest
from test_server import lines_image, rpc_error, slow_pipeline

from samsem.server.app import ServerConfig, ServerThread
from samsem.server.client import SamsemClient

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command line tool")
EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _ca(folder: Path, name: str) -> None:
    _openssl(
        "req", "-x509", *EC, "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
        "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder,
    )  # fmt: skip


def _leaf(folder: Path, name: str, ca: str, ext: str) -> None:
    (folder / f"{name}.ext").write_text(ext)
    _openssl("req", *EC, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=folder)
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
        "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=folder,
    )  # fmt: skip


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    """ca (signs server and client), other_ca (signs intruder); server cert for localhost/127.0.0.1."""
    d = tmp_path_factory.mktemp("certs")
    _ca(d, "ca")
    _ca(d, "other_ca")
    _leaf(d, "server", "ca", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    _leaf(d, "client", "ca", "extendedKeyUsage=clientAuth\n")
    _leaf(d, "intruder", "other_ca", "extendedKeyUsage=clientAuth\n")
    return d


IMG = lines_image(64, 80)


def _ok(client: SamsemClient) -> bool:
    return client.segment(IMG, timeout=10).mask.shape == (64, 80)


def test_tls(certs: Path) -> None:
    pipe, _ = slow_pipeline(delay=0)
    cfg = ServerConfig(port=0, tls_cert=certs / "server.pem", tls_key=certs / "server.key")
    with ServerThread(cfg, pipe) as srv:
        with SamsemClient(srv.address, ca=certs / "ca.pem") as client:
            assert _ok(client)
        with SamsemClient(srv.address, timeout=3) as plain:  # no TLS
            assert rpc_error(plain.model_info).code() == grpc.StatusCode.UNAVAILABLE
        with SamsemClient(srv.address, ca=certs / "other_ca.pem", timeout=3) as wrong_ca:
            assert rpc_error(wrong_ca.model_info).code() == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls(certs: Path) -> None:
    pipe, _ = slow_pipeline(delay=0)
    cfg = ServerConfig(
        port=0, tls_cert=certs / "server.pem", tls_key=certs / "server.key", tls_client_ca=certs / "ca.pem"
    )
    with ServerThread(cfg, pipe) as srv:
        with SamsemClient(
            srv.address, ca=certs / "ca.pem", cert=certs / "client.pem", key=certs / "client.key"
        ) as c:
            assert _ok(c)
        with SamsemClient(srv.address, ca=certs / "ca.pem", timeout=3) as no_cert:
            assert rpc_error(no_cert.model_info).code() == grpc.StatusCode.UNAVAILABLE
        foreign = {"cert": certs / "intruder.pem", "key": certs / "intruder.key"}
        with SamsemClient(srv.address, ca=certs / "ca.pem", timeout=3, **foreign) as intruder:
            assert rpc_error(intruder.model_info).code() == grpc.StatusCode.UNAVAILABLE


def test_bearer_tokens_with_tls(certs: Path) -> None:
    pipe, _ = slow_pipeline(delay=0)
    cfg = ServerConfig(
        port=0,
        tls_cert=certs / "server.pem",
        tls_key=certs / "server.key",
        tokens=("alpha-token", "beta-token"),
    )
    with ServerThread(cfg, pipe) as srv:
        with SamsemClient(srv.address, ca=certs / "ca.pem", token="beta-token") as good:
            assert _ok(good)
            assert good.model_info().max_batch_size == 16
        for token in (None, "beta", "beta-token-2", ""):
            with SamsemClient(srv.address, ca=certs / "ca.pem", token=token) as bad:
                err = rpc_error(lambda bad=bad: bad.segment(IMG))
                assert err.code() == grpc.StatusCode.UNAUTHENTICATED
                assert "missing or invalid bearer token" in err.details()
                assert rpc_error(bad.model_info).code() == grpc.StatusCode.UNAUTHENTICATED
                assert bad.health() == "SERVING"  # health checks need no token


def test_tokens_also_guard_reflection() -> None:
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    pipe, _ = slow_pipeline(delay=0)
    with ServerThread(ServerConfig(port=0, tokens=("t0k3n",)), pipe) as srv:
        with grpc.insecure_channel(srv.address) as channel:
            err = rpc_error(lambda: ProtoReflectionDescriptorDatabase(channel).get_services())
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED
        with SamsemClient(srv.address, token="t0k3n") as client:
            assert _ok(client)


def test_the_client_reads_a_token_file_in_the_servers_format(certs: Path, tmp_path: Path) -> None:
    """A token file with comments, blank lines and several tokens (the server's format) works for the
    client too: it sends the first token (issue 26.8; it used to send the whole file: INTERNAL)."""
    from samsem.cli import main
    from samsem.server.security import load_tokens

    tokens = tmp_path / "tokens"
    tokens.write_text("# samsem tokens\n\n  first-token  \nsecond-token\n")
    pipe, _ = slow_pipeline(delay=0)
    cfg = ServerConfig(port=0, tokens=load_tokens(tokens))
    with ServerThread(cfg, pipe) as srv:
        assert main(["client", "info", "--server", srv.address, "--token-file", str(tokens)]) == 0


def test_tls_verification_failures_say_so(certs: Path) -> None:
    from samsem.server.client_cli import rpc_message

    pipe, _ = slow_pipeline(delay=0)
    cfg = ServerConfig(port=0, tls_cert=certs / "server.pem", tls_key=certs / "server.key")
    with ServerThread(cfg, pipe) as srv:
        with SamsemClient(srv.address, ca=certs / "other_ca.pem", timeout=3) as wrong_ca:
            text = rpc_message(rpc_error(wrong_ca.model_info), srv.address)
        assert "TLS verification of its certificate failed" in text and "--ca" in text, text
        assert "(OK)" not in text
        with SamsemClient(srv.address, timeout=3) as plain:
            text = rpc_message(rpc_error(plain.model_info), srv.address)
        assert "TLS" in text and "(OK)" not in text, text


def test_the_server_warns_of_a_certificate_outside_its_validity(certs: Path, caplog, monkeypatch) -> None:
    import datetime as dt

    from samsem.server import security
    from samsem.server.security import certificate_problem, certificate_validity

    not_before, not_after = certificate_validity((certs / "server.pem").read_bytes())  # type: ignore[misc]
    assert dt.timedelta(days=1) < not_after - not_before <= dt.timedelta(days=2, minutes=1)
    assert certificate_problem(certs / "server.pem") is None
    late = certificate_problem(certs / "server.pem", not_after + dt.timedelta(seconds=1))
    early = certificate_problem(certs / "server.pem", not_before - dt.timedelta(seconds=1))
    assert late is not None and "expired on" in late and early is not None and "not valid before" in early
    assert certificate_validity(b"no certificate here") is None

    monkeypatch.setattr(security, "_now", lambda: not_after + dt.timedelta(days=1))
    pipe, _ = slow_pipeline(delay=0)
    cfg = ServerConfig(port=0, tls_cert=certs / "server.pem", tls_key=certs / "server.key")
    with caplog.at_level("WARNING", logger="samsem.server"), ServerThread(cfg, pipe):
        pass
    assert any("expired on" in r.getMessage() for r in caplog.records), caplog.text
