"""The first protocol of every connection: parses the request head, then hands it on.

uvicorn makes one of these per connection (``http=``). It enforces the limits uvicorn
leaves open: past ``max_open`` open connections a new socket is closed at once;
request headers are capped (past ``MAX_HEADER_BYTES``: 431) and must arrive within
``header_timeout`` seconds; a request the parser rejects gets a JSON 400.

Once the head is parsed, a ``GET``/``HEAD /api/sse`` request moves (``set_protocol``)
to a ``StreamConnection``, served by the gateway directly: no uvicorn request cycle,
no ASGI scope, no task for the stream's life. Any other request moves, with the bytes
received so far, to ``HardenedHttpProtocol``: uvicorn's own protocol, with the same
limits, serving Starlette. What this leans on in uvicorn and httptools is listed,
and checked, in ``tests/unit/test_uvicorn_assumptions.py``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.server import ServerState

from sse_gateway.http_heads import reject
from sse_gateway.http_limits import (
    MAX_HEADER_BYTES,
    ConnectionLimits,
    HeaderDeadlines,
    header_deadlines,
    limited_log,
)
from sse_gateway.http_uvicorn import HardenedHttpProtocol
from sse_gateway.stream_connection import (
    STREAM_PATH_BYTES,
    STREAM_SERVICE_STATE,
    StreamService,
    move_to_stream,
)

INVALID_REQUEST = "Invalid HTTP request received."

log = logging.getLogger("sse_gateway.http")


class GatewayHttpProtocol(asyncio.Protocol):
    """A connection until its first request head is parsed."""

    limits = ConnectionLimits()

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        limits: ConnectionLimits | None = None,
    ) -> None:
        self.config = config
        self.server_state = server_state
        self.app_state = app_state
        self.connections: set[Any] = server_state.connections
        if limits is not None:
            self.limits = limits
        self.transport: asyncio.Transport | None = None
        # The parser holds this protocol's callbacks: a cycle, cut once the head is handed
        # on or the connection goes, so that refcounting frees both at once. Left to the
        # garbage collector, a storm's thousands of them made its full collections slow.
        self.parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self.received = b""  # the head so far: handed on with the connection
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.deadlines: HeaderDeadlines | None = None  # while the head is awaited

    # -- connection ---------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        self.connections.add(self)
        cap = self.limits.max_open
        if cap is not None and len(self.connections) > cap:
            log.debug("over %d open connections: closing a new one", cap)
            transport.abort()
            return
        self.deadlines = header_deadlines(self.limits.header_timeout)
        self.deadlines.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self._head_arrived()
        self.parser = None

    def shutdown(self) -> None:
        """uvicorn's shutdown: no request is under way here."""
        if self.transport is not None:
            self.transport.close()

    def _head_arrived(self) -> None:
        if self.deadlines is not None:
            self.deadlines.discard(self)
            self.deadlines = None

    def header_timeout(self) -> None:
        self.deadlines = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        transport, parser = self.transport, self.parser
        assert transport is not None and parser is not None
        self.received += data
        if len(self.received) > MAX_HEADER_BYTES:
            limited_log.warning("431", "request headers over %d bytes: refused", MAX_HEADER_BYTES)
            reject(transport, 431, "Request Header Fields Too Large", "request headers too large")
            return
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # an upgrade request: uvicorn answers it
        except httptools.HttpParserError:
            if not self.headers_done:
                limited_log.warning(INVALID_REQUEST, "%s (400)", INVALID_REQUEST)
                reject(transport, 400, "Bad Request", INVALID_REQUEST)
                return
        if self.headers_done:
            self._hand_on(transport, parser)

    # -- parser callbacks (httptools calls these by name) -------------------
    def on_url(self, url: bytes) -> None:
        if not self.headers_done:
            self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.headers_done:
            self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.headers_done = True

    # -- where the connection goes next --------------------------------------
    def _hand_on(self, transport: asyncio.Transport, parser: httptools.HttpRequestParser) -> None:
        self._head_arrived()
        self.connections.discard(self)
        self.parser = None
        service: StreamService | None = self.app_state.get(STREAM_SERVICE_STATE)
        method = parser.get_method()
        if (
            service is not None
            and method in (b"GET", b"HEAD")
            and not parser.should_upgrade()
            and httptools.parse_url(self.url).path == STREAM_PATH_BYTES
        ):
            move_to_stream(
                transport, self.connections, service, self.config, method, self.url, self.headers,
                parser.get_http_version(),
            )  # fmt: skip
            return
        protocol = HardenedHttpProtocol(
            self.config, self.server_state, self.app_state, limits=self.limits
        )
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        protocol.data_received(self.received)
