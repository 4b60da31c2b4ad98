"""The gateway's HTTP surface: ``/api/sse``, ``/healthz``, ``/readyz``, ``/metrics`` and ``/``.

The stream endpoint is a plain ASGI callable rather than a Starlette
``Response``: it hands the raw ``send`` to a ``StreamWriter`` (the fast path)
and waits on ``receive`` for the end of the stream, which comes either from
the client disconnecting or from the writer completing the response (cut,
drain). One coroutine per stream, no extra tasks.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from functools import partial
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from connectome_core.contract import RESERVED_EVENTS, is_valid_event_name
from connectome_core.logs import RateLimitedLog
from sse_gateway import stream_lines
from sse_gateway.access import Access, Refusal
from sse_gateway.framing import Frame
from sse_gateway.gateway import Gateway
from sse_gateway.http_protocol import DIRECT_BODY_EXTENSION
from sse_gateway.hub import HubClosed
from sse_gateway.opening import Opening, last_event_id, opening_frames
from sse_gateway.probe import PROBE_PARAMETER, probe_requested, probes_for
from sse_gateway.source import SourceUnavailable
from sse_gateway.stream_lines import StreamLines
from sse_gateway.stream_writer import Send as WriterSend
from sse_gateway.stream_writer import StreamWriter

log = logging.getLogger("sse_gateway.stream")
limited_log = RateLimitedLog(log)

MAX_SELECTED_EVENTS = 64
DASHBOARD = Path(__file__).parent / "static" / "dashboard.html"
BROWSER_CLIENT = Path(__file__).parent / "static" / "connectome-stream" / "connectome-stream.js"

_STREAM_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


def parse_events(values: list[str]) -> frozenset[str] | None:
    """``?events=a,b`` -> the selected channel event types; None selects everything.

    The gateway's own events (pings, ``resync``...) always flow: naming them selects
    nothing more and asks nothing of a token's grant. Raises ValueError.
    """
    if not values:
        return None
    names = [name.strip() for value in values for name in value.split(",")]
    bad = [name for name in names if not is_valid_event_name(name)]
    if bad:
        raise ValueError(
            f"invalid event name {bad[0]!r} in 'events': names match [A-Za-z0-9_.-]{{1,64}}, "
            "separated by commas"
        )
    if len(set(names)) > MAX_SELECTED_EVENTS:
        raise ValueError(f"at most {MAX_SELECTED_EVENTS} event types may be selected")
    return frozenset(names) - RESERVED_EVENTS


def query_values(scope: Scope, name: str) -> list[str]:
    # Parsed from the scope rather than a Request: whatever the handler holds
    # lives as long as the stream, and streams are many.
    return parse_qs(scope["query_string"].decode("latin-1"), keep_blank_values=True).get(name, [])


class StreamEndpoint:
    """``GET /api/sse``."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.access = Access(gateway.settings, metrics=gateway.metrics)  # auth, per-client limit
        self.lines = StreamLines()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gateway = self.gateway
        try:
            events = parse_events(query_values(scope, "events"))
            probe = probe_requested(query_values(scope, PROBE_PARAMETER))
        except ValueError as exc:
            return await json_error(400, str(exc))(scope, receive, send)
        refusal = self._reserve()
        if refusal is not None:
            return await refusal(scope, receive, send)
        try:  # the stream slot reserved above goes back on every way out
            try:
                address, grant, events = await self.access.admit(scope, events)
            except Refusal as refused:
                gateway.metrics.streams_rejected.labels(refused.reason).inc()
                return await refused.response()(scope, receive, send)
            if scope["method"] == "HEAD":  # the head a GET would get, and no stream
                await send(
                    {"type": "http.response.start", "status": 200, "headers": _STREAM_HEADERS}
                )
                return await send({"type": "http.response.body", "body": b"", "more_body": False})
            if probe:  # the path probe: its probes, then only pings (sse_gateway.probe)
                events = frozenset()
            client = scope.get("client")
            peer = f"{client[0]}:{client[1]}" if client else "?"
            sub = grant.sub if grant is not None else None
            direct = scope.get("extensions", {}).get(DIRECT_BODY_EXTENSION, {}).get("writer")
            settings = gateway.settings
            writer = StreamWriter(
                cast(WriterSend, send),
                settings.client_buffer,
                direct,
                settings.client_buffer_bytes,
                send_timeout=settings.send_timeout,
                on_conflate=gateway.metrics.events_conflated.inc,
            )
            last_id = last_event_id(scope["headers"], scope["query_string"])
            gateway.metrics.open_streams.inc()
            gateway.metrics.streams_opened.inc()
            opened = time.monotonic()
            expiry = self.access.end_at_expiry(grant, lambda: writer.close(b""))
            reason = stream_lines.CLIENT
            try:
                await send(
                    {"type": "http.response.start", "status": 200, "headers": _STREAM_HEADERS}
                )
                await send(
                    {"type": "http.response.body", "body": gateway.retry_frame, "more_body": True}
                )
                with gateway.hub.subscription(writer, events), probes_for(writer, probe):
                    if probe:
                        self.lines.opened(peer, sub, events, "probe")
                        writer.release([])
                    else:
                        frames, replayed = await self._opening(writer, events, last_id)
                        how = "resume" if replayed else "resync" if last_id else "snapshot"
                        self.lines.opened(peer, sub, events, how)
                        writer.release(frames, replayed)
                        del frames  # the opening is the writer's now
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    await writer.wait_flushed()
            except HubClosed:  # drain began while this stream was starting
                reason = stream_lines.DRAIN
                writer.release([])
                writer.close(b"")
            except Exception:
                reason = stream_lines.ERROR
                raise
            finally:
                self.access.release(address)
                if expiry is not None:
                    expiry.cancel()
                gateway.metrics.open_streams.dec()
                if writer.cut:  # by its queue's bound, its opening or its send timeout
                    gateway.metrics.slow_clients_cut.inc()
                if reason == stream_lines.CLIENT:
                    reason = self._ended_by(writer, expiry)
                self.lines.closed(
                    peer,
                    sub,
                    time.monotonic() - opened,
                    len(gateway.retry_frame) + writer.bytes_sent,
                    writer.frames,
                    reason,
                )
        finally:
            gateway.open_streams -= 1

    def _reserve(self) -> Response | None:
        """Take a stream slot now, before anything awaits, or the 503 that says why not.

        Checked and taken with no await in between: requests that all wait on Redis
        (a ticket) must not all pass the cap before any of them counts."""
        gateway = self.gateway
        retry_after = self.access.retry_after
        if gateway.draining:
            gateway.metrics.streams_rejected.labels("draining").inc()
            return json_error(503, "gateway is shutting down", {"Retry-After": retry_after})
        if gateway.open_streams >= gateway.settings.max_connections:
            gateway.metrics.streams_rejected.labels("max_connections").inc()
            return json_error(
                503,
                f"too many open streams (limit {gateway.settings.max_connections})",
                {"Retry-After": retry_after},
            )
        gateway.open_streams += 1
        return None

    def _ended_by(self, writer: StreamWriter, expiry: asyncio.TimerHandle | None) -> str:
        """Why a stream that raised nothing ended (the client leaving, unless the gateway
        ended it)."""
        if writer.timed_out:
            return stream_lines.TIMEOUT
        if writer.cut:
            return stream_lines.CUT
        if not writer.closed:
            return stream_lines.CLIENT
        if expiry is not None and expiry.when() <= asyncio.get_running_loop().time():
            return stream_lines.EXPIRED
        if self.gateway.draining:
            return stream_lines.DRAIN
        return stream_lines.CLIENT  # its connection was gone when a write was tried

    async def _opening(
        self, writer: StreamWriter, events: frozenset[str] | None, last_id: str
    ) -> Opening:
        # A method, not a lambda kept in the handler's frame: nothing of it outlives the
        # opening, and streams are many.
        snapshots = partial(self._snapshots, events)
        return await opening_frames(self.gateway.relay, writer, events, last_id, snapshots)

    async def _snapshots(self, events: frozenset[str] | None) -> list[Frame]:
        relay = self.gateway.relay
        if not relay.redis_up:
            return []  # re-sent to every stream once the subscription is back
        try:
            framed = await relay.snapshots.read()
        except SourceUnavailable as exc:
            limited_log.warning("snapshots", "snapshots unavailable for a new stream: %s", exc)
            return []
        return relay.select(framed, events)


