"""A real gateway process relaying a real redis-server's PUBLISH to many real HTTP clients."""

from __future__ import annotations

import json

from connectome_sse.localrun.gateway import gateway_connections, gateway_subscriptions
from connectome_sse.localrun.redis_server import RedisServer
from connectome_sse.localrun.sse_clients import open_streams
from connectome_sse.localrun.wait import until
from tests.conftest import StartGateway

CLIENTS = 200
EVENTS = 20


async def test_publish_reaches_200_clients_exactly_once_in_order(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(redis_server.url).wait_ready()
    redis = redis_server.client()
    redis.set("sse:last:seq", "snapshot")
    async with open_streams(gateway.url + "/api/sse?events=seq", 1) as (one,):
        await until(lambda: one.of("seq") == ["snapshot"], what="snapshot read")
        with_one = len(gateway_connections(redis))
    async with open_streams(gateway.url + "/api/sse?events=seq", CLIENTS) as clients:
        assert all(c.status == 200 for c in clients)
        await until(lambda: gateway.metric("sse_open_streams") == CLIENTS, what="all subscribed")
        for seq in range(EVENTS):
            redis.publish("sse:seq", json.dumps({"seq": seq}))
        await until(
            lambda: all(len(c.of("seq")) >= EVENTS + 1 for c in clients), what="every event"
        )
        with_many = len(gateway_connections(redis))
        expected = ["snapshot"] + [json.dumps({"seq": s}) for s in range(EVENTS)]
        for client in clients:
            assert client.of("seq") == expected
    # One subscription (plus the snapshot pool) whatever the number of clients.
    assert with_many == with_one == 2
    assert len(gateway_subscriptions(redis)) == 1


async def test_snapshot_on_connect_then_live_with_filter(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(redis_server.url).wait_ready()
    redis = redis_server.client()
    redis.set("sse:last:connectome_health", '{"state":"snapshot"}')
    redis.set("sse:last:other", "other-snapshot")
    url = gateway.url + "/api/sse?events=connectome_health"
    async with open_streams(url, 3) as clients:
        await until(lambda: all(c.of("connectome_health") for c in clients), what="snapshots")
        redis.publish("sse:other", "not selected")
        redis.publish("sse:connectome_health", '{"state":"live"}')
        await until(lambda: all(len(c.of("connectome_health")) == 2 for c in clients), what="live")
        for client in clients:
            assert client.of("connectome_health") == ['{"state":"snapshot"}', '{"state":"live"}']
            assert client.of("other") == []
            assert client.retry_ms == 3000
