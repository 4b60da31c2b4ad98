"""A real ``sse-gateway`` process against hostile connections.

Each test speaks raw HTTP over a socket, because the defects live in how
the server handles the connection, below any HTTP client library.
"""

from __future__ import annotations

import asyncio
import socket
import time

from connectome_sse.localrun.redis_server import RedisServer
from connectome_sse.localrun.sse_clients import open_streams
from connectome_sse.localrun.wait import until, wait_for
from tests.conftest import StartGateway

PIPELINED = b"GET /api/sse HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


def _pipeline_then_close(port: int) -> None:
    """The issue's recipe: a stream request, a second request behind it, then goodbye."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(PIPELINED)
        # Wait until the stream has started (its head arrived), so the server has
        # seen both requests before the client leaves.
        received = b""
        while b"retry:" not in received:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        assert b" 200 " in received.split(b"\r\n", 1)[0], received[:200]


async def test_regression_a_request_pipelined_behind_a_stream_cannot_deafen_the_gateway(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    cap = 10
    gateway = start_gateway(
        redis_server.url,
        env={"SSE_PING_INTERVAL": "600", "SSE_MAX_CONNECTIONS": str(cap), "SSE_LOG_LEVEL": "debug"},
    ).wait_ready()
    redis = redis_server.client()
    async with open_streams(gateway.url + "/api/sse?events=x", 5) as healthy:
        await until(lambda: gateway.metric("sse_open_streams") == 5, what="healthy streams open")
        # More pipelined-then-closed connections than the cap leaves free, each one's
        # slot back before the next (before the fix none came back: the cap filled up).
        for n in range(cap):
            await asyncio.to_thread(_pipeline_then_close, gateway.port)
            await until(
                lambda: gateway.metric("sse_open_streams") == 5,
                what=f"the slot of closed connection {n + 1} freed",
            )
        for seq in range(5):
            assert redis.publish("sse:x", str(seq)) == 1  # the gateway's one subscription
        await until(
            lambda: all(c.of("x") == ["0", "1", "2", "3", "4"] for c in healthy),
            what="every event at every healthy stream",
        )
        assert not any(c.ended for c in healthy)
        # New clients are admitted up to the cap, and the gateway is still ready.
        async with open_streams(gateway.url + "/api/sse?events=x", cap - 5) as late:
            await until(lambda: gateway.metric("sse_open_streams") == cap, what="late clients")
            redis.publish("sse:x", "late")
            await until(lambda: all(c.of("x") == ["late"] for c in late), what="late delivery")
    assert gateway.status("/readyz") == 200
    assert "Traceback" not in gateway.log(), gateway.log()[-3000:]


def _read_until_closed(sock: socket.socket, limit: float = 10.0) -> bytes:
    sock.settimeout(limit)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_regression_head_answers_headers_only_and_opens_no_stream(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(redis_server.url, env={"SSE_MAX_CONNECTIONS": "2"}).wait_ready()
    for _ in range(3):  # more than the cap: a HEAD must not take a slot
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
            sock.sendall(b"HEAD /api/sse HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = _read_until_closed(sock)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), answer[:300]
        assert b"content-type: text/event-stream" in head.lower()
        assert body == b""
    assert gateway.metric("sse_open_streams") == 0
    assert gateway.metric("sse_streams_opened_total") == 0


def test_regression_http10_gets_an_unchunked_body_ended_by_close(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(redis_server.url, env={"SSE_PING_INTERVAL": "600"}).wait_ready()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(b"GET /api/sse?events=x HTTP/1.0\r\n\r\n")
        received = b""
        while b"\r\n\r\n" not in received or b"retry:" not in received:
            received += sock.recv(65536)
        wait_for(lambda: gateway.metric("sse_open_streams") == 1, what="stream open")
        redis_server.client().publish("sse:x", "hello")
        while b"data: hello\n\n" not in received:
            received += sock.recv(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower(), head
    assert b"connection: close" in head.lower()
    assert body.startswith(b"retry: ")
    assert body.endswith(b"event: x\ndata: hello\n\n"), body


def test_regression_an_idle_socket_is_closed_after_the_header_timeout(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(redis_server.url, args=("--header-timeout", "1")).wait_ready()
    with (
        socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as idle,
        socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as slow,
    ):
        slow.sendall(b"GET /healthz HTTP/1.1\r\n")  # headers begun, never finished
        started = time.monotonic()
        assert idle.recv(1024) == b""  # closed by the server, not by the 5 s socket timeout
        assert slow.recv(1024) == b""
        assert time.monotonic() - started < 4.5
    assert gateway.status("/healthz") == 200


def test_regression_sockets_past_the_connection_cap_are_refused(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(
        redis_server.url, args=("--limit-concurrency", "4", "--max-connections", "2")
    ).wait_ready()
    held = [socket.create_connection(("127.0.0.1", gateway.port), timeout=5) for _ in range(4)]
    try:
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as extra:
            try:
                extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = _read_until_closed(extra)
            except ConnectionResetError:  # closed before it could even send: refused
                answer = b""
        assert answer == b"" or answer.startswith(b"HTTP/1.1 503 "), answer[:200]
    finally:
        for sock in held:
            sock.close()
    wait_for(lambda: gateway.status("/healthz") == 200, what="served again once sockets closed")


def test_a_stream_requested_behind_another_request_on_one_connection_works(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    """A browser loads ``/`` and opens its EventSource on the same kept-alive connection."""
    gateway = start_gateway(redis_server.url, env={"SSE_PING_INTERVAL": "600"}).wait_ready()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /api/sse?events=x HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        received = b""
        while b"retry:" not in received:
            received += sock.recv(65536)
        wait_for(lambda: gateway.metric("sse_open_streams") == 1, what="stream open")
        redis_server.client().publish("sse:x", "hi")
        while b"data: hi\n" not in received:
            received += sock.recv(65536)
    assert received.startswith(b"HTTP/1.1 200 ")
    assert b'{"status":"ok"}' in received
    assert b"text/event-stream" in received
    wait_for(lambda: gateway.metric("sse_open_streams") == 0, what="slot freed on close")


def test_a_refused_stream_request_gets_a_well_framed_json_error(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(redis_server.url).wait_ready()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(b"GET /api/sse?events=bad%21name HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = _read_until_closed(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), answer[:300]
    assert b"transfer-encoding" not in head.lower()  # never both framings at once
    assert b"content-length: %d" % len(body) in head.lower()
    assert b'"error"' in body
