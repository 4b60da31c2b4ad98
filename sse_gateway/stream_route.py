"""``GET /api/sse``: a request read once, admitted, opened, then live until it ends.

``StreamEndpoint.open`` admits and opens a stream through a ``Reply`` (how its answer is
written) and returns it; ``end`` cleans it up. The server's stream connections
(``stream_connection``) call them directly; ``__call__`` is the same as a plain ASGI
callable (in-process use, other servers), whose coroutine waits on ``receive`` until
the client leaves or the writer completes the response (cut, drain, expiry).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, Protocol, cast

from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from sse_gateway.access import Access, Admission, Refusal
from sse_gateway.gateway import DRAINING, Gateway
from sse_gateway.http_heads import STREAM_HEADERS
from sse_gateway.hub import HubClosed, Subscription
from sse_gateway.opener import Opening
from sse_gateway.probe import ProbeSchedule
from sse_gateway.request import StreamRequest, stream_request
from sse_gateway.stream_lines import StreamLines
from sse_gateway.stream_writer import CLIENT, DRAIN, ERROR, EXPIRED, DirectBody, StreamWriter
from sse_gateway.stream_writer import Send as WriterSend


class Reply(Protocol):
    """How a stream's answer is written: straight to its connection, or through ASGI."""

    @property
    def direct(self) -> DirectBody | None: ...

    @property
    def send(self) -> Callable[[Any], Awaitable[None]]: ...

    async def refuse(self, status: int, message: str, headers: Mapping[str, str]) -> None: ...

    async def start(self, first: bytes, more: bool) -> None: ...


class DirectReply(Reply, Protocol):
    """A ``Reply`` that answers at once (the server's own stream connection)."""

    def answer_error(self, status: int, message: str, headers: Mapping[str, str]) -> None: ...

    def start_now(self, first: bytes, more: bool) -> None: ...

    def cork(self) -> None:
        """Hold what is written until ``uncork``, then write it at once."""

    def uncork(self) -> None: ...


class AsgiReply:
    """A ``Reply`` over an ASGI ``send``."""

    __slots__ = ("receive", "scope", "send")

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope, self.receive, self.send = scope, receive, send

    @property
    def direct(self) -> DirectBody | None:
        return None

    async def refuse(self, status: int, message: str, headers: Mapping[str, str]) -> None:
        await json_error(status, message, dict(headers))(self.scope, self.receive, self.send)

    async def start(self, first: bytes, more: bool) -> None:
        head = {"type": "http.response.start", "status": 200, "headers": list(STREAM_HEADERS)}
        await self.send(head)
        await self.send({"type": "http.response.body", "body": first, "more_body": more})


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


class OpenStream:
    """One stream being served: its writer, and what its clean-up and close line need.

    Slotted, and the request itself is not kept: it lives as long as the stream."""

    __slots__ = (
        "address",
        "events",
        "expiry",
        "opened",
        "peer",
        "probes",
        "raised",
        "sub",
        "subscription",
        "writer",
    )

    def __init__(
        self,
        gateway: Gateway,
        request: StreamRequest,
        admission: Admission,
        reply: Reply,
        expires_in: float | None,
    ) -> None:
        settings, metrics = gateway.settings, gateway.metrics
        self.writer = StreamWriter(
            cast(WriterSend, reply.send),
            settings.client_buffer,
            reply.direct,
            settings.client_buffer_bytes,
            send_timeout=settings.send_timeout,
            on_conflate=metrics.events_conflated.inc,
        )
        # The path probe gets its probes and pings, no channel events.
        self.events = frozenset() if request.probe else admission.events
        self.address = request.address
        self.peer = request.peer
        self.sub = admission.grant.sub if admission.grant is not None else None
        self.raised = False
        self.subscription: Subscription | None = None
        self.probes: ProbeSchedule | None = None
        metrics.stream_opened()
        self.opened = time.monotonic()
        self.expiry = None
        if expires_in is not None:  # the token's expiry ends the stream, and says so
            loop = asyncio.get_running_loop()
            self.expiry = loop.call_later(expires_in, self.writer.close, b"", EXPIRED)

    @property
    def reason(self) -> str:
        """Why it ended: recorded by whoever in the gateway ended it, else the client."""
        return ERROR if self.raised else self.writer.ended_by or CLIENT


