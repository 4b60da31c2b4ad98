"""A real gateway's log: one line per stream open and one per close, with no secret.

Opening: peer, subject, selected events, how it opened. Closing: peer,
subject, duration, bytes and events sent, why it ended. A reconnect storm
cannot flood the log with them.
"""

from __future__ import annotations

import re
import signal
import time

from connectome_sse.localrun.gateway import GatewayProcess
from connectome_sse.localrun.redis_server import RedisServer
from connectome_sse.localrun.wait import wait_for
from tests.conftest import StartGateway
from tests.support.raw_stream import RawStream
from tests.support.tokens import AUTH_ENV, SECRET, mint_ticket, token

LINE = re.compile(r"sse_gateway\.stream: stream (opened|closed) (.*)$", re.MULTILINE)


def stream_lines(gateway: GatewayProcess, kind: str) -> list[dict[str, str]]:
    """The ``key=value`` fields of each ``stream opened``/``stream closed`` line."""
    return [
        dict(field.split("=", 1) for field in rest.split())
        for found, rest in LINE.findall(gateway.log())
        if found == kind
    ]


def peer_of(stream: RawStream) -> str:
    host, port = stream.sock.getsockname()[:2]
    return f"{host}:{port}"


def payload_bytes(chunked: bytes) -> int:
    """The SSE bytes in a chunked body (the last chunk may be cut short)."""
    total, rest = 0, chunked
    while b"\r\n" in rest:
        size, _, rest = rest.partition(b"\r\n")
        length = int(size, 16)
        total += min(length, len(rest))
        rest = rest[length + 2 :]
    return total


def line_of(gateway: GatewayProcess, kind: str, peer: str) -> dict[str, str]:
    def found() -> dict[str, str] | None:
        return next((f for f in stream_lines(gateway, kind) if f.get("peer") == peer), None)

    line = wait_for(found, what=f"the {kind} line of {peer}")
    assert line is not None
    return line


def test_stream_opens_and_closes_are_logged_with_their_subject_and_no_credential(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(
        redis_server.url, env={**AUTH_ENV, "SSE_LOG_LEVEL": "info", "SSE_PING_INTERVAL": "0.2"}
    ).wait_ready()
    bearer = token(sub="alice", events=["x", "y"])
    by_bearer = RawStream(
        gateway.port, "/api/sse?events=x", headers=[("Authorization", f"Bearer {bearer}")]
    )
    ticket = mint_ticket(gateway, token(sub="bob"))
    by_ticket = RawStream(
        gateway.port, f"/api/sse?ticket={ticket}", headers=[("Last-Event-ID", "not-known")]
    )
    cookie = token(ttl=3)  # no subject; ends when it expires
    by_cookie = RawStream(gateway.port, "/api/sse", headers=[("Cookie", f"sse_token={cookie}")])
    streams = [by_bearer, by_ticket, by_cookie]
    try:
        assert [s.status for s in streams] == [200, 200, 200]
        for stream in streams:
            stream.read_until(lambda s: b"event: ping\n" in s.body, what="a ping")
        peers = [peer_of(s) for s in streams]
        opened = [line_of(gateway, "opened", peer) for peer in peers]
        assert opened[0] == {"peer": peers[0], "sub": "alice", "events": "x", "opening": "snapshot"}
        assert opened[1] == {"peer": peers[1], "sub": "bob", "events": "*", "opening": "resync"}
        assert opened[2] == {"peer": peers[2], "sub": "-", "events": "*", "opening": "snapshot"}

        by_cookie.wait_closed(timeout=10)
        expired = line_of(gateway, "closed", peers[2])
        assert (expired["sub"], expired["reason"]) == ("-", "expired")
        by_bearer.close()
        left = line_of(gateway, "closed", peers[0])
    finally:
        for stream in streams:
            stream.close()
    assert left["sub"] == "alice" and left["reason"] == "client"
    assert float(left["duration"].rstrip("s")) > 0
    assert int(left["events"]) >= 1  # pings, at least one
    assert int(left["bytes"]) >= payload_bytes(by_bearer.body) > 0
    log = gateway.log()
    for secret in (bearer, ticket, cookie, SECRET):
        assert secret not in log


def test_a_drained_stream_says_so(redis_server: RedisServer, start_gateway: StartGateway) -> None:
    gateway = start_gateway(redis_server.url, env={"SSE_PING_INTERVAL": "600"}).wait_ready()
    held = RawStream(gateway.port)
    try:
        peer = peer_of(held)
        gateway.signal(signal.SIGTERM)
        held.wait_closed()
        drained = line_of(gateway, "closed", peer)
    finally:
        held.close()
    assert drained["reason"] == "drain"


def test_a_reconnect_storm_is_counted_not_logged(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(redis_server.url, env={"SSE_PING_INTERVAL": "600"}).wait_ready()
    storm = 100
    started = time.monotonic()
    for _ in range(storm):  # well past 20 lines a second
        RawStream(gateway.port).close()
    wait_for(lambda: gateway.metric("sse_open_streams") == 0, what="the storm's streams closed")
    gateway.signal(signal.SIGTERM)  # what is still held back is counted at the end
    assert gateway.wait(10) in (0, -signal.SIGTERM)
    seconds = time.monotonic() - started
    log = gateway.log()
    logged = len(LINE.findall(log))
    suppressed = sum(int(n) for n in re.findall(r"(\d+) stream lines suppressed", log))
    print(f"{2 * storm} stream lines: {logged} logged, {suppressed} counted")
    assert logged <= 20 * (int(seconds) + 2)  # the budget, however long the storm took
    assert logged + suppressed == 2 * storm  # every open and close, logged or counted
