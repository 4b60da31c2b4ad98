"""What the gateway's HTTP protocols assume of uvicorn and httptools, checked one by one.

``sse_gateway.http_protocol`` is the protocol uvicorn builds per connection; it
parses with httptools itself and hands other requests to uvicorn's httptools
protocol (``sse_gateway.http_uvicorn``). Nothing here uses a private
(underscore) name, but some of these are uvicorn's internals all the same, and a
release may change them. Each test names the assumption it checks, so a
uvicorn or httptools upgrade that breaks one fails here, with that name,
rather than as a silent misbehaviour in production.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import weakref
from typing import Any

import httptools
import pytest
import uvicorn
from uvicorn.config import Config
from uvicorn.lifespan.on import LifespanOn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from sse_gateway.forwarded import client_of
from sse_gateway.http_limits import ConnectionLimits
from sse_gateway.http_protocol import GatewayHttpProtocol
from sse_gateway.http_uvicorn import HardenedHttpProtocol
from sse_gateway.stream_connection import STREAM_SERVICE_STATE, StreamConnection


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


class RecordingService:
    """A stream service that answers every stream with its head and a retry line."""

    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.ended: list[Any] = []

    def cors_headers(self, origin: str | None) -> list[tuple[bytes, bytes]]:
        return []

    async def open(self, request: Any, reply: Any) -> Any:
        self.requests.append(request)
        await reply.start(b"retry: 1\n\n", more=True)
        return request

    def open_now(self, request: Any, reply: Any) -> Any:
        return self.open(request, reply)  # the rest awaited in a task, as a ticket would be

    def end(self, stream: Any) -> None:
        self.ended.append(stream)


def _protocol(
    app: Any = plain_app, service: RecordingService | None = None
) -> tuple[GatewayHttpProtocol, ServerState, FakeTransport]:
    config = Config(app=app, lifespan="off", proxy_headers=False, ws="none")
    config.load()
    state = ServerState()
    app_state = {STREAM_SERVICE_STATE: service} if service is not None else {}
    protocol = GatewayHttpProtocol(
        config=config, server_state=state, app_state=app_state, limits=ConnectionLimits(5.0, None)
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
        "HardenedHttpProtocol overrides it (see sse_gateway/http_uvicorn.py)"
    )


def test_httptools_parser_offers_what_the_gateway_reads() -> None:
    parser = httptools.HttpRequestParser(object())
    for name in ("get_method", "get_http_version", "should_upgrade", "feed_data"):
        assert callable(getattr(parser, name, None)), f"ASSUMPTION BROKEN: httptools parser.{name}"
    url = httptools.parse_url(b"/api/sse?events=a")
    assert (url.path, url.query) == (b"/api/sse", b"events=a"), "ASSUMPTION BROKEN: parse_url"


def test_httptools_calls_the_parser_callbacks_by_name_and_raises_its_errors() -> None:
    seen: list[str] = []

    class Callbacks:
        def on_url(self, url: bytes) -> None:
            seen.append(f"url {url.decode()}")

        def on_header(self, name: bytes, value: bytes) -> None:
            seen.append(f"header {name.decode()}")

        def on_headers_complete(self) -> None:
            seen.append("complete")

    parser = httptools.HttpRequestParser(Callbacks())
    parser.feed_data(b"GET /api/sse HTTP/1.0\r\nX-A: 1\r\n\r\n")
    assert seen == ["url /api/sse", "header X-A", "complete"], "ASSUMPTION BROKEN: callbacks"
    assert (parser.get_method(), parser.get_http_version()) == (b"GET", "1.0")
    with pytest.raises(httptools.HttpParserError):
        httptools.HttpRequestParser(Callbacks()).feed_data(b"\x16\x03 NOT HTTP\r\n\r\n")
    upgrade = httptools.HttpRequestParser(Callbacks())
    with pytest.raises(httptools.HttpParserUpgrade):
        upgrade.feed_data(b"GET / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n")


async def test_uvicorn_hands_protocols_the_lifespan_state_the_app_writes_into() -> None:
    """The app puts its stream endpoint into the lifespan scope's ``state``; uvicorn hands
    that same dict to every connection's protocol as ``app_state``."""
    source = inspect.getsource(uvicorn.server.Server)
    assert "app_state=self.lifespan.state" in source, (
        "ASSUMPTION BROKEN: uvicorn.server.Server builds protocols with "
        "app_state=self.lifespan.state"
    )

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["state"]["written"] = True
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})

    config = Config(app=app, lifespan="on")
    config.load()
    lifespan = LifespanOn(config)
    await lifespan.startup()
    await lifespan.shutdown()
    assert lifespan.state == {"written": True}, (
        "ASSUMPTION BROKEN: uvicorn's lifespan scope carries LifespanOn.state"
    )


