"""A stream request's connection once parsed: served by the gateway directly, not via ASGI.

The protocol (``http_protocol``) moves a ``GET``/``HEAD /api/sse`` connection here
(``transport.set_protocol``) with the request's parts. A ``StreamConnection`` asks the
``StreamService`` to open the stream (one short task: admission may await Redis, the
opening awaits the shared snapshot read), answers from pre-built response heads, is
the writer's ``DirectBody`` and ``send``, and ends the stream when the transport goes
(``connection_lost``): no task waits for the stream's whole life. Bytes the client
sends after its request (pipelined requests) are ignored, up to a bound.

Memory: one of these lives as long as its stream, so it has slots, and its two waits
are bare futures made only when someone waits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Mapping
from typing import Any, Protocol

import httptools
from uvicorn.config import Config

from connectome_core.contract import STREAM_PATH
from sse_gateway.forwarded import client_of
from sse_gateway.framing import Frame
from sse_gateway.http_heads import error_response, stream_head
from sse_gateway.http_limits import MAX_IGNORED_BYTES, limited_log
from sse_gateway.request import parse_stream_request

# At most this much is held back to go out with the head: a small opening costs one write.
CORKED_BYTES = 16 * 1024
STREAM_PATH_BYTES = STREAM_PATH.encode()
# The lifespan state key under which the app hands its stream endpoint to the server.
STREAM_SERVICE_STATE = "connectome.stream_service"


class StreamService(Protocol):
    """What a stream connection asks of the gateway (``stream_route.StreamEndpoint``)."""

    def cors_headers(self, origin: str | None) -> list[tuple[bytes, bytes]]: ...

    async def open(self, request: Any, reply: Any) -> Any:
        """Admit and open a stream; its handle, or None when it got none (answered)."""

    def open_now(self, request: Any, reply: Any) -> Any:
        """``open`` with nothing awaited: the handle, None, or a coroutine to finish it."""

    def end(self, stream: Any) -> None:
        """The stream is over: clean up, count, log its close line."""


class StreamConnection(asyncio.Protocol):
    """One stream request on a connection of its own; also its ``Reply`` and ``DirectBody``."""

    __slots__ = (
        "_writable",
        "chunked",
        "complete",
        "connections",
        "corked",
        "disconnected",
        "extra",
        "head_only",
        "ignored",
        "opening",
        "paused",
        "service",
        "started",
        "stream",
        "transport",
    )

    def __init__(
        self,
        transport: asyncio.Transport,
        connections: set[Any],
        service: StreamService,
        http_version: str,
        head_only: bool,
    ) -> None:
        self.transport = transport
        self.connections = connections
        self.service = service
        self.head_only = head_only
        self.chunked = http_version == "1.1" and not head_only
        self.extra: list[tuple[bytes, bytes]] = []  # CORS headers, when on
        self.disconnected = False
        self.started = False
        self.complete = False
        self.paused = False  # by the transport's flow control
        self.ignored = 0
        self._writable: asyncio.Future[None] | None = None  # while paused and awaited
        self.opening: asyncio.Task[None] | None = None
        self.stream: Any = None  # the service's handle once opened
        self.corked: list[bytes] | None = None  # written while corked, to go out as one

    def serve(self, request: Any, origin: str | None) -> None:
        """Serve ``request``: opened at once when nothing needs Redis; else the opening
        runs as a task, which ends once the stream is open."""
        self.connections.add(self)
        self.extra = self.service.cors_headers(origin)
        try:
            opened = self.service.open_now(request, self)
        except Exception as exc:
            self._failed(exc)
            return
        if isinstance(opened, Coroutine):
            self.opening = asyncio.get_running_loop().create_task(self._open_later(opened))
        elif opened is not None:
            self._opened(opened)

    async def _open_later(self, opening: Coroutine[Any, Any, Any]) -> None:
        try:
            stream = await opening
        except Exception as exc:
            self._failed(exc)
            return
        finally:
            self.opening = None
        if stream is not None:
            self._opened(stream)

    def _failed(self, exc: Exception) -> None:
        """The service ended the stream on an error; the connection goes too."""
        limited_log.log(logging.ERROR, "handler", "stream handler failed: %r", exc)
        self.transport.abort()

    def _opened(self, stream: Any) -> None:
        if self.disconnected:  # gone while it opened: connection_lost left it to us
            self.service.end(stream)
        else:
            self.stream = stream

    def _resume_sender(self) -> None:
        self.paused = False
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    # -- asyncio.Protocol ----------------------------------------------------
    def data_received(self, data: bytes) -> None:
        self.ignored += len(data)
        if self.ignored > MAX_IGNORED_BYTES:
            self.transport.abort()

    def eof_received(self) -> bool | None:
        return None  # the client has gone: close

    def connection_lost(self, exc: Exception | None) -> None:
        self.disconnected = True
        self.connections.discard(self)
        self._resume_sender()  # a send waiting on flow control returns, and writes nothing
        stream, self.stream = self.stream, None
        if stream is not None:
            self.service.end(stream)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self._resume_sender()

    def shutdown(self) -> None:
        """uvicorn's shutdown: the gateway's own drain ends streams; one not started ends now."""
        if not self.started:
            self.transport.close()

    def _out(self, data: bytes) -> None:
        corked = self.corked
        if corked is not None:
            if len(data) + sum(map(len, corked)) <= CORKED_BYTES:
                corked.append(data)
                return
            self.uncork()  # a large opening goes as the writer paces it, never joined whole
        self.transport.write(data)

    def _close(self) -> None:
        self.uncork()
        self.transport.close()

    # -- Reply: how the service answers ----------------------------------------
    @property
    def direct(self) -> StreamConnection:
        return self

    def cork(self) -> None:
        """Writes wait until ``uncork``: a stream's head and opening go out as one."""
        if self.corked is None:
            self.corked = []

    def uncork(self) -> None:
        corked, self.corked = self.corked, None
        if corked and not self.disconnected:
            self.transport.write(b"".join(corked))

    async def refuse(self, status: int, message: str, headers: Mapping[str, str]) -> None:
        self.answer_error(status, message, headers)

    def answer_error(self, status: int, message: str, headers: Mapping[str, str]) -> None:
        """A JSON error answer, and the connection closes."""
        if self.disconnected:
            return
        self.started = self.complete = True
        self._out(error_response(status, message, headers, self.extra, self.head_only))
        self._close()

    async def start(self, first: bytes, more: bool) -> None:
        self.start_now(first, more)

    def start_now(self, first: bytes, more: bool) -> None:
        """The stream's head and ``first`` body bytes; ``more``: the stream goes on (a HEAD
        request gets the head alone, and the connection closes)."""
        if self.disconnected:
            return
        self.started = True
        head = stream_head(self.chunked, self.extra)
        if first and not self.head_only:
            head += b"%x\r\n%s\r\n" % (len(first), first) if self.chunked else first
        self._out(head)
        if not more or self.head_only:
            self.complete = True
            self._close()

    # -- DirectBody ------------------------------------------------------------
    def write(self, frame: Frame) -> bool:
        if self.disconnected or self.complete or self.paused or not self.started:
            return False
        if self.transport.is_closing():
            return False
        self._out(frame.chunk if self.chunked else frame.data)
        return True

    def abort(self) -> None:
        self.transport.abort()

    async def send(self, message: dict[str, Any]) -> None:
        """The writer's body sends: wait while the transport is paused, then write."""
        if self.paused:
            if self._writable is None:
                self._writable = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._writable)  # shared by every send that waits
        if self.disconnected or self.complete or self.transport.is_closing():
            return
        body = message.get("body", b"")
        more = message.get("more_body", False)
        if self.chunked:
            end = b"" if more else b"0\r\n\r\n"
            body = b"%x\r\n%s\r\n%s" % (len(body), body, end) if body else end
        if body:
            self._out(body)
        if not more:
            self.complete = True
            self._close()


def move_to_stream(
    transport: asyncio.Transport,
    connections: set[Any],
    service: StreamService,
    config: Config,
    method: bytes,
    url: bytes,
    headers: list[tuple[bytes, bytes]],
    http_version: str,
) -> None:
    """Serve a parsed stream request on a ``StreamConnection`` of its own."""
    if transport.is_closing():
        return
    connection = StreamConnection(transport, connections, service, http_version, method == b"HEAD")
    transport.set_protocol(connection)
    transport.resume_reading()  # uvicorn may have paused it for a pipelined request
    origin = None
    for name, value in headers:
        if name == b"origin":
            origin = value.decode("latin-1")
    try:
        request = parse_stream_request(
            method.decode("ascii"),
            httptools.parse_url(url).query or b"",
            headers,
            client_of(transport, headers, config),
        )
    except ValueError as exc:
        connection.extra = service.cors_headers(origin)
        connection.answer_error(400, str(exc), {})
        return
    connection.serve(request, origin)
