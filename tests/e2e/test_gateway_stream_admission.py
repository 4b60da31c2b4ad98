"""Who gets a stream on a real gateway: the caps under concurrent ticketed opens, and
the gateway's own events in ``?events=`` whatever the token grants.

Taking a ticket awaits Redis (``GETDEL``), so forty requests sent at once are
all in that await together: a cap checked before it and counted after it
lets every one of them through.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import httpx

from connectome_sse.localrun.redis_server import RedisServer
from connectome_sse.localrun.wait import wait_for
from tests.conftest import StartGateway
from tests.support.raw_stream import RawStream
from tests.support.tokens import AUTH_ENV, mint_ticket, token

OPENS = 40
QUIET = {**AUTH_ENV, "SSE_PING_INTERVAL": "600"}


Head = tuple[int, dict[str, str]]


@contextlib.contextmanager
def open_all_at_once(port: int, tickets: list[str]) -> Iterator[list[Head]]:
    """Connect every socket first, then send every request, then read each head; the
    sockets stay open for the block."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in tickets]
    try:
        for sock, ticket in zip(socks, tickets, strict=True):
            sock.sendall(f"GET /api/sse?ticket={ticket} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
        heads = []
        for sock in socks:
            received = b""
            while b"\r\n\r\n" not in received:
                chunk = sock.recv(65536)
                assert chunk, f"closed before the head: {received!r}"
                received += chunk
            lines = received.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
            headers = {
                name.strip().lower(): value.strip()
                for name, value in (line.split(":", 1) for line in lines[1:])
            }
            heads.append((int(lines[0].split(" ")[1]), headers))
        yield heads
    finally:
        for sock in socks:
            sock.close()


def mint_many(gateway: object, count: int) -> list[str]:
    # Each from its own address and subject: ticket rates are per address and subject.
    return [
        mint_ticket(gateway, token(sub=f"user{n}"), source=f"127.0.0.{10 + n}")  # type: ignore[arg-type]
        for n in range(count)
    ]


def test_regression_concurrent_ticketed_opens_never_pass_the_stream_cap(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    cap = 5
    gateway = start_gateway(
        redis_server.url, env={**QUIET, "SSE_MAX_CONNECTIONS": str(cap)}
    ).wait_ready()
    tickets = mint_many(gateway, OPENS)
    with open_all_at_once(gateway.port, tickets) as heads:
        statuses = sorted(status for status, _ in heads)
        opened = gateway.metric("sse_open_streams")
    assert statuses == [200] * cap + [503] * (OPENS - cap), (
        f"{statuses.count(200)} of {OPENS} opened (limit {cap}); sse_open_streams {opened}"
    )
    assert opened == cap
    assert all(headers.get("retry-after") for status, headers in heads if status == 503)
    assert gateway.metric("sse_streams_rejected_total") == OPENS - cap
    wait_for(lambda: gateway.metric("sse_open_streams") == 0, what="every stream closed")


def test_concurrent_ticketed_opens_from_one_address_hold_its_limit(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    per_client = 3
    gateway = start_gateway(
        redis_server.url, env={**QUIET, "SSE_MAX_STREAMS_PER_CLIENT": str(per_client)}
    ).wait_ready()
    tickets = mint_many(gateway, 20)
    with open_all_at_once(gateway.port, tickets) as heads:
        statuses = sorted(status for status, _ in heads)
    assert statuses == [200] * per_client + [429] * (20 - per_client), (
        f"{statuses.count(200)} of 20 opened (limit {per_client})"
    )


def test_the_gateway_s_own_events_may_be_selected_whatever_the_token_grants(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(redis_server.url, env={**AUTH_ENV, "SSE_PING_INTERVAL": "0.2"})
    gateway.wait_ready()
    bearer = token(events=["connectome_health"])
    query = "/api/sse?events=connectome_health,ping,resync,health_stale,probe"
    stream = RawStream(gateway.port, query, headers=[("Authorization", f"Bearer {bearer}")])
    try:
        assert stream.status == 200, stream.body
        stream.read_until(lambda s: b"event: ping\n" in s.body, what="a ping")
        redis_server.client().publish("sse:connectome_health", '{"status": "OK"}')
        stream.read_until(lambda s: b"event: connectome_health\n" in s.body, what="the health")
    finally:
        stream.close()
    # Still only what the token grants among channel events.
    refused = httpx.get(
        f"{gateway.url}/api/sse?events=ping,other",
        headers={"Authorization": f"Bearer {bearer}"},
        timeout=5,
    )
    assert refused.status_code == 403
    assert refused.json()["error"] == "the token does not grant event type 'other'"
