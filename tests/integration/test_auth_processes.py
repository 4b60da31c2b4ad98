"""Authenticated streams on real gateway processes sharing a real redis-server.

A ticket minted on one gateway is good once on any gateway; an expired ticket
is refused; a stream ends when its token expires; one address past
``SSE_MAX_STREAMS_PER_CLIENT`` gets 429 while another still streams; and the
logs of a run that used every kind of credential hold none of them.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest

from connectome_sse.localrun.gateway import GatewayProcess
from connectome_sse.localrun.processes import console_script
from connectome_sse.localrun.redis_server import RedisServer
from connectome_sse.localrun.wait import wait_for
from tests.conftest import StartGateway
from tests.support.raw_stream import RawStream

pytestmark = pytest.mark.integration

SECRET = "integration-secret-0123456789abcdef"
AUTH_ENV = {"SSE_AUTH_SECRET": SECRET, "SSE_LOG_LEVEL": "debug"}


def token(ttl: float = 120, **claims: object) -> str:
    return jwt.encode({"exp": time.time() + ttl, **claims}, SECRET, algorithm="HS256")


def mint_ticket(gateway: GatewayProcess, bearer: str) -> str:
    answer = httpx.post(
        gateway.url + "/api/sse/ticket", headers={"Authorization": f"Bearer {bearer}"}, timeout=5
    )
    assert answer.status_code == 201, answer.text
    assert answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert isinstance(body["expires_in"], int) and body["expires_in"] > 0
    ticket = body["ticket"]
    assert isinstance(ticket, str) and len(ticket) >= 22  # >= 128 bits, URL-safe base64
    return str(ticket)


def refused(gateway: GatewayProcess, query: str = "", **headers: str) -> httpx.Response:
    """A stream request that must be refused (a refusal is a short JSON answer)."""
    answer = httpx.get(f"{gateway.url}/api/sse{query}", headers=headers, timeout=5)
    assert answer.status_code >= 400, answer.status_code
    assert answer.json()["status"] == answer.status_code
    return answer


@pytest.fixture
def pair(redis_server: RedisServer, start_gateway: StartGateway) -> Iterator[list[GatewayProcess]]:
    gateways = [start_gateway(redis_server.url, env=AUTH_ENV) for _ in range(2)]
    for gateway in gateways:
        gateway.wait_ready()
    yield gateways


def test_a_ticket_minted_on_a_works_once_on_b(
    pair: list[GatewayProcess], redis_server: RedisServer
) -> None:
    a, b = pair
    ticket = mint_ticket(a, token(sub="ada", events=["connectome_health"]))
    with redis_server.client() as client:
        keys = [key.decode() for key in client.keys("sse:ticket:*")]
        assert len(keys) == 1 and ticket not in keys[0]
        assert 0 < client.pttl(keys[0]) <= 30_000
        assert ticket.encode() not in (client.get(keys[0]) or b"")

    stream = RawStream(b.port, f"/api/sse?ticket={ticket}")
    try:
        assert stream.status == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        stream.read_until(lambda s: b"event: ping" in s.body, what="a ping on B")
    finally:
        stream.close()

    for gateway in (a, b):
        answer = refused(gateway, f"?ticket={ticket}")
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert "already used" in answer.json()["error"]


def test_a_head_with_a_ticket_answers_like_the_get_and_leaves_the_ticket(
    pair: list[GatewayProcess],
) -> None:
    a, b = pair
    ticket = mint_ticket(a, token())
    head = httpx.head(f"{b.url}/api/sse?ticket={ticket}", timeout=5)
    assert head.status_code == 200 and head.headers["content-type"].startswith("text/event-")
    stream = RawStream(a.port, f"/api/sse?ticket={ticket}")  # the GET after it still works
    try:
        assert stream.status == 200
    finally:
        stream.close()
    assert httpx.head(f"{b.url}/api/sse?ticket={ticket}", timeout=5).status_code == 401


def test_a_ticket_carries_the_token_events(pair: list[GatewayProcess]) -> None:
    a, b = pair
    ticket = mint_ticket(a, token(events=["connectome_health"]))
    assert refused(b, f"?ticket={ticket}&events=other").status_code == 403
    # The ticket was taken by the refused attempt: single use means single use.
    assert refused(a, f"?ticket={ticket}").status_code == 401


def test_the_ticket_route_wants_a_token_not_a_ticket(pair: list[GatewayProcess]) -> None:
    a, _ = pair
    ticket = mint_ticket(a, token())
    answer = httpx.post(f"{a.url}/api/sse/ticket?ticket={ticket}", timeout=5)
    assert answer.status_code == 401
    expired = httpx.post(
        f"{a.url}/api/sse/ticket",
        headers={"Authorization": f"Bearer {token(ttl=-5)}"},
        timeout=5,
    )
    assert expired.status_code == 401 and "expired" in expired.json()["error"]
    by_cookie = httpx.post(
        f"{a.url}/api/sse/ticket", headers={"Cookie": f"sse_token={token()}"}, timeout=5
    )
    assert by_cookie.status_code == 201


def test_an_expired_ticket_is_401(redis_server: RedisServer, start_gateway: StartGateway) -> None:
    gateway = start_gateway(redis_server.url, env={**AUTH_ENV, "SSE_TICKET_TTL": "1"})
    gateway.wait_ready()
    ticket = mint_ticket(gateway, token())
    with redis_server.client() as client:
        wait_for(lambda: not client.keys("sse:ticket:*"), timeout=10, what="the ticket to expire")
    answer = refused(gateway, f"?ticket={ticket}")
    assert answer.status_code == 401


def test_an_expiring_token_ends_the_open_stream_at_exp(pair: list[GatewayProcess]) -> None:
    a, b = pair
    exp = time.time() + 3
    by_header = RawStream(
        a.port, headers=[("Authorization", f"Bearer {jwt.encode({'exp': exp}, SECRET)}")]
    )
    ticket = mint_ticket(a, jwt.encode({"exp": exp}, SECRET))
    by_ticket = RawStream(b.port, f"/api/sse?ticket={ticket}")
    try:
        assert by_header.status == 200 and by_ticket.status == 200
        for stream in (by_header, by_ticket):
            ended = stream.wait_closed(timeout=10)
            assert abs(ended - exp) <= 1.0, ended - exp
    finally:
        by_header.close()
        by_ticket.close()
    # Reconnecting with the same credentials is refused: the client must bring new ones.
    assert refused(a, Authorization=f"Bearer {jwt.encode({'exp': exp}, SECRET)}").status_code == 401


def test_per_client_limit_429_for_one_address_not_another(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    limit = 3
    gateway = start_gateway(redis_server.url, env={"SSE_MAX_STREAMS_PER_CLIENT": str(limit)})
    gateway.wait_ready()
    # A client that is not a trusted proxy cannot pick its address with the header.
    spoof = [("X-Forwarded-For", "203.0.113.9")]
    mine = [RawStream(gateway.port, source="127.0.0.2", headers=spoof) for _ in range(limit)]
    others: list[RawStream] = []
    try:
        assert [s.status for s in mine] == [200] * limit
        extra = RawStream(gateway.port, source="127.0.0.2")
        body = extra.json()
        extra.close()
        assert extra.status == 429
        assert int(extra.headers["retry-after"]) >= 1
        assert extra.headers["content-type"] == "application/json"
        assert isinstance(body, dict)
        assert body["status"] == 429 and "127.0.0.2" in body["error"]

        others = [RawStream(gateway.port, source="127.0.0.3") for _ in range(limit)]
        assert [s.status for s in others] == [200] * limit

        mine.pop().close()  # a closed stream frees its slot
        wait_for(
            lambda: gateway.metric("sse_open_streams") == 2 * limit - 1,
            what="the gateway to see the stream close",
        )
        again = RawStream(gateway.port, source="127.0.0.2")
        mine.append(again)
        assert again.status == 200
        assert gateway.metric("sse_streams_rejected_total") == 1
    finally:
        for stream in mine + others:
            stream.close()


def test_logs_hold_no_token_ticket_cookie_or_secret(
    pair: list[GatewayProcess], tmp_path: Path
) -> None:
    a, b = pair
    secrets = {"secret": SECRET}
    secrets["bearer"] = bearer = token(sub="bearer-user")
    secrets["cookie"] = cookie = token(sub="cookie-user")
    secrets["minting token"] = minting = token(sub="ticket-user")
    secrets["ticket"] = ticket = mint_ticket(a, minting)
    secrets["replayed ticket"] = ticket
    secrets["bad token"] = bad = jwt.encode({"exp": time.time() + 60}, "x" * 32)
    secrets["unknown ticket"] = unknown = "unknown-ticket-value-0123456789abcdef"

    streams = [
        RawStream(a.port, headers=[("Authorization", f"Bearer {bearer}")]),
        RawStream(b.port, headers=[("Cookie", f"theme=dark; sse_token={cookie}")]),
        RawStream(b.port, f"/api/sse?events=connectome_health&ticket={ticket}"),
    ]
    try:
        assert [s.status for s in streams] == [200, 200, 200]
        refused(a, f"?ticket={ticket}")
        refused(a, f"?lastEventId=1&ticket={unknown}")
        refused(b, Authorization=f"Bearer {bad}")
        refused(b, Cookie=f"sse_token={bad}")
        refused(b, "?events=bad%20name", Authorization=f"Bearer {bad}")
    finally:
        for stream in streams:
            stream.close()
    for gateway in (a, b):
        gateway.stop()
    logs = a.log() + b.log()
    assert "refused 401" in logs  # the refusals were logged, just without credentials
    assert "ticket=***" in logs
    for name, value in secrets.items():
        assert value not in logs, f"the {name} is in the gateway logs"
        # Nor any of a JWT's parts (its signature alone is a secret-derived value).
        for part in value.split("."):
            if len(part) > 16:
                assert part not in logs, f"part of the {name} is in the gateway logs"


async def test_a_burst_of_tickets_queues_instead_of_failing(redis_server: RedisServer) -> None:
    """Regression: 8 pooled connections and 200 concurrent mints gave "Too many connections"."""
    from connectome_core.settings import load_settings
    from connectome_core.tokens import Grant
    from sse_gateway.access import Access
    from sse_gateway.settings import GatewaySettings

    settings = load_settings(
        GatewaySettings, {"REDIS_URL": redis_server.url, "SSE_AUTH_SECRET": SECRET}
    )
    access = Access(settings)
    assert access.tickets is not None
    tickets = access.tickets
    try:
        grant = Grant("burst", None, time.time() + 60)
        minted = await asyncio.gather(*(tickets.mint(grant) for _ in range(200)))
        taken = await asyncio.gather(*(tickets.take(t) for t in minted))
        assert taken == [grant] * 200
        with redis_server.client() as client:
            named = [c for c in client.client_list() if c["name"] == "sse-gateway-tickets"]
            assert 1 <= len(named) <= 8
    finally:
        await access.close()


def test_listen_with_a_token_streams_until_it_expires(
    pair: list[GatewayProcess], redis_server: RedisServer
) -> None:
    a, _ = pair
    with redis_server.client() as client:
        client.set("sse:last:connectome_health", '{"status":{"state":"OK"}}')
    listen = [*console_script("connectome-sse"), "listen", a.url, "--json"]
    ok = subprocess.run(
        [*listen, "--count", "1", "--token", token(events=["connectome_health"])],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["event"] == "connectome_health"

    short = jwt.encode({"exp": time.time() + 2}, SECRET)
    ends = subprocess.run([*listen, "--token", short], capture_output=True, text=True, timeout=30)
    # The stream ended at exp; the reconnection with the same token is refused: exit 1.
    assert ends.returncode == 1
    assert "401" in ends.stderr and "expired" in ends.stderr
    assert short not in ends.stderr + ends.stdout