def test_proxy_headers_middleware_names_the_client_a_trusted_proxy_forwards() -> None:
    config = Config(app=plain_app, proxy_headers=True, forwarded_allow_ips="127.0.0.1")
    assert (config.proxy_headers, config.forwarded_allow_ips) == (True, "127.0.0.1")
    forwarded = [(b"x-forwarded-for", b"203.0.113.9")]
    transport = FakeTransport()  # its peer is 127.0.0.1: trusted
    assert client_of(transport, forwarded, config) == ("203.0.113.9", 0), (
        "ASSUMPTION BROKEN: uvicorn.middleware.proxy_headers.ProxyHeadersMiddleware sets "
        "scope['client'] from X-Forwarded-For for a trusted peer"
    )
    assert client_of(transport, [], config) == ("127.0.0.1", 40000)
    untrusted = Config(app=plain_app, proxy_headers=True, forwarded_allow_ips="10.1.1.1")
    assert client_of(transport, forwarded, untrusted) == ("127.0.0.1", 40000)
    off = Config(app=plain_app, proxy_headers=False)
    assert client_of(transport, forwarded, off) == ("127.0.0.1", 40000)


async def test_a_plain_request_goes_on_to_uvicorns_cycle() -> None:
    protocol, state, transport = _protocol(service=RecordingService())
    assert protocol in state.connections, (
        "ASSUMPTION BROKEN: server_state.connections is the set of open connections "
        "(the gateway counts open sockets there, and uvicorn's shutdown walks it)"
    )
    protocol.data_received(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    uvicorn_protocol = transport.protocol
    assert isinstance(uvicorn_protocol, HardenedHttpProtocol)
    assert uvicorn_protocol in state.connections and protocol not in state.connections
    await asyncio.wait_for(_until(lambda: b"/healthz" in transport.written), 5)
    assert transport.written.startswith(b"HTTP/1.1 200 ")
    assert uvicorn_protocol.cycle is not None and uvicorn_protocol.cycle.response_complete, (
        "ASSUMPTION BROKEN: uvicorn keeps the request's cycle in protocol.cycle with "
        "response_complete (the gateway waits on it before moving a stream request)"
    )


async def test_a_stream_request_moves_to_its_own_connection_and_pipelined_bytes_are_ignored() -> (
    None
):
    service = RecordingService()
    protocol, state, transport = _protocol(service=service)
    protocol.data_received(
        b"GET /api/sse?events=a HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert isinstance(transport.protocol, StreamConnection), (
        "the stream request did not move to a StreamConnection"
    )
    connection = transport.protocol
    assert connection in state.connections and protocol not in state.connections
    await asyncio.wait_for(_until(lambda: b"retry: 1" in transport.written), 5)
    assert transport.written.startswith(b"HTTP/1.1 200 OK\r\n")
    assert [r.events for r in service.requests] == [frozenset({"a"})]  # /healthz never ran
    await asyncio.wait_for(_until(lambda: connection.opening is None), 5)
    assert connection.stream is not None  # open, and no task is left behind for it
    connection.connection_lost(None)  # the client leaves: the stream ends at once
    assert service.ended == service.requests
    assert connection not in state.connections


async def test_the_first_protocol_is_freed_without_the_garbage_collector() -> None:
    """The parser holds its protocol's callbacks: the cycle is cut once the head is handed
    on (or the connection goes), so a storm of connects leaves nothing for the collector."""
    service = RecordingService()
    gc.disable()
    try:
        protocol, _state, transport = _protocol(service=service)
        handed_on = weakref.ref(protocol)
        protocol.data_received(b"GET /api/sse HTTP/1.1\r\nHost: x\r\n\r\n")
        assert isinstance(transport.protocol, StreamConnection)
        early, _state, _transport = _protocol(service=service)
        gone_early = weakref.ref(early)
        early.data_received(b"GET /api/sse HTTP/1.1\r\nHo")  # the client leaves mid-head
        early.connection_lost(None)
        del protocol, early
        assert handed_on() is None, "the first protocol of a stream request outlived its use"
        assert gone_early() is None, "a protocol whose client left mid-head outlived it"
    finally:
        gc.enable()
    await asyncio.wait_for(_until(lambda: transport.protocol.opening is None), 5)


async def test_a_stream_request_behind_another_moves_once_that_one_is_answered() -> None:
    service = RecordingService()
    protocol, _state, transport = _protocol(service=service)
    protocol.data_received(
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /api/sse HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    await asyncio.wait_for(_until(lambda: isinstance(transport.protocol, StreamConnection)), 5)
    await asyncio.wait_for(_until(lambda: b"retry: 1" in transport.written), 5)
    assert transport.written.index(b"/healthz") < transport.written.index(b"retry: 1")
    assert len(service.requests) == 1


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
