"""Authentication and the per-client limit on the in-process app (in-memory source, no Redis).

Bearer and cookie tokens need no Redis; tickets are covered against real
redis-server processes in tests/integration/test_auth_processes.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest

from connectome_core.settings import load_settings
from connectome_sse.localrun.redis_server import RedisServer
from sse_gateway.app import GatewayApp, create_app
from sse_gateway.settings import GatewaySettings
from sse_gateway.source import MemorySource
from tests.support.asgi import ASGIClient, lifespan

SECRET = "a-test-secret-of-at-least-32-bytes!"


def make_token(ttl: float = 60, **claims: Any) -> str:
    return jwt.encode({"exp": time.time() + ttl, **claims}, SECRET, algorithm="HS256")


def bearer(token: str) -> list[tuple[bytes, bytes]]:
    return [(b"host", b"test"), (b"authorization", f"Bearer {token}".encode())]


@pytest.fixture
async def source() -> MemorySource:
    return MemorySource()


@pytest.fixture
async def app(source: MemorySource) -> AsyncIterator[GatewayApp]:
    settings = load_settings(
        GatewaySettings,
        {
            "SSE_PING_INTERVAL": "0.05",
            "SSE_AUTH_SECRET": SECRET,
            "SSE_MAX_STREAMS_PER_CLIENT": "2",
            # A Redis nobody listens on: nothing here may need one.
            "REDIS_URL": "redis://127.0.0.1:9/0",
        },
    )
    app = create_app(settings, source=source)
    async with lifespan(app):
        yield app


def event_names(client: ASGIClient) -> list[str]:
    return [e.event for e in client.events() if e.event != "ping"]


async def refused(app: GatewayApp, **kwargs: Any) -> ASGIClient:
    client = await ASGIClient(app, **kwargs).response()
    assert client.status is not None and client.status >= 400
    body = json.loads(client.body)
    assert body["status"] == client.status and body["error"]
    return client


async def test_no_credentials_401_json_with_www_authenticate(app: GatewayApp) -> None:
    client = await refused(app)
    assert client.status == 401
    assert client.headers["www-authenticate"] == 'Bearer realm="sse"'
    assert "credentials needed" in json.loads(client.body)["error"]


@pytest.mark.parametrize(
    ("name", "token"),
    [
        pytest.param(name, token, id=name)  # ids by name: a token holds the time
        for name, token in [
            ("expired", jwt.encode({"exp": time.time() - 1}, SECRET, algorithm="HS256")),
            ("wrong key", jwt.encode({"exp": time.time() + 60}, "k" * 32, algorithm="HS256")),
            ("alg none", jwt.encode({"exp": time.time() + 60}, "", algorithm="none")),
            ("missing exp", jwt.encode({"sub": "x"}, SECRET, algorithm="HS256")),
            ("events a string", make_token(events="a,b")),
            ("oversized", make_token(pad="x" * 9000)),
        ]
    ],
)
async def test_bad_tokens_401_json_on_the_stream(app: GatewayApp, name: str, token: str) -> None:
    for headers in (bearer(token), [(b"cookie", f"sse_token={token}".encode())]):
        client = await refused(app, headers=headers)
        assert client.status == 401, name
        assert 'error="invalid_token"' in client.headers["www-authenticate"]


async def test_events_claim_narrows_the_stream(app: GatewayApp, source: MemorySource) -> None:
    source.publish("sse:a", b"snap-a", snapshot=True)
    source.publish("sse:b", b"snap-b", snapshot=True)
    client = ASGIClient(app, headers=bearer(make_token(events=["a"]))).start()
    await client.wait_until(lambda c: b"snap-a" in c.body)
    source.publish("sse:b", b"live-b")
    source.publish("sse:a", b"live-a")
    await client.wait_until(lambda c: b"live-a" in c.body and b"event: ping" in c.body)
    assert event_names(client) == ["a", "a"]  # gateway-made pings flow too
    assert b"snap-b" not in client.body and b"live-b" not in client.body
    await client.disconnect()


async def test_events_outside_the_claim_403(app: GatewayApp) -> None:
    client = await refused(app, query="events=a,b", headers=bearer(make_token(events=["a"])))
    assert client.status == 403
    assert "'b'" in json.loads(client.body)["error"]
    ok = ASGIClient(app, query="events=a", headers=bearer(make_token(events=["a", "b"]))).start()
    await ok.wait_until(lambda c: c.status == 200)
    await ok.disconnect()


async def test_the_cookie_is_enough(app: GatewayApp, source: MemorySource) -> None:
    source.publish("sse:a", b"snap-a", snapshot=True)
    cookie = f"theme=dark; sse_token={make_token()}".encode()
    client = ASGIClient(app, headers=[(b"cookie", cookie)]).start()
    await client.wait_until(lambda c: b"snap-a" in c.body)
    assert client.status == 200
    await client.disconnect()


async def test_an_expiring_token_ends_the_stream_at_exp(app: GatewayApp) -> None:
    exp = time.time() + 1.5
    token = jwt.encode({"exp": exp}, SECRET, algorithm="HS256")
    client = ASGIClient(app, headers=bearer(token)).start()
    await client.wait_until(lambda c: c.status == 200)
    await client.wait_until(lambda c: c.complete, timeout=5)
    assert abs(time.time() - exp) < 1.0
    assert client.task is not None
    await client.disconnect()


async def test_open_routes_stay_open(app: GatewayApp) -> None:
    for path in ("/healthz", "/metrics", "/"):
        client = await ASGIClient(app, path=path).response()
        assert client.status == 200, path


async def test_per_client_limit_429_then_freed(app: GatewayApp) -> None:
    token = make_token()
    streams = [ASGIClient(app, headers=bearer(token)).start() for _ in range(2)]
    for stream in streams:
        await stream.wait_until(lambda c: c.status == 200)
    third = await refused(app, headers=bearer(token))
    assert third.status == 429
    assert third.headers["retry-after"] == "3"
    assert "127.0.0.1" in json.loads(third.body)["error"]
    other = ASGIClient(app, headers=bearer(token))
    other.scope["client"] = ("127.0.0.2", 40000)
    other.start()
    await other.wait_until(lambda c: c.status == 200)
    await streams[0].disconnect()
    again = ASGIClient(app, headers=bearer(token)).start()
    await again.wait_until(lambda c: c.status == 200)
    metrics = (await ASGIClient(app, path="/metrics").response()).body.decode()
    assert 'sse_streams_rejected_total{reason="per_client"} 1.0' in metrics
    assert 'sse_streams_rejected_total{reason="unauthorized"}' not in metrics
    for stream in [streams[1], other, again]:
        await stream.disconnect()


async def test_refusals_are_counted_by_reason(app: GatewayApp) -> None:
    await refused(app)
    await refused(app, query="events=z", headers=bearer(make_token(events=["a"])))
    metrics = (await ASGIClient(app, path="/metrics").response()).body.decode()
    assert 'sse_streams_rejected_total{reason="unauthorized"} 1.0' in metrics
    assert 'sse_streams_rejected_total{reason="forbidden"} 1.0' in metrics


async def test_with_auth_off_the_ticket_route_says_so(source: MemorySource) -> None:
    app = create_app(load_settings(GatewaySettings, {}), source=source)
    async with lifespan(app):
        client = await refused(app, path="/api/sse/ticket", method="POST")
        assert client.status == 404
        assert "SSE_AUTH_SECRET" in json.loads(client.body)["error"]


async def test_tickets_with_redis_down_answer_503_at_once(app: GatewayApp) -> None:
    # REDIS_URL names a port nobody listens on. The ticket client answers at once: a
    # client must not hang on redis-py's default backoff.
    started = time.monotonic()
    minted = await refused(app, path="/api/sse/ticket", method="POST", headers=bearer(make_token()))
    assert minted.status == 503 and "retry-after" in minted.headers
    redeemed = await refused(app, query="ticket=" + "x" * 43)
    assert redeemed.status == 503 and "retry-after" in redeemed.headers
    assert time.monotonic() - started < 2.0  # 8 s with redis-py's default retry


async def test_a_page_on_another_origin_gets_a_ticket_and_streams(
    source: MemorySource, redis_server: RedisServer
) -> None:
    env = {"SSE_AUTH_SECRET": SECRET, "SSE_CORS_ORIGINS": "https://app.example"}
    app = create_app(
        load_settings(GatewaySettings, {**env, "REDIS_URL": redis_server.url}), source=source
    )
    origin = (b"origin", b"https://app.example")
    async with lifespan(app):
        # fetch(url, {method: "POST", headers: {Authorization: ...}}) asks first.
        preflight = ASGIClient(
            app,
            path="/api/sse/ticket",
            method="OPTIONS",
            headers=[
                (b"host", b"test"),
                origin,
                (b"access-control-request-method", b"POST"),
                (b"access-control-request-headers", b"authorization"),
            ],
        )
        await preflight.response()
        assert preflight.status == 200
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        methods = preflight.headers["access-control-allow-methods"].split(", ")
        assert {"GET", "HEAD", "POST", "OPTIONS"} <= set(methods)
        allowed = preflight.headers["access-control-allow-headers"].lower().split(", ")
        assert {"authorization", "last-event-id"} <= set(allowed)

        minted = ASGIClient(
            app, path="/api/sse/ticket", method="POST", headers=[*bearer(make_token()), origin]
        )
        await minted.response()
        assert minted.status == 201
        assert minted.headers["access-control-allow-origin"] == "https://app.example"
        ticket = json.loads(minted.body)["ticket"]

        stream = ASGIClient(app, query=f"ticket={ticket}", headers=[(b"host", b"test"), origin])
        stream.start()
        await stream.wait_until(lambda c: c.status == 200)
        assert stream.headers["access-control-allow-origin"] == "https://app.example"
        await stream.disconnect()