class StreamEndpoint:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.access = Access(gateway.settings, metrics=gateway.metrics)  # auth, per-client limit
        self.lines = StreamLines()
        # With CORS on: the headers a request from ``origin`` gets (set by the app).
        self.cors: Callable[[str | None], list[tuple[bytes, bytes]]] | None = None

    def cors_headers(self, origin: str | None) -> list[tuple[bytes, bytes]]:
        return [] if self.cors is None else self.cors(origin)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            request = stream_request(scope)
        except ValueError as exc:
            return await json_error(400, str(exc))(scope, receive, send)
        stream = await self.open(request, AsgiReply(scope, receive, send))
        if stream is None:
            return
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
            await stream.writer.wait_flushed()
        except Exception:
            stream.raised = True
            raise
        finally:
            self.end(stream)

    async def open(self, request: StreamRequest, reply: Reply) -> OpenStream | None:
        """Admit ``request``, answer it and open its stream; None when it gets none (its
        answer is written and nothing is held). The caller must ``end`` what it returns."""
        full = self._reserve()  # the slot is taken before anything awaits
        if full is not None:
            await reply.refuse(503, full, {"Retry-After": self.access.retry_after})
            return None
        try:
            stream = await self._admit(request, reply)
        except BaseException:
            self.gateway.release_stream()
            raise
        if stream is None:
            self.gateway.release_stream()
            return None
        return await self._finish(stream, request, reply)

    def open_now(
        self, request: StreamRequest, reply: DirectReply
    ) -> OpenStream | Coroutine[Any, Any, OpenStream | None] | None:
        """``open`` with nothing awaited, when nothing needs Redis: no ticket to take, and
        snapshots held or an id the history answers (most streams, and a reconnect storm).
        Returns what ``open`` would, or the rest of the opening to await (in a task).
        The head, ``retry`` and the opening then go out in one write."""
        full = self._reserve()
        if full is not None:
            reply.answer_error(503, full, {"Retry-After": self.access.retry_after})
            return None
        try:
            admission = self.access.admit_now(request)
        except Refusal as refused:
            self.gateway.release_stream()
            reply.answer_error(refused.status, refused.message, self._refused(refused))
            return None
        except BaseException:
            self.gateway.release_stream()
            raise
        if admission is None:  # a ticket to take: all of it awaits
            self.gateway.release_stream()
            return self.open(request, reply)
        stream = self._stream(request, admission, reply)
        if stream is None:  # HEAD: answered
            reply.start_now(b"", more=False)
            self.gateway.release_stream()
            return None
        reply.cork()
        try:
            reply.start_now(self.gateway.retry_frame, more=True)
            if self._subscribe(stream, request):
                opening = self.gateway.opener.open_now(
                    stream.writer, stream.events, request.last_event_id, request.probe
                )
                if opening is None:
                    return self._finish(stream, request)
                self._opened(stream, opening)
        except BaseException:
            stream.raised = True
            self.end(stream)
            raise
        finally:
            reply.uncork()
        return stream

    async def _finish(
        self, stream: OpenStream, request: StreamRequest, head: Reply | None = None
    ) -> OpenStream:
        """The opening that may read Redis; first the head and the subscription, when
        ``head`` is given (``open_now`` has done them already)."""
        try:
            if head is not None:
                await head.start(self.gateway.retry_frame, more=True)
                if not self._subscribe(stream, request):
                    return stream
            opening = await self.gateway.opener.open(
                stream.writer, stream.events, request.last_event_id, request.probe
            )
            self._opened(stream, opening)
        except BaseException:
            stream.raised = True
            self.end(stream)
            raise
        return stream

    async def _admit(self, request: StreamRequest, reply: Reply) -> OpenStream | None:
        try:
            admission = await self.access.admit(request)
        except Refusal as refused:
            await reply.refuse(refused.status, refused.message, self._refused(refused))
            return None
        stream = self._stream(request, admission, reply)
        if stream is None:  # HEAD: the head a GET would get, and no stream
            await reply.start(b"", more=False)
        return stream

    def _refused(self, refused: Refusal) -> dict[str, str]:
        """Count a refusal; the headers of its answer."""
        self.gateway.metrics.streams_rejected.labels(refused.reason).inc()
        return {"Cache-Control": "no-store", **refused.headers}

    def _stream(
        self, request: StreamRequest, admission: Admission, reply: Reply
    ) -> OpenStream | None:
        """The admitted stream (None for HEAD, which gets no stream)."""
        if request.method == "HEAD":
            return None
        expires_in = self.access.expires_in(admission.grant)
        return OpenStream(self.gateway, request, admission, reply, expires_in)

    def _subscribe(self, stream: OpenStream, request: StreamRequest) -> bool:
        """Subscribe the stream (its head is written); False when drain began meanwhile."""
        try:
            stream.subscription = self.gateway.hub.subscription(stream.writer, stream.events)
        except HubClosed:  # drain began while this stream was starting
            stream.writer.release([])
            stream.writer.close(b"", DRAIN)
            return False
        if request.probe:
            stream.probes = ProbeSchedule(stream.writer).start()
        return True

    def _opened(self, stream: OpenStream, opening: Opening) -> None:
        """The opening goes out, then what queued behind it."""
        self.lines.opened(stream.peer, stream.sub, stream.events, opening.how)
        stream.writer.release(opening.frames, opening.replayed, opening.seen_until)

    def _reserve(self) -> str | None:
        """Take a stream slot now, or the 503 message that says why not."""
        gateway = self.gateway
        full = gateway.reserve_stream()
        if full is None:
            return None
        gateway.metrics.streams_rejected.labels(full).inc()
        if full == DRAINING:
            return "gateway is shutting down"
        return f"too many open streams (limit {gateway.settings.max_connections})"

    def end(self, stream: OpenStream) -> None:
        """The stream is over: unsubscribed, its slots given back, counted, its close line."""
        if stream.opened < 0:
            return  # ended already
        if stream.subscription is not None:
            stream.subscription.__exit__(None, None, None)
            stream.subscription = None
        if stream.probes is not None:
            stream.probes.cancel()
        metrics, writer = self.gateway.metrics, stream.writer
        self.access.release(stream.address)
        if stream.expiry is not None:
            stream.expiry.cancel()
        metrics.stream_closed()
        if writer.cut:  # by its queue's bound, its opening or its send timeout
            metrics.slow_clients_cut.inc()
        self.lines.closed(
            stream.peer,
            stream.sub,
            time.monotonic() - stream.opened,
            len(self.gateway.retry_frame) + writer.bytes_sent,
            writer.frames,
            stream.reason,
        )
        stream.opened = -1.0
        self.gateway.release_stream()