def health_routes(gateway: Gateway) -> dict[str, Any]:
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if gateway.ready:
            return JSONResponse({"status": "ready", "redis": "up"})
        reason = "draining" if gateway.draining else "redis down"
        redis_state = "up" if gateway.relay.redis_up else "down"
        return JSONResponse(
            {"status": "not ready", "reason": reason, "redis": redis_state}, status_code=503
        )

    async def metrics(request: Request) -> Response:
        body, content_type = gateway.metrics.render()
        return Response(body, media_type=content_type)

    return {"healthz": healthz, "readyz": readyz, "metrics": metrics}


def dashboard_route() -> Any:
    """``/``: the page is read once; it is a few kilobytes and never changes at run time."""
    try:
        page = DASHBOARD.read_bytes()
    except FileNotFoundError:
        page = b""

    async def dashboard(request: Request) -> Response:
        if not page:
            return json_error(404, "dashboard not installed")
        return Response(page, media_type="text/html; charset=utf-8")

    return dashboard


def client_route() -> Any:
    """``/client.js``: the browser client (an ES module), read once; revalidated by ETag."""
    try:
        module = BROWSER_CLIENT.read_bytes()
    except FileNotFoundError:
        module = b""
    etag = '"' + hashlib.sha256(module).hexdigest()[:20] + '"'
    headers = {"Cache-Control": "no-cache", "ETag": etag}

    async def client(request: Request) -> Response:
        if not module:
            return json_error(404, "browser client not installed")
        known = request.headers.get("if-none-match", "").split(",")
        if etag in (tag.strip().removeprefix("W/") for tag in known):
            return Response(status_code=304, headers=headers)
        return Response(module, media_type="text/javascript; charset=utf-8", headers=headers)

    return client


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return json_error(exc.status_code, str(exc.detail), dict(exc.headers or {}))
