"""TLS / mutual TLS credentials, the certificate's validity period, bearer tokens (constant-time check)
and the call guard interceptor."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import os
import re
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc

from samsem.errors import ConfigError, InputError

HEALTH_PREFIX = "/grpc.health.v1.Health/"
MALFORMED = "malformed request message (not a valid protobuf of this method's request type)"
Reject = Callable[[str, grpc.StatusCode, str, str], None]  # (method, code, details, peer)


def load_tokens(token_file: str | Path | None = None, token_env: str | None = None) -> tuple[str, ...]:
    """Accepted bearer tokens: one per line of ``token_file`` (blank and # lines ignored) and/or the
    comma-separated value of the environment variable ``token_env``. Naming a source that yields no
    token is a ConfigError (an empty list would silently disable authentication)."""
    tokens: list[str] = []
    if token_file is not None:
        try:
            lines = Path(token_file).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(f"cannot read token file {token_file}: {exc.strerror or exc}") from None
        found = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
        if not found:
            raise ConfigError(f"token file {token_file} contains no token")
        tokens += found
    if token_env is not None:
        found = [t.strip() for t in os.environ.get(token_env, "").split(",") if t.strip()]
        if not found:
            raise ConfigError(f"environment variable {token_env} is unset or empty")
        tokens += found
    return tuple(tokens)


def client_token(token_file: str | Path) -> str:
    """The bearer token a client sends from ``token_file``, read as the server reads its token file
    (:func:`load_tokens`): the first token of the file (ConfigError if it holds none)."""
    return load_tokens(token_file)[0]


def token_matches(given: str, tokens: Sequence[str]) -> bool:
    """True when ``given`` equals one of ``tokens``. Every token is compared, in constant time, as
    SHA-256 digests (equal lengths, so not even the token length leaks)."""
    g = hashlib.sha256(given.encode()).digest()
    ok = False
    for t in tokens:
        ok |= hmac.compare_digest(g, hashlib.sha256(t.encode()).digest())
    return ok


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.S)


def _der(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start, end) of the DER element at ``pos`` (its content is data[start:end])."""
    tag, n = data[pos], data[pos + 1]
    pos += 2
    if n & 0x80:
        k = n & 0x7F
        n = int.from_bytes(data[pos : pos + k], "big")
        pos += k
    return tag, pos, pos + n


def certificate_validity(pem: bytes) -> tuple[dt.datetime, dt.datetime] | None:
    """(not before, not after), in UTC, of the first certificate of a PEM chain; None if it is not
    a readable X.509 certificate (gRPC then says why when it loads it)."""
    found = _PEM_CERT.search(pem)
    if found is None:
        return None
    try:
        der = base64.b64decode(b"".join(found.group(1).split()), validate=True)
        _, start, _ = _der(der, 0)  # Certificate
        _, pos, _ = _der(der, start)  # tbsCertificate
        if der[pos] == 0xA0:  # [0] version
            pos = _der(der, pos)[2]
        for _ in range(3):  # serialNumber, signature, issuer
            pos = _der(der, pos)[2]
        _, pos, _ = _der(der, pos)  # validity
        times = []
        for _ in range(2):
            tag, a, b = _der(der, pos)
            text = der[a:b].decode("ascii")
            fmt = {0x17: "%y%m%d%H%M%SZ", 0x18: "%Y%m%d%H%M%SZ"}[tag]
            times.append(dt.datetime.strptime(text, fmt).replace(tzinfo=dt.UTC))
            pos = b
    except (binascii.Error, IndexError, KeyError, ValueError, UnicodeDecodeError):
        return None
    return times[0], times[1]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def certificate_problem(cert: str | Path, now: dt.datetime | None = None) -> str | None:
    """Why the server certificate ``cert`` is not valid ``now`` (expired, not yet valid), else None.
    Clients refuse such a certificate, so the server warns at start."""
    validity = certificate_validity(_read(cert, "TLS certificate"))
    if validity is None:
        return None
    now = now or _now()
    not_before, not_after = validity
    if now > not_after:
        why = f"expired on {not_after:%Y-%m-%d %H:%M} UTC"
    elif now < not_before:
        why = f"is not valid before {not_before:%Y-%m-%d %H:%M} UTC"
    else:
        return None
    return f"TLS certificate {cert} {why}; clients will refuse it"


def server_credentials(
    cert: str | Path, key: str | Path, client_ca: str | Path | None = None
) -> grpc.ServerCredentials:
    """TLS with the server's certificate chain and key; with ``client_ca``, clients must present a
    certificate signed by it (mutual TLS)."""
    return grpc.ssl_server_credentials(
        [(_read(key, "TLS key"), _read(cert, "TLS certificate"))],
        root_certificates=None if client_ca is None else _read(client_ca, "client CA"),
        require_client_auth=client_ca is not None,
    )


def channel_credentials(
    ca: str | Path | None = None, cert: str | Path | None = None, key: str | Path | None = None
) -> grpc.ChannelCredentials:
    """Client TLS: trust ``ca`` (system roots if None); ``cert``+``key`` present a client certificate."""
    if (cert is None) != (key is None):
        raise ConfigError("a client certificate needs both --cert and --key")
    return grpc.ssl_channel_credentials(
        root_certificates=None if ca is None else _read(ca, "CA certificate"),
        private_key=None if key is None else _read(key, "client key"),
        certificate_chain=None if cert is None else _read(cert, "client certificate"),
    )


_KINDS = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def _behavior(handler: grpc.RpcMethodHandler):
    return handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream


def _rejecting(
    handler: grpc.RpcMethodHandler,
    code: grpc.StatusCode,
    details: str,
    on_reject: Callable[[str], None] | None = None,
) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that fails every call with ``code`` (after telling
    ``on_reject`` the caller's peer)."""

    async def reject(request, context):
        if on_reject is not None:
            on_reject(context.peer() or "")
        await context.abort(code, details)

    make = _KINDS[(handler.request_streaming, handler.response_streaming)]
    return make(
        reject,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class Malformed:
    """Stands for a request message that did not parse (see :func:`_lenient`)."""

    def __init__(self, error: str) -> None:
        self.error = error


def _lenient(deserializer: Callable[[bytes], object] | None) -> Callable[[bytes], object]:
    """A deserializer that returns :class:`Malformed` instead of raising (gRPC would answer INTERNAL)."""

    def parse(data: bytes) -> object:
        if deserializer is None:
            return data
        try:
            return deserializer(data)
        except Exception as exc:  # protobuf's DecodeError and friends
            return Malformed(str(exc))

    return parse


async def _checked(requests: AsyncIterator) -> AsyncIterator:
    """A request stream that raises InputError (INVALID_ARGUMENT in the servicer) at a malformed message."""
    async for request in requests:
        if isinstance(request, Malformed):
            raise InputError(None, MALFORMED)
        yield request


def _parsing(handler: grpc.RpcMethodHandler, rejected: Callable[[str], None]) -> grpc.RpcMethodHandler:
    """``handler`` with requests that fail to parse answered INVALID_ARGUMENT instead of INTERNAL.

    Unary requests are refused before the servicer runs (``rejected(peer)`` records it); streamed
    ones raise InputError where the servicer reads them, which it answers INVALID_ARGUMENT."""
    behavior = _behavior(handler)
    streaming_in, streaming_out = handler.request_streaming, handler.response_streaming

    async def refuse(context) -> None:
        rejected(context.peer() or "")
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, MALFORMED)

    async def stream_stream(requests, context):
        async for reply in behavior(_checked(requests), context):
            yield reply

    async def stream_unary(requests, context):
        return await behavior(_checked(requests), context)

    async def unary_stream(request, context):
        if isinstance(request, Malformed):
            await refuse(context)
        async for reply in behavior(request, context):
            yield reply

    async def unary_unary(request, context):
        if isinstance(request, Malformed):
            await refuse(context)
        return await behavior(request, context)

    variants: dict[tuple[bool, bool], Callable[..., Any]] = {
        (True, True): stream_stream,
        (True, False): stream_unary,
        (False, True): unary_stream,
        (False, False): unary_unary,
    }
    wrapped = variants[(streaming_in, streaming_out)]
    return _KINDS[(streaming_in, streaming_out)](
        wrapped,
        request_deserializer=_lenient(handler.request_deserializer),
        response_serializer=handler.response_serializer,
    )


class CallGuard(grpc.aio.ServerInterceptor):
    """Refuses calls before they reach a servicer.

    While ``draining()`` is true, every call except health checks gets UNAVAILABLE. With ``tokens``,
    a call without ``authorization: Bearer <token>`` naming one of them gets UNAUTHENTICATED; health
    checks are exempt so that load balancers and orchestrators can probe without a secret. Calls of
    the methods under ``parsed_prefix`` whose request does not parse get INVALID_ARGUMENT. Every
    refusal is reported to ``rejected(method, code, details, peer)`` (counted and logged by the
    server).
    """

    def __init__(
        self,
        tokens: Sequence[str],
        draining: Callable[[], bool],
        rejected: Reject | None = None,
        parsed_prefix: str = "",
    ) -> None:
        self.tokens = tuple(tokens)
        self.draining = draining
        self.rejected = rejected
        self.parsed_prefix = parsed_prefix

    def _refuse(self, handler, method: str, code: grpc.StatusCode, details: str) -> grpc.RpcMethodHandler:
        rejected = self.rejected

        def record(peer: str) -> None:
            if rejected is not None:
                rejected(method, code, details, peer)

        return _rejecting(handler, code, details, record)

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(HEALTH_PREFIX):
            return handler
        if self.draining():
            return self._refuse(
                handler,
                method,
                grpc.StatusCode.UNAVAILABLE,
                "server is shutting down; retry on another instance",
            )
        if self.tokens:
            auth = dict(handler_call_details.invocation_metadata or ()).get("authorization", "")
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not token_matches(token.strip(), self.tokens):
                return self._refuse(
                    handler,
                    method,
                    grpc.StatusCode.UNAUTHENTICATED,
                    "missing or invalid bearer token (metadata 'authorization')",
                )
        if self.parsed_prefix and method.startswith(self.parsed_prefix):
            rejected = self.rejected

            def malformed(peer: str) -> None:
                if rejected is not None:
                    rejected(method, grpc.StatusCode.INVALID_ARGUMENT, MALFORMED, peer)

            return _parsing(handler, malformed)
        return handler
