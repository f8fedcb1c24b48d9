"""TLS / mutual TLS credentials, bearer tokens (constant-time check) and the call guard interceptor."""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc

from samsem.errors import ConfigError

HEALTH_PREFIX = "/grpc.health.v1.Health/"


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


def _rejecting(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, details: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that fails every call with ``code``."""

    async def reject(request, context):
        await context.abort(code, details)

    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    make = kinds[(handler.request_streaming, handler.response_streaming)]
    return make(
        reject,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class CallGuard(grpc.aio.ServerInterceptor):
    """Refuses calls before they reach a servicer.

    While ``draining()`` is true, every call except health checks gets UNAVAILABLE. With ``tokens``,
    a call without ``authorization: Bearer <token>`` naming one of them gets UNAUTHENTICATED; health
    checks are exempt so that load balancers and orchestrators can probe without a secret.
    """

    def __init__(self, tokens: Sequence[str], draining: Callable[[], bool]) -> None:
        self.tokens = tuple(tokens)
        self.draining = draining

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(HEALTH_PREFIX):
            return handler
        if self.draining():
            return _rejecting(
                handler, grpc.StatusCode.UNAVAILABLE, "server is shutting down; retry on another instance"
            )
        if self.tokens:
            auth = dict(handler_call_details.invocation_metadata or ()).get("authorization", "")
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not token_matches(token.strip(), self.tokens):
                return _rejecting(
                    handler,
                    grpc.StatusCode.UNAUTHENTICATED,
                    "missing or invalid bearer token (metadata 'authorization')",
                )
        return handler
