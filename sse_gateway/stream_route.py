"""``GET /api/sse``: a request read once, admitted, opened, then live until it ends.

A plain ASGI callable rather than a Starlette ``Response``: it hands the raw ``send``
to a ``StreamWriter`` and waits on ``receive``, which returns when the client leaves or
when the writer completes the response (cut, drain, expiry). One coroutine per stream.
"""

from __future__ import annotations

import asyncio
import time
from typing import cast

from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from sse_gateway.access import Access, Admission, Refusal
from sse_gateway.gateway import DRAINING, Gateway
from sse_gateway.http_protocol import DIRECT_BODY_EXTENSION
from sse_gateway.hub import HubClosed
from sse_gateway.probe import probes_for
from sse_gateway.request import StreamRequest, stream_request
from sse_gateway.stream_lines import StreamLines
from sse_gateway.stream_writer import CLIENT, DRAIN, ERROR, EXPIRED, StreamWriter
from sse_gateway.stream_writer import Send as WriterSend

STREAM_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


class OpenStream:
    """One stream being served: its writer, and what its clean-up and close line need.

    Slotted, and the request itself is not kept: it lives as long as the stream."""

    __slots__ = ("address", "events", "expiry", "opened", "peer", "raised", "sub", "writer")

    def __init__(
        self,
        gateway: Gateway,
        request: StreamRequest,
        admission: Admission,
        scope: Scope,
        send: Send,
        expires_in: float | None,
    ) -> None:
        settings, metrics = gateway.settings, gateway.metrics
        direct = scope.get("extensions", {}).get(DIRECT_BODY_EXTENSION, {}).get("writer")
        self.writer = StreamWriter(
            cast(WriterSend, send),
            settings.client_buffer,
            direct,
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
        metrics.open_streams.inc()
        metrics.streams_opened.inc()
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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            request = stream_request(scope)
        except ValueError as exc:
            return await json_error(400, str(exc))(scope, receive, send)
        refusal = self._reserve()  # the slot is taken before anything awaits
        if refusal is not None:
            return await refusal(scope, receive, send)
        try:
            try:
                admission = await self.access.admit(request)
            except Refusal as refused:
                self.gateway.metrics.streams_rejected.labels(refused.reason).inc()
                return await refused.response()(scope, receive, send)
            if request.method == "HEAD":  # the head a GET would get, and no stream
                return await _respond(send, b"", more=False)
            expires_in = self.access.expires_in(admission.grant)
            stream = OpenStream(self.gateway, request, admission, scope, send, expires_in)
            del admission, expires_in  # the stream holds what it needs of them
            writer = stream.writer
            try:
                await _respond(send, self.gateway.retry_frame, more=True)
                with (
                    self.gateway.hub.subscription(writer, stream.events),
                    probes_for(writer, request.probe),
                ):
                    opening = await self.gateway.opener.open(
                        writer, stream.events, request.last_event_id, request.probe
                    )
                    del request  # streams are many: only what the close line needs stays
                    self.lines.opened(stream.peer, stream.sub, stream.events, opening.how)
                    writer.release(opening.frames, opening.replayed)
                    del opening  # the opening is the writer's now
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    await writer.wait_flushed()
            except HubClosed:  # drain began while this stream was starting
                writer.release([])
                writer.close(b"", DRAIN)
            except Exception:
                stream.raised = True
                raise
            finally:
                self._ended(stream)
        finally:
            self.gateway.release_stream()

    def _reserve(self) -> Response | None:
        """Take a stream slot now, or the 503 that says why not."""
        gateway = self.gateway
        full = gateway.reserve_stream()
        if full is None:
            return None
        gateway.metrics.streams_rejected.labels(full).inc()
        if full == DRAINING:
            message = "gateway is shutting down"
        else:
            message = f"too many open streams (limit {gateway.settings.max_connections})"
        return json_error(503, message, {"Retry-After": self.access.retry_after})

    def _ended(self, stream: OpenStream) -> None:
        metrics, writer = self.gateway.metrics, stream.writer
        self.access.release(stream.address)
        if stream.expiry is not None:
            stream.expiry.cancel()
        metrics.open_streams.dec()
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


async def _respond(send: Send, body: bytes, more: bool) -> None:
    """The stream's head, then ``body`` (``more``: the stream goes on after it)."""
    await send({"type": "http.response.start", "status": 200, "headers": STREAM_HEADERS})
    await send({"type": "http.response.body", "body": body, "more_body": more})
