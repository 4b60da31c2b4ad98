"""The gateway's stream path below uvicorn's request cycle: its protocol, its connection.

A real app (``create_app`` over a ``MemorySource``) serves through ``GatewayHttpProtocol``
on a recording transport, as uvicorn would run it: the answers must be those the ASGI
path gives (heads, JSON errors, CORS), and a stream must leave nothing behind.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from functools import partial
from operator import contains
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from connectome_core.settings import load_settings
from sse_gateway.app import GatewayApp, create_app
from sse_gateway.http_limits import ConnectionLimits
from sse_gateway.http_protocol import GatewayHttpProtocol
from sse_gateway.settings import GatewaySettings
from sse_gateway.source import MemorySource
from sse_gateway.stream_connection import STREAM_SERVICE_STATE, StreamConnection
from tests.support.asgi import lifespan
from tests.unit.test_uvicorn_assumptions import FakeTransport


def make_app(source: MemorySource, **env: str) -> GatewayApp:
    env = {"SSE_MAX_STREAMS_PER_CLIENT": "0", **env}
    return create_app(load_settings(GatewaySettings, env), source=source)


@pytest.fixture
async def source() -> MemorySource:
    return MemorySource()


class Server:
    """Connections to one app, each through a new ``GatewayHttpProtocol``."""

    def __init__(self, app: GatewayApp) -> None:
        self.app = app
        self.config = Config(app=app, lifespan="off", proxy_headers=True, ws="none")
        self.config.load()
        self.state = ServerState()

    def connect(self, request: bytes) -> FakeTransport:
        protocol = GatewayHttpProtocol(
            self.config,
            self.state,
            {STREAM_SERVICE_STATE: self.app.stream},
            limits=ConnectionLimits(5.0, None),
        )
        transport = FakeTransport()
        protocol.connection_made(transport)
        protocol.data_received(request)
        return transport


@pytest.fixture
async def server(source: MemorySource) -> AsyncIterator[Server]:
    app = make_app(source)
    async with lifespan(app):
        yield Server(app)


async def until(predicate: Callable[[], Any], timeout: float = 5.0) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), timeout)


def head_and_body(transport: FakeTransport) -> tuple[dict[str, str], bytes]:
    head, _, body = bytes(transport.written).partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {"status": lines[0]}
    headers.update((k.lower(), v.strip()) for k, v in (line.split(":", 1) for line in lines[1:]))
    return headers, body


async def test_a_stream_opens_and_leaves_no_task_and_nothing_held_when_it_ends(
    server: Server, source: MemorySource
) -> None:
    source.publish("sse:connectome_health", b'{"n":0}', snapshot=True)
    transport = server.connect(b"GET /api/sse HTTP/1.1\r\nHost: x\r\n\r\n")
    connection = transport.protocol
    assert isinstance(connection, StreamConnection)
    await until(lambda: b'{"n":0}' in transport.written)
    headers, body = head_and_body(transport)
    assert headers["status"] == "HTTP/1.1 200 OK"
    assert headers["transfer-encoding"] == "chunked"
    assert headers["content-type"] == "text/event-stream; charset=utf-8"
    assert b"retry: " in body
    await until(lambda: connection.opening is None)  # the opening's task is over
    gateway = server.app.gateway
    assert (gateway.open_streams, len(gateway.hub)) == (1, 1)
    source.publish("sse:connectome_health", b'{"n":1}')
    await until(lambda: b'{"n":1}' in transport.written)
    connection.connection_lost(None)
    assert (gateway.open_streams, len(gateway.hub)) == (0, 0)
    assert server.app.stream.access.limits.count("127.0.0.1") == 0


async def test_http_1_0_gets_an_unchunked_body_and_head_gets_the_head_alone(
    server: Server,
) -> None:
    old = server.connect(b"GET /api/sse HTTP/1.0\r\n\r\n")
    await until(lambda: b"retry: " in old.written)
    headers, body = head_and_body(old)
    assert "transfer-encoding" not in headers and body.startswith(b"retry: ")
    head = server.connect(b"HEAD /api/sse HTTP/1.1\r\nHost: x\r\n\r\n")
    await until(lambda: head.closing)
    headers, body = head_and_body(head)
    assert headers["status"] == "HTTP/1.1 200 OK" and body == b""
    assert server.app.gateway.open_streams == 1  # the HEAD holds no stream
    assert isinstance(old.protocol, StreamConnection)
    old.protocol.connection_lost(None)
    assert server.app.gateway.open_streams == 0


async def test_errors_are_the_same_json_answers(server: Server) -> None:
    bad = server.connect(b"GET /api/sse?probe=2 HTTP/1.1\r\nHost: x\r\n\r\n")
    headers, body = head_and_body(bad)
    assert headers["status"] == "HTTP/1.1 400 Bad Request" and bad.closing
    assert json.loads(body) == {
        "error": "'probe' takes the value 1 (GET /api/sse?probe=1)",
        "status": 400,
    }
    server.app.gateway.drain()
    late = server.connect(b"GET /api/sse HTTP/1.1\r\nHost: x\r\n\r\n")
    await until(lambda: late.closing)
    headers, body = head_and_body(late)
    assert headers["status"] == "HTTP/1.1 503 Service Unavailable"
    assert "retry-after" in headers
    assert json.loads(body) == {"error": "gateway is shutting down", "status": 503}


async def test_cors_headers_on_the_stream_path_only_for_allowed_origins(
    source: MemorySource,
) -> None:
    app = make_app(source, SSE_CORS_ORIGINS="https://ok.example")
    async with lifespan(app):
        server = Server(app)
        for origin, allowed in (("https://ok.example", True), ("https://evil.example", False)):
            transport = server.connect(
                b"GET /api/sse HTTP/1.1\r\nHost: x\r\nOrigin: %s\r\n\r\n" % origin.encode()
            )
            await until(partial(contains, transport.written, b"retry: "))
            headers, _ = head_and_body(transport)
            assert (headers.get("access-control-allow-origin") == origin) is allowed
            assert headers["vary"] == "Origin"


async def test_a_trusted_proxy_names_the_client_the_per_client_limit_counts(
    source: MemorySource,
) -> None:
    app = make_app(source, SSE_MAX_STREAMS_PER_CLIENT="1")
    async with lifespan(app):
        server = Server(app)  # the recording transport's peer, 127.0.0.1, is trusted
        request = b"GET /api/sse HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: %s\r\n\r\n"
        first = server.connect(request % b"203.0.113.9")
        await until(lambda: b"retry: " in first.written)
        other = server.connect(request % b"203.0.113.10")
        await until(lambda: b"retry: " in other.written)
        again = server.connect(request % b"203.0.113.9")
        await until(lambda: again.closing)
        assert head_and_body(again)[0]["status"] == "HTTP/1.1 429 Too Many Requests"
