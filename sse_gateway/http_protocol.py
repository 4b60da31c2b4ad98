"""The HTTP/1.1 protocol the gateway serves with: uvicorn's httptools protocol, hardened.

What uvicorn leaves open, closed here:

- request headers are capped (past ``MAX_HEADER_BYTES``: 431, connection
  closed) and must arrive within ``header_timeout`` seconds of the
  connection or of the request's first byte (a socket that sends nothing,
  or a byte a minute, is closed: idle sockets cannot pile up);
- past ``max_open`` open connections a new socket is closed at once, before
  it costs more than its file descriptor for an instant;
- a request the parser rejects gets a JSON 400.

And the stream endpoint owns its connection. uvicorn keeps only the newest
request's state on a connection, so a request pipelined behind an endless
response makes the stream miss its client's disconnect.
So a ``GET``/``HEAD /api/sse`` request is not handed to uvicorn's
request cycle at all: once its headers are parsed, the connection is moved
(``transport.set_protocol``, as uvicorn itself does for WebSocket upgrades)
to a ``StreamConnection`` that serves that one request through the same
ASGI app and then closes. Bytes the client sends after it (pipelined
requests) are ignored; the disconnect comes from the transport itself
(``connection_lost``); an HTTP/1.0 client gets an un-chunked body that ends
when the connection closes.

What this leans on in uvicorn and httptools is listed, and checked, in
``tests/unit/test_uvicorn_assumptions.py``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from connectome_core.contract import STREAM_PATH
from connectome_core.logs import RateLimitedLog
from sse_gateway.framing import Frame

MAX_HEADER_BYTES = 16 * 1024
DIRECT_BODY_EXTENSION = "connectome.direct_body"
STREAM_PATH_BYTES = STREAM_PATH.encode()
# Bytes a client may send after its stream request before it is dropped: pipelined
# requests are ignored, a client that keeps sending is abusive.
MAX_IGNORED_BYTES = 64 * 1024

log = logging.getLogger("sse_gateway.http")
# Lines a hostile client can repeat at will: one per interval, with a count of the rest.
limited_log = RateLimitedLog(log)


@dataclass(frozen=True)
class ConnectionLimits:
    """Per-process connection limits (picklable: uvicorn hands it to each worker)."""

    header_timeout: float = 10.0
    max_open: int | None = None


_DISCONNECT = {"type": "http.disconnect"}


class StreamConnection(asyncio.Protocol):
    """One stream request on a connection of its own, served through the ASGI app.

    Also the ``DirectBody`` of that request (the ASGI scope extension
    ``DIRECT_BODY_EXTENSION``): an event's bytes are written straight to the
    transport (pre-framed as a chunk when the response is chunked), or the
    caller is told that it cannot be done now (paused, gone).

    Memory: one of these lives as long as its stream, and streams are counted
    in tens of thousands, so it has slots, and its two waits (the end of the
    stream, the transport writable again) are bare futures made only when
    someone waits, not ``asyncio.Event`` objects (each carries a deque of
    waiters: about 1.5 KB a stream for the pair).
    """

    __slots__ = (
        "_gone",
        "_writable",
        "app",
        "chunked",
        "complete",
        "connections",
        "disconnected",
        "head",
        "ignored",
        "paused",
        "scope",
        "started",
        "task",
        "transport",
    )

    def __init__(
        self,
        app: Any,
        scope: dict[str, Any],
        transport: asyncio.Transport,
        connections: set[Any],
    ) -> None:
        self.app = app
        self.scope = scope
        self.transport = transport
        self.connections = connections
        self.chunked = scope["http_version"] == "1.1" and scope["method"] != "HEAD"
        self.disconnected = False
        self.started = False
        self.complete = False
        self.paused = False  # by the transport's flow control
        # The response head, held until the first body bytes: one write, not two.
        self.head = b""
        self.ignored = 0
        # Resolved with the disconnect message when the stream ends (client gone or
        # response complete); made by the first receive() that has to wait.
        self._gone: asyncio.Future[dict[str, Any]] | None = None
        self._writable: asyncio.Future[None] | None = None  # while paused and awaited
        self.task: asyncio.Task[None] | None = None
        scope["extensions"] = {DIRECT_BODY_EXTENSION: {"writer": self}}

    def start(self) -> None:
        self.connections.add(self)
        self.task = asyncio.get_running_loop().create_task(self._run())

    def _end(self) -> None:
        """The stream is over: a waiting receive() returns the disconnect."""
        if self._gone is not None and not self._gone.done():
            self._gone.set_result(_DISCONNECT)

    def _resume_sender(self) -> None:
        self.paused = False
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    async def _run(self) -> None:
        try:
            await self.app(self.scope, self.receive, self.send)
        except Exception as exc:
            limited_log.log(logging.ERROR, "handler", "stream handler failed: %r", exc)
        finally:
            if not self.transport.is_closing():
                if self.complete:
                    self.transport.close()
                else:
                    self.transport.abort()

    # -- asyncio.Protocol ----------------------------------------------------
    def data_received(self, data: bytes) -> None:
        self.ignored += len(data)
        if self.ignored > MAX_IGNORED_BYTES:
            self.transport.abort()

    def eof_received(self) -> bool | None:
        return None  # the client has gone: close (as uvicorn does)

    def connection_lost(self, exc: Exception | None) -> None:
        self.disconnected = True
        self.connections.discard(self)
        self._end()
        self._resume_sender()  # a send waiting on flow control returns, and writes nothing

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self._resume_sender()

    def shutdown(self) -> None:
        """uvicorn's shutdown: the gateway's own drain ends streams; one not started ends now."""
        if not self.started:
            self.transport.close()

    # -- DirectBody ------------------------------------------------------------
    def write(self, frame: Frame) -> bool:
        if self.disconnected or self.complete or self.paused or not self.started:
            return False
        if self.transport.is_closing():
            return False
        self._write(frame.chunk if self.chunked else frame.data)
        return True

    def _write(self, data: bytes) -> None:
        if self.head:
            data, self.head = self.head + data, b""
        self.transport.write(data)

    def abort(self) -> None:
        self.transport.abort()

    # -- ASGI ------------------------------------------------------------------
    def receive(self) -> asyncio.Future[dict[str, Any]]:
        # A plain function returning a future (an awaitable, as ASGI asks): the stream
        # handler waits on it for the stream's whole life, without a coroutine frame.
        loop = asyncio.get_running_loop()
        if not self.started and not self.disconnected:
            request = loop.create_future()
            request.set_result({"type": "http.request", "body": b"", "more_body": False})
            return request
        if self._gone is None:
            self._gone = loop.create_future()
            if self.disconnected or self.complete:
                self._gone.set_result(_DISCONNECT)
        return self._gone

    async def send(self, message: dict[str, Any]) -> None:
        if self.paused:
            if self._writable is None:
                self._writable = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._writable)  # shared by every send that waits
        if self.disconnected or self.complete or self.transport.is_closing():
            return
        if message["type"] == "http.response.start":
            self.started = True
            headers = list(message.get("headers", []))
            if any(name.lower() == b"content-length" for name, _ in headers):
                self.chunked = False  # a sized response (an error) is never also chunked
            self.head = self._head(message["status"], headers)  # written with the body
            return
        body = message.get("body", b"")
        more = message.get("more_body", False)
        if self.scope["method"] != "HEAD":
            if self.chunked:
                end = b"" if more else b"0\r\n\r\n"
                body = b"%x\r\n%s\r\n%s" % (len(body), body, end) if body else end
        else:
            body = b""
        if body or self.head:
            self._write(body)
        if not more:
            self.complete = True
            self._end()  # the handler's receive() returns: the response is over
            self.transport.close()

    def _head(self, status: int, headers: list[tuple[bytes, bytes]]) -> bytes:
        lines = [b"HTTP/1.1 %d %s" % (status, _reason(status))]
        for name, value in headers:
            if b"\r" in name + value or b"\n" in name + value or b":" in name:
                raise ValueError(f"invalid response header {name!r}")  # no header injection
            lines.append(name + b": " + value)
        if self.chunked:
            lines.append(b"transfer-encoding: chunked")
        lines.append(b"connection: close")  # the connection ends with the stream
        return b"\r\n".join(lines) + b"\r\n\r\n"


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
    """Install ``ClientLineLimiter`` on uvicorn's error logger, once per process.

    Checked on every connection (a logging reconfiguration may have dropped it),
    so the check is one list lookup.
    """
    if _CLIENT_LINE_LIMITER not in _UVICORN_ERROR_LOG.filters:
        _UVICORN_ERROR_LOG.addFilter(_CLIENT_LINE_LIMITER)


class GatewayHttpProtocol(HttpToolsProtocol):
    """uvicorn's protocol with the limits above; stream requests move to a ``StreamConnection``."""

    limits = ConnectionLimits()

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
        if limits is not None:
            self.limits = limits
        self.gateway_app_state = app_state
        self.gateway_config = config
        self.header_bytes = 0
        self.headers_done = False
        self.header_timer: asyncio.TimerHandle | None = None
        self.request_url = b""
        self.request_headers: list[tuple[bytes, bytes]] = []
        # Set once a stream request is parsed: everything after it is ignored.
        self.stream_scope: dict[str, Any] | None = None
        self.moved = False

    # -- connection ---------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        cap = self.limits.max_open
        if cap is not None and len(self.connections) > cap:
            log.debug("over %d open connections: closing a new one", cap)
            transport.abort()
            return
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
        if self.stream_scope is not None:
            return  # after a stream request: ignored until the connection moves
        if not self.headers_done:
            self.header_bytes += len(data)
            if self.header_bytes > MAX_HEADER_BYTES:
                limited_log.warning(
                    "431", "request headers over %d bytes: refused", MAX_HEADER_BYTES
                )
                self._reject(431, "Request Header Fields Too Large", "request headers too large")
                return
        super().data_received(data)
        if self.stream_scope is not None and not self.moved and self._idle():
            self._move_to_stream()

    # -- parser callbacks (httptools calls these by name) -------------------
    def on_message_begin(self) -> None:
        if self.stream_scope is not None:
            return
        self.headers_done = False
        self.header_bytes = 0
        self.request_url = b""
        self.request_headers = []
        self._arm_header_timer()
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        if self.stream_scope is not None:
            return
        self.request_url += url
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.stream_scope is not None:
            return
        self.request_headers.append((name.lower(), value))
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self.stream_scope is not None:
            return
        self.headers_done = True
        self._cancel_header_timer()
        scope = self._stream_scope()
        if scope is None:
            super().on_headers_complete()
            return
        self.stream_scope = scope

    def on_body(self, body: bytes) -> None:
        if self.stream_scope is None:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self.stream_scope is None:
            super().on_message_complete()

    def on_response_complete(self) -> None:
        # A stream request that arrived behind another one moves once that one is answered.
        if self.stream_scope is not None and not self.moved:
            self._move_to_stream()
            return
        super().on_response_complete()

    def send_400_response(self, msg: str) -> None:
        if self.stream_scope is not None:
            return  # garbage after a stream request: ignored like any other bytes
        self._reject(400, "Bad Request", msg)

    # -- the stream's own connection ------------------------------------------
    def _stream_scope(self) -> dict[str, Any] | None:
        method = self.parser.get_method()
        if method not in (b"GET", b"HEAD") or self.parser.should_upgrade():
            return None
        url = httptools.parse_url(self.request_url)
        if url.path != STREAM_PATH_BYTES:
            return None
        transport = self.transport
        root_path = self.gateway_config.root_path
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": self.parser.get_http_version(),
            "server": _address(transport.get_extra_info("sockname")),
            "client": _address(transport.get_extra_info("peername")),
            "scheme": "https" if transport.get_extra_info("sslcontext") else "http",
            "root_path": root_path,
            "method": method.decode("ascii"),
            "path": root_path + unquote(url.path.decode("ascii")),
            "raw_path": root_path.encode("ascii") + url.path,
            "query_string": url.query or b"",
            "headers": self.request_headers,
            "state": self.gateway_app_state.copy(),
        }

    def _idle(self) -> bool:
        cycle = self.cycle
        return cycle is None or cycle.response_complete

    def _move_to_stream(self) -> None:
        scope = self.stream_scope
        assert scope is not None
        self.moved = True
        self._cancel_header_timer()
        transport = self.transport
        if transport.is_closing():
            return
        self.connections.discard(self)
        connection = StreamConnection(
            self.gateway_config.loaded_app, scope, transport, self.connections
        )
        transport.set_protocol(connection)
        transport.resume_reading()  # uvicorn may have paused it for a pipelined request
        connection.start()

    def _reject(self, status: int, reason: str, message: str) -> None:
        body = json.dumps({"error": message, "status": status}).encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, reason.encode(), len(body), body)
        )
        self.transport.close()


@functools.cache  # a handful of statuses, asked for on every response head
def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def _address(info: Any) -> tuple[str, int] | None:
    if isinstance(info, tuple) and len(info) >= 2:
        return (str(info[0]), int(info[1]))
    return None
