"""The app factory: ``create_app(settings, source=None)`` builds one gateway process's ASGI app.

The lifespan starts the gateway's tasks (the Redis reader, pings, the health watch) and,
on the way out, drains the streams still open and stops them. No ``BaseHTTPMiddleware``
anywhere: it would buffer and slow the stream route.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Awaitable

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from connectome_core.contract import STREAM_PATH
from connectome_core.logs import setup_logging
from connectome_core.redis_connect import startup_problem_sync
from connectome_core.settings import load_settings
from sse_gateway.access import TICKET_PATH
from sse_gateway.gateway import Gateway
from sse_gateway.metrics import GatewayMetrics
from sse_gateway.redis_source import RedisSource
from sse_gateway.routes import client_route, dashboard_route, health_routes, http_error
from sse_gateway.server import end_with_supervisor
from sse_gateway.settings import GatewaySettings
from sse_gateway.shutdown import drain_on_signals
from sse_gateway.source import EventSource
from sse_gateway.stream_connection import STREAM_SERVICE_STATE
from sse_gateway.stream_route import StreamEndpoint

log = logging.getLogger("sse_gateway")

# uvicorn's exit status for a worker that failed before serving; its supervisor then
# stops instead of restarting the worker (uvicorn.config.STARTUP_FAILURE).
STARTUP_FAILURE = 3
GC_YOUNG_THRESHOLD = 10_000  # allocations between young collections (the default: 700)


class GatewayApp:
    """The ASGI app of one gateway process.

    ``GET /api/sse`` goes straight to the stream endpoint; everything else
    (the other routes, lifespan, errors) goes through Starlette. Every layer
    between the server and a stream keeps a suspended frame alive for the
    stream's whole life, and streams are counted in thousands: the short path
    saves about a fifth of the memory per connection. For the same reason
    ``__call__`` returns the handler's coroutine instead of awaiting it (serve
    it as ``interface="asgi3"``).
    """

    def __init__(self, gateway: Gateway, starlette: Starlette, stream: StreamEndpoint) -> None:
        self.gateway = gateway
        self.starlette = starlette
        self._dispatch: ASGIApp = self._route
        if gateway.settings.cors_origins:
            # In front of every path, streams included; absent (no headers) when off.
            # POST and Authorization: a page on another origin gets its ticket with
            # fetch(POST /api/sse/ticket, bearer token), then opens the stream. No
            # credentials mode: a token crosses origins in the header, not a cookie.
            cors = CORSMiddleware(
                self._route,
                allow_origins=gateway.settings.cors_origins,
                allow_methods=["GET", "HEAD", "POST", "OPTIONS"],
                allow_headers=["Authorization", "Last-Event-ID", "Cache-Control"],
                expose_headers=["Retry-After"],
                max_age=600,
            )
            self._dispatch = cors
            stream.cors = lambda origin: cors_headers(cors, origin)
        self.stream = stream

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] == "lifespan" and "state" in scope:
            # The server's stream connections serve streams through the endpoint itself.
            scope["state"][STREAM_SERVICE_STATE] = self.stream
        return self._dispatch(scope, receive, send)

    def _route(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] == "http" and scope["path"] == STREAM_PATH and scope["method"] == "GET":
            return self.stream(scope, receive, send)
        return self.starlette(scope, receive, send)


def cors_headers(cors: CORSMiddleware, origin: str | None) -> list[tuple[bytes, bytes]]:
    """The headers ``cors`` adds to a simple response for a request from ``origin``."""
    headers = MutableHeaders()
    if origin is not None:
        headers.update(cors.simple_headers)
    # The origin itself where credentials are allowed, or where only some origins are.
    explicit = cors.allow_credentials if cors.allow_all_origins else cors.is_allowed_origin
    if origin is not None and (explicit is True or (callable(explicit) and explicit(origin))):
        cors.allow_explicit_origin(headers, origin)
    else:
        headers["Vary"] = ", ".join([*headers.getlist("Vary"), "Origin"])
    return list(headers.raw)


def create_app(
    settings: GatewaySettings,
    source: EventSource | None = None,
    metrics: GatewayMetrics | None = None,
    *,
    handle_signals: bool = False,
) -> GatewayApp:
    """One gateway process's app; ``handle_signals`` drains on SIGTERM/SIGINT (the CLI's case)."""
    gateway = Gateway(
        settings, source or RedisSource(settings.redis_target()), metrics or GatewayMetrics()
    )
    health = health_routes(gateway)
    stream = StreamEndpoint(gateway)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        gateway.start()
        sampler = asyncio.ensure_future(gateway.metrics.sample_process_forever())
        # What exists now (modules, settings, the app) lives as long as the process: out
        # of the collector's sight, a full collection walks only the streams' objects.
        # With the start-up objects in, one took 150 ms at 5,000 streams, an eternity for
        # every connect waiting behind it.
        gc.collect()
        gc.freeze()
        # A young generation of 700 (the default) meant a collection every 50 connects
        # of a storm, and an older one every 500, each walking the open streams: with
        # 10,000 the young ones cost the same in all and the older ones a fifteenth.
        # Nothing here leans on cycles being freed quickly (a connection makes none).
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        restore_signals = drain_on_signals(gateway.drain) if handle_signals else None
        try:
            yield
        finally:
            if restore_signals is not None:
                restore_signals()
            gateway.drain()
            sampler.cancel()
            await gateway.stop()
            await stream.access.close()
            stream.lines.budget.flush()  # the count of stream lines held back, if any

    starlette = Starlette(
        routes=[
            # Only methods other than GET get here (405): GET takes the short path.
            Route(STREAM_PATH, stream, methods=["GET"]),
            Route(TICKET_PATH, stream.access.ticket, methods=["POST"]),
            Route("/healthz", health["healthz"], methods=["GET"]),
            Route("/readyz", health["readyz"], methods=["GET"]),
            Route("/metrics", health["metrics"], methods=["GET"]),
            Route("/", dashboard_route(), methods=["GET"]),
            Route("/client.js", client_route(), methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )
    return GatewayApp(gateway, starlette, stream)


def app_from_environ() -> GatewayApp:
    """Factory for uvicorn workers: each reads the settings its parent exported.

    A Redis that cannot work until a setting changes (a wrong CA, a refused password,
    an ACL user without PING, an unknown Sentinel master name) stops the process here
    with one line, exit status 3 (uvicorn's start-up failure, which also stops a
    supervisor of several workers), rather than a reconnect loop. A Redis that is only
    unreachable for now does not: the gateway starts and its reader keeps retrying.
    """
    settings = load_settings(GatewaySettings)
    setup_logging(settings.log_level, settings.log_format)
    end_with_supervisor()
    problem = startup_problem_sync(settings.redis_target())
    if problem is not None:
        log.error("cannot start: %s", problem)
        raise SystemExit(STARTUP_FAILURE)
    return create_app(settings, handle_signals=True)
