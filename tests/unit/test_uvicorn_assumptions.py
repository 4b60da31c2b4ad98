"""What ``sse_gateway.http_protocol`` assumes of uvicorn and httptools, checked one by one.

The gateway extends uvicorn's httptools protocol (the README's dependency
notes name this). Nothing here uses a private
(underscore) name, but these are uvicorn's internals all the same, and a
release may change them. Each test names the assumption it checks, so a
uvicorn or httptools upgrade that breaks one fails here, with that name,
rather than as a silent misbehaviour in production.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import httptools
import pytest
import uvicorn
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from sse_gateway.http_protocol import (
    ConnectionLimits,
    GatewayHttpProtocol,
    StreamConnection,
)


class FakeTransport(asyncio.Transport):
    """Records what a protocol writes and which protocol it hands the connection to."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closing = False
        self.protocol: asyncio.BaseProtocol | None = None
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 40000)}.get(
            name, default
        )

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self.protocol is not None
        return self.protocol

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def get_write_buffer_size(self) -> int:
        return 0


async def plain_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": scope["path"].encode()})


def _protocol(app: Any = plain_app) -> tuple[GatewayHttpProtocol, ServerState, FakeTransport]:
    config = Config(app=app, lifespan="off", proxy_headers=False, ws="none")
    config.load()
    state = ServerState()
    protocol = GatewayHttpProtocol(
        config=config, server_state=state, app_state={}, limits=ConnectionLimits(5.0, None)
    )
    transport = FakeTransport()
    protocol.connection_made(transport)
    return protocol, state, transport


def test_uvicorn_builds_http_protocols_from_config_server_state_and_app_state() -> None:
    params = list(inspect.signature(HttpToolsProtocol.__init__).parameters)
    assert params[1:4] == ["config", "server_state", "app_state"], (
        "ASSUMPTION BROKEN: uvicorn builds its HTTP protocol as "
        "cls(config=..., server_state=..., app_state=...); GatewayHttpProtocol.__init__ "
        f"mirrors that signature, uvicorn {uvicorn.__version__} has {params}"
    )


def test_uvicorn_run_takes_the_options_the_gateway_passes() -> None:
    params = inspect.signature(uvicorn.Config.__init__).parameters
    for name in ("http", "ws", "limit_concurrency", "timeout_graceful_shutdown", "factory"):
        assert name in params, f"ASSUMPTION BROKEN: uvicorn.run no longer takes {name}="


@pytest.mark.parametrize(
    "callback",
    [
        "on_message_begin",
        "on_url",
        "on_header",
        "on_headers_complete",
        "on_body",
        "on_message_complete",
        "on_response_complete",
        "send_400_response",
        "connection_made",
        "connection_lost",
        "data_received",
        "shutdown",
    ],
)
def test_the_methods_the_gateway_overrides_exist_in_uvicorns_protocol(callback: str) -> None:
    assert callable(getattr(HttpToolsProtocol, callback, None)), (
        f"ASSUMPTION BROKEN: uvicorn's HttpToolsProtocol has no {callback}(); "
        "GatewayHttpProtocol overrides it (see sse_gateway/http_protocol.py)"
    )


def test_httptools_parser_offers_what_the_gateway_reads() -> None:
    parser = httptools.HttpRequestParser(object())
    for name in ("get_method", "get_http_version", "should_upgrade", "feed_data"):
        assert callable(getattr(parser, name, None)), f"ASSUMPTION BROKEN: httptools parser.{name}"
    url = httptools.parse_url(b"/api/sse?events=a")
    assert (url.path, url.query) == (b"/api/sse", b"events=a"), "ASSUMPTION BROKEN: parse_url"


async def test_a_plain_request_still_goes_through_uvicorns_cycle() -> None:
    protocol, state, transport = _protocol()
    assert protocol in state.connections, (
        "ASSUMPTION BROKEN: uvicorn's connection_made adds the protocol to "
        "server_state.connections (the gateway counts open sockets there)"
    )
    protocol.data_received(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.wait_for(_until(lambda: b"/healthz" in transport.written), 5)
    assert transport.written.startswith(b"HTTP/1.1 200 ")
    assert protocol.cycle is not None and protocol.cycle.response_complete, (
        "ASSUMPTION BROKEN: uvicorn keeps the request's cycle in protocol.cycle with "
        "response_complete (the gateway waits on it before moving a stream request)"
    )


async def test_a_stream_request_moves_to_its_own_connection_and_pipelined_bytes_are_ignored() -> (
    None
):
    seen: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"retry: 1\n\n", "more_body": True})
        await receive()

    protocol, state, transport = _protocol(app)
    protocol.data_received(
        b"GET /api/sse?events=a HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert isinstance(transport.protocol, StreamConnection), (
        "the stream request did not move to a StreamConnection"
    )
    connection = transport.protocol
    assert connection in state.connections and protocol not in state.connections
    await asyncio.wait_for(_until(lambda: b"retry: 1" in transport.written), 5)
    assert [s["path"] for s in seen] == ["/api/sse"]  # the pipelined request never ran
    assert seen[0]["query_string"] == b"events=a"
    connection.connection_lost(None)  # the client leaves: the handler learns it at once
    assert connection.task is not None
    await asyncio.wait_for(connection.task, 5)
    assert connection not in state.connections


async def _until(predicate: Any) -> None:
    while not predicate():
        await asyncio.sleep(0.01)


async def test_uvicorns_client_triggered_lines_are_rate_limited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Garbage on many connections must not become as many log lines."""
    for _ in range(5):
        protocol, _, transport = _protocol()
        protocol.data_received(b"\x16\x03\x01 NOT HTTP\r\n\r\n")
        assert transport.written.startswith(b"HTTP/1.1 400 ")
    lines = [r for r in caplog.records if "Invalid HTTP request" in r.getMessage()]
    assert len(lines) == 1, (
        "ASSUMPTION BROKEN: uvicorn logs a parser error as 'Invalid HTTP request received.' "
        f"on the 'uvicorn.error' logger (sse_gateway.http_protocol.UVICORN_CLIENT_LINES): {lines}"
    )
