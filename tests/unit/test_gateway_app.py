"""The gateway app driven in-process with the in-memory source: the HTTP contract end to end."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from connectome_core.settings import load_settings
from sse_gateway.app import GatewayApp, create_app
from sse_gateway.settings import GatewaySettings
from sse_gateway.source import MemorySource
from tests.support.asgi import ASGIClient, lifespan


def make_settings(**env: str) -> GatewaySettings:
    return load_settings(GatewaySettings, {"SSE_PING_INTERVAL": "0.05", **env})


@pytest.fixture
async def source() -> MemorySource:
    return MemorySource()


@pytest.fixture
async def app(source: MemorySource) -> AsyncIterator[GatewayApp]:
    app = create_app(make_settings(SSE_MAX_CONNECTIONS="3"), source=source)
    async with lifespan(app):
        yield app


def names(client: ASGIClient) -> list[str]:
    return [e.event for e in client.events() if e.event != "ping"]


async def test_stream_opens_with_retry_then_snapshot_then_live(
    app: GatewayApp, source: MemorySource
) -> None:
    source.publish("sse:connectome_health", b'{"n":0}', snapshot=True)
    client = ASGIClient(app).start()
    await client.wait_until(lambda c: b'{"n":0}' in c.body)
    source.publish("sse:connectome_health", b'{"n":1}')
    await client.wait_until(lambda c: b'{"n":1}' in c.body)
    assert client.status == 200
    assert client.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert client.headers["cache-control"] == "no-cache"
    assert client.headers["x-accel-buffering"] == "no"
    assert bytes(client.body).startswith(b"retry: 3000\n\n")
    health = [e.data for e in client.events() if e.event == "connectome_health"]
    assert health == ['{"n":0}', '{"n":1}']
    await client.disconnect()


async def test_events_filter_selects_types_and_snapshots(
    app: GatewayApp, source: MemorySource
) -> None:
    source.publish("sse:a", b"snap-a", snapshot=True)
    source.publish("sse:b", b"snap-b", snapshot=True)
    client = ASGIClient(app, query="events=a,c").start()
    await client.wait_until(lambda c: b"snap-a" in c.body)
    for channel in ("sse:a", "sse:b", "sse:c"):
        source.publish(channel, channel.encode())
    await client.wait_until(lambda c: b"sse:c" in c.body)
    assert names(client) == ["a", "a", "c"]
    await client.disconnect()


async def test_pings_carry_time_and_redis_state(app: GatewayApp, source: MemorySource) -> None:
    client = ASGIClient(app, query="events=nothing").start()
    await client.wait_until(lambda c: b"event: ping" in c.body)
    ping = json.loads(next(e.data for e in client.events() if e.event == "ping"))
    assert ping["redis"] == "up" and isinstance(ping["ts"], float)
    source.set_up(False)
    await client.wait_until(lambda c: b'"redis": "down"' in c.body)
    await client.disconnect()


@pytest.mark.parametrize("query", ["events=", "events=a%0Ab", "events=a,,b", "events=" + "x" * 65])
async def test_malformed_events_get_400_json(app: GatewayApp, query: str) -> None:
    client = await ASGIClient(app, query=query).response()
    assert client.status == 400
    assert "events" in json.loads(client.body)["error"]


async def test_other_methods_get_405(app: GatewayApp) -> None:
    client = await ASGIClient(app, method="POST").response()
    assert client.status == 405
    assert json.loads(client.body)["status"] == 405


async def test_past_max_connections_503_with_retry_after(app: GatewayApp) -> None:
    streams = [ASGIClient(app).start() for _ in range(3)]
    for stream in streams:
        await stream.wait_until(lambda c: c.status == 200)
    refused = await ASGIClient(app).response()
    assert refused.status == 503
    assert refused.headers["retry-after"] == "3"
    assert "too many" in json.loads(refused.body)["error"]
    await streams[0].disconnect()
    again = ASGIClient(app).start()
    await again.wait_until(lambda c: c.status == 200)
    for stream in [*streams[1:], again]:
        await stream.disconnect()


async def test_bad_messages_are_dropped_and_counted(app: GatewayApp, source: MemorySource) -> None:
    client = ASGIClient(app).start()
    await client.wait_until(lambda c: c.status == 200)
    source.publish("sse:x", b"\xff\xfe not utf-8")
    source.publish("sse:bad name", b"{}")
    source.publish("sse:x", b"x" * 1_048_577)
    source.publish("sse:x", b"fine")
    await client.wait_until(lambda c: b"fine" in c.body)
    assert names(client) == ["x"]
    metrics = (await ASGIClient(app, path="/metrics").response()).body.decode()
    for reason in ("invalid_utf8", "bad_event_name", "too_large"):
        assert f'sse_events_dropped_total{{reason="{reason}"}} 1.0' in metrics
    assert "sse_open_streams 1.0" in metrics
    await client.disconnect()


async def test_readyz_follows_redis_and_drain(app: GatewayApp, source: MemorySource) -> None:
    assert (await ASGIClient(app, path="/readyz").response()).status == 200
    assert (await ASGIClient(app, path="/healthz").response()).status == 200
    source.set_up(False)
    assert (await ASGIClient(app, path="/readyz").response()).status == 503
    source.set_up(True)
    stream = ASGIClient(app).start()
    await stream.wait_until(lambda c: c.status == 200)
    app.gateway.drain()
    await stream.wait_until(lambda c: c.complete)
    assert b"retry: " in bytes(stream.body)[len(b"retry: 3000\n\n") :]
    ready = await ASGIClient(app, path="/readyz").response()
    assert ready.status == 503 and json.loads(ready.body)["reason"] == "draining"
    assert (await ASGIClient(app).response()).status == 503
    await stream.disconnect()


async def test_snapshots_are_resent_after_the_source_reconnects(
    app: GatewayApp, source: MemorySource
) -> None:
    source.publish("sse:h", b"v1", snapshot=True)
    client = ASGIClient(app, query="events=h").start()
    await client.wait_until(lambda c: b"v1" in c.body)
    source.set_up(False)
    source.snapshots["h"] = b"v2-set-during-outage"
    source.set_up(True)
    await client.wait_until(lambda c: b"v2-set-during-outage" in c.body)
    await client.disconnect()


async def test_cors_headers_only_for_allowed_origins(source: MemorySource) -> None:
    app = create_app(make_settings(SSE_CORS_ORIGINS="https://ok.example"), source=source)
    async with lifespan(app):
        for origin, allowed in (("https://ok.example", True), ("https://evil.example", False)):
            client = ASGIClient(app, path="/healthz", headers=[(b"origin", origin.encode())])
            await client.response()
            assert ("access-control-allow-origin" in client.headers) is allowed
    plain = create_app(make_settings(), source=source)
    async with lifespan(plain):
        client = ASGIClient(plain, path="/healthz", headers=[(b"origin", b"https://ok.example")])
        await client.response()
        assert not any(h.startswith("access-control") for h in client.headers)


async def test_dashboard_is_served_at_root(app: GatewayApp) -> None:
    client = await ASGIClient(app, path="/").response()
    assert client.status == 200
    assert client.headers["content-type"].startswith("text/html")
    assert b"EventSource" in client.body or b"<html" in client.body.lower()


async def test_a_bad_snapshot_is_skipped_and_counted(app: GatewayApp, source: MemorySource) -> None:
    source.snapshots["bad"] = b"\xff not utf-8"
    source.snapshots["good"] = b"ok"
    client = ASGIClient(app).start()
    await client.wait_until(lambda c: b"data: ok" in c.body)
    assert names(client) == ["good"]
    metrics = (await ASGIClient(app, path="/metrics").response()).body.decode()
    assert 'sse_events_dropped_total{reason="invalid_utf8"} 1.0' in metrics
    await client.disconnect()


async def test_regression_head_gets_the_stream_headers_and_no_stream(app: GatewayApp) -> None:
    """Starlette adds HEAD to GET routes; it once opened a counted, endless stream."""
    for _ in range(4):  # more than SSE_MAX_CONNECTIONS=3
        client = await ASGIClient(app, method="HEAD").response()
        assert client.status == 200
        assert client.headers["content-type"].startswith("text/event-stream")
        assert bytes(client.body) == b""
    assert app.gateway.open_streams == 0
