"""The gateway's Redis reader on Sentinel: never deaf on a demoted or cut-off master.

Real master, replica and three sentinels (``connectome_sse.localrun.redis_sentinel``).
The trap (Centrifugo #1189): a subscription whose socket stays open to the old
master, frozen here as behind a partition, hears nothing published on the new
one, and redis-py never moves it. The reader compares its subscription's peer
with the sentinels' master and proves it live with a PUBLISH round trip on its
private channel; both are tested here.
"""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from connectome_core.redis_connect import async_client
from connectome_sse.localrun.redis_sentinel import SentinelCluster
from connectome_sse.localrun.redis_server import RedisServer
from connectome_sse.localrun.wait import until
from sse_gateway.redis_source import PROBE_CHANNEL_PREFIX, RedisSource, SubscriptionMisplaced
from tests.support.subscribers import Listener


async def test_a_subscription_on_a_cut_off_master_moves_to_the_new_one(
    cluster: SentinelCluster,
) -> None:
    # Watchdog values so long that only the liveness check can rescue the subscription.
    source = RedisSource(
        cluster.url, probe_interval=60, probe_timeout=60, command_timeout=1, liveness_interval=0.5
    )
    listener = Listener()
    task = asyncio.create_task(source.run(listener))
    try:
        await until(lambda: listener.log == ["connected"], what="first subscription")
        old = cluster.master()
        cluster.freeze_master()  # every socket to it stays open: a partition
        new = await asyncio.to_thread(cluster.wait_failover)
        assert new is not old
        await until(
            lambda: listener.log[-1:] == ["connected"] and len(listener.log) >= 3,
            timeout=15,
            what="resubscribed on the new master",
        )
        with new.client() as node:
            node.publish("sse:after", "failover")
        await until(lambda: ("sse:after", b"failover") in listener.messages, what="heard")
    finally:
        cluster.thaw()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await source.aclose()


async def test_a_probe_nobody_receives_proves_the_subscription_misplaced(
    redis_server: RedisServer,
) -> None:
    source = RedisSource(redis_server.url)
    client: aioredis.Redis = async_client(source.target, socket_timeout=None)
    pubsub = client.pubsub()
    try:
        await pubsub.subscribe(source.probe_channel)
        message = await pubsub.get_message(timeout=5)
        assert message is not None and message["type"] == "subscribe"
        source._note_probe(message)
        await source.check_subscription(pubsub)  # on the server we publish to: no verdict

        await pubsub.unsubscribe(source.probe_channel)  # as if it lived elsewhere
        await pubsub.get_message(timeout=5)
        with pytest.raises(SubscriptionMisplaced, match="no subscriber"):
            await source.check_subscription(pubsub)
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await client.aclose()
        await source.aclose()


async def test_the_probe_channel_is_private_and_counted_as_a_plain_subscription(
    redis_server: RedisServer,
) -> None:
    first, second = RedisSource(redis_server.url), RedisSource(redis_server.url)
    assert first.probe_channel != second.probe_channel
    assert first.probe_channel.startswith(PROBE_CHANNEL_PREFIX)
    listener = Listener()
    task = asyncio.create_task(first.run(listener))
    try:
        await until(lambda: listener.log == ["connected"], what="subscribed")
        with redis_server.client() as admin:
            await until(
                lambda: any(
                    c.get("name") == "sse-gateway" and c.get("psub") == "1" and c.get("sub") == "1"
                    for c in admin.client_list()
                ),
                what="one PSUBSCRIBE and one SUBSCRIBE on the same connection",
            )
            assert admin.pubsub_numsub(first.probe_channel) == [(first.probe_channel.encode(), 1)]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        for source in (first, second):
            await source.aclose()
