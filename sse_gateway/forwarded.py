"""The client a stream request comes from, as uvicorn would put it in an ASGI scope.

The peer's address, or, when the peer is a trusted proxy (``FORWARDED_ALLOW_IPS``) and
sent ``X-Forwarded-For``, the client it names: decided by uvicorn's own
``ProxyHeadersMiddleware``, run on a minimal scope only when such a header is present.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Sequence
from typing import Any, cast

from uvicorn.config import Config
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware


async def _nothing(scope: Any, receive: Any, send: Any) -> None:
    return None


@functools.cache  # one per process: the trusted hosts parsed once
def _proxy_headers(trusted: str | tuple[str, ...]) -> ProxyHeadersMiddleware:
    hosts: str | list[str] = trusted if isinstance(trusted, str) else list(trusted)
    return ProxyHeadersMiddleware(_nothing, trusted_hosts=hosts)


def client_of(
    transport: asyncio.BaseTransport, headers: Sequence[tuple[bytes, bytes]], config: Config
) -> tuple[str, int] | None:
    """(host, port) of the request's client; None when the transport cannot say."""
    peer = transport.get_extra_info("peername")
    client = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) and len(peer) >= 2 else None
    if not config.proxy_headers or client is None:
        return client
    if not any(name == b"x-forwarded-for" for name, _ in headers):
        return client
    trusted = config.forwarded_allow_ips
    middleware = _proxy_headers(trusted if isinstance(trusted, str) else tuple(trusted))
    scope: dict[str, Any] = {"type": "http", "client": client, "headers": headers, "scheme": "http"}
    step = cast(Any, middleware)(scope, _nothing, _nothing)
    with contextlib.suppress(StopIteration):
        step.send(None)  # runs to its end at once: the app it calls does nothing
    result = scope.get("client")
    return (str(result[0]), int(result[1])) if result else client
