"""uvicorn's httptools protocol, for every request but a connection's first stream request.

``GatewayHttpProtocol`` hands a connection here once its first request is not a
stream. Its later requests (keep-alive) keep the same limits: headers capped (431)
and due within ``header_timeout``, a JSON 400 for what the parser rejects. A stream
request behind them moves, once the requests before it are answered, to a
``StreamConnection`` (uvicorn keeps only the newest request's state on a connection:
a request pipelined behind an endless response would make the stream miss its
client's disconnect). uvicorn's client-triggered log lines are rate-limited.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from sse_gateway.http_heads import reject
from sse_gateway.http_limits import MAX_HEADER_BYTES, ConnectionLimits, limited_log
from sse_gateway.stream_connection import (
    STREAM_PATH_BYTES,
    STREAM_SERVICE_STATE,
    StreamService,
    move_to_stream,
)

# uvicorn's own lines that any client can trigger at will, once per connection.
UVICORN_CLIENT_LINES = frozenset(
    {
        "Invalid HTTP request received.",
        "Exceeded concurrency limit.",
        "Unsupported upgrade request.",
    }
)


class ClientLineLimiter(logging.Filter):
    """Sends uvicorn's client-triggered lines through ``RateLimitedLog``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg not in UVICORN_CLIENT_LINES:
            return True
        limited_log.log(record.levelno, str(record.msg), "uvicorn: %s", record.msg)
        return False


_UVICORN_ERROR_LOG = logging.getLogger("uvicorn.error")
_CLIENT_LINE_LIMITER = ClientLineLimiter()


def limit_uvicorn_client_lines() -> None:
    """Install ``ClientLineLimiter`` on uvicorn's error logger, once per process."""
    if _CLIENT_LINE_LIMITER not in _UVICORN_ERROR_LOG.filters:
        _UVICORN_ERROR_LOG.addFilter(_CLIENT_LINE_LIMITER)


class HardenedHttpProtocol(HttpToolsProtocol):
    """uvicorn's protocol with the gateway's limits; stream requests move out."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        limits: ConnectionLimits | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limit_uvicorn_client_lines()
        self.limits = limits or ConnectionLimits()
        self.gateway_config = config
        self.service: StreamService | None = app_state.get(STREAM_SERVICE_STATE)
        self.header_bytes = 0
        self.headers_done = False
        self.header_timer: asyncio.TimerHandle | None = None
        self.request_url = b""
        self.request_headers: list[tuple[bytes, bytes]] = []
        # Set once a stream request is parsed: (method, http version); after it, all is ignored.
        self.stream_request: tuple[bytes, str] | None = None
        self.moved = False

    # -- connection ---------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        if self.header_timer is None:
            self.header_timer = asyncio.get_running_loop().call_later(
                self.limits.header_timeout, self._header_timeout
            )

    def _cancel_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def _header_timeout(self) -> None:
        self.header_timer = None
        if not self.headers_done and not self.transport.is_closing():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.stream_request is not None:
            return  # after a stream request: ignored until the connection moves
        if not self.headers_done:
            self.header_bytes += len(data)
            if self.header_bytes > MAX_HEADER_BYTES:
                limited_log.warning(
                    "431", "request headers over %d bytes: refused", MAX_HEADER_BYTES
                )
                message = "request headers too large"
                reject(self.transport, 431, "Request Header Fields Too Large", message)
                return
        super().data_received(data)
        if self.stream_request is not None and not self.moved and self._idle():
            self._move_to_stream()

    # -- parser callbacks (httptools calls these by name) -------------------
    def on_message_begin(self) -> None:
        if self.stream_request is not None:
            return
        self.headers_done = False
        self.header_bytes = 0
        self.request_url = b""
        self.request_headers = []
        self._arm_header_timer()
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        if self.stream_request is not None:
            return
        self.request_url += url
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.stream_request is not None:
            return
        self.request_headers.append((name.lower(), value))
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self.stream_request is not None:
            return
        self.headers_done = True
        self._cancel_header_timer()
        method = self.parser.get_method()
        if (
            self.service is None
            or method not in (b"GET", b"HEAD")
            or self.parser.should_upgrade()
            or httptools.parse_url(self.request_url).path != STREAM_PATH_BYTES
        ):
            super().on_headers_complete()
            return
        self.stream_request = (method, self.parser.get_http_version())

    def on_body(self, body: bytes) -> None:
        if self.stream_request is None:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self.stream_request is None:
            super().on_message_complete()

    def on_response_complete(self) -> None:
        # A stream request that arrived behind another one moves once that one is answered.
        if self.stream_request is not None and not self.moved:
            self._move_to_stream()
            return
        super().on_response_complete()

    def send_400_response(self, msg: str) -> None:
        if self.stream_request is not None:
            return  # garbage after a stream request: ignored like any other bytes
        reject(self.transport, 400, "Bad Request", msg)

    # -- the stream's own connection ------------------------------------------
    def _idle(self) -> bool:
        cycle = self.cycle
        return cycle is None or cycle.response_complete

    def _move_to_stream(self) -> None:
        assert self.stream_request is not None and self.service is not None
        self.moved = True
        self._cancel_header_timer()
        self.connections.discard(self)
        method, version = self.stream_request
        move_to_stream(
            self.transport, self.connections, self.service, self.gateway_config, method,
            self.request_url, self.request_headers, version,
        )  # fmt: skip
