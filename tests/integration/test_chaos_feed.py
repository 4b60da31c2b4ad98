"""The chaos feed against a real redis-server: each number as a raw PUBLISH, then through
the log, in that order on a subscription; what the log no longer holds is counted."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from connectome_core.contract import channel_for
from connectome_core.event_log import LOG_KEY
from connectome_sse.chaos.feed import GAP_PROBES, RAW_EVENT, SEQ_EVENT, SeqFeed
from connectome_sse.localrun.redis_server import RedisServer

pytestmark = pytest.mark.integration


@pytest.fixture
async def feed(redis_server: RedisServer) -> AsyncIterator[SeqFeed]:
    made = SeqFeed(redis_server.url, lambda: 1)
    yield made
    await made.close()


async def messages(pubsub: aioredis.client.PubSub, count: int) -> list[tuple[str, int]]:
    """(event, number) of the next ``count`` numbered messages, within 10 s."""
    got: list[tuple[str, int]] = []
    deadline = time.monotonic() + 10
    while len(got) < count and time.monotonic() < deadline:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
        if message is not None:
            event = message["channel"].decode().removeprefix("sse:")
            got.append((event, json.loads(message["data"])["seq"]))
    return got


async def test_each_number_goes_raw_then_through_the_log(
    redis_server: RedisServer, feed: SeqFeed
) -> None:
    listener = aioredis.Redis.from_url(redis_server.url, socket_timeout=5)
    pubsub = listener.pubsub()
    try:
        await pubsub.subscribe(channel_for(SEQ_EVENT), channel_for(RAW_EVENT))
        await feed.publish_one()
        await feed.probe_gap()
        got = await messages(pubsub, 2 * (1 + GAP_PROBES))
        entries: Any = await listener.xrange(LOG_KEY)
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await listener.aclose()
    numbers = list(range(1 + GAP_PROBES))
    assert got == [(event, n) for n in numbers for event in (RAW_EVENT, SEQ_EVENT)]
    assert [r.seq for r in feed.records] == [r.seq for r in feed.raw_records] == numbers
    assert all(r.accepted and r.owed for r in (*feed.records, *feed.raw_records))
    # Only the logged copies are in the log.
    assert [fields[b"event"] for _, fields in entries] == [SEQ_EVENT.encode()] * len(numbers)
    assert feed.last_seq == GAP_PROBES


async def test_what_the_log_lost_is_counted_and_an_unreadable_log_is_unknown(
    own_redis: RedisServer,
) -> None:
    feed = SeqFeed(own_redis.url, lambda: 1)
    try:
        for _ in range(5):
            await feed.publish_one()
        assert await feed.dropped_from_log(0, 4) == 0
        with own_redis.client() as client:
            entries: Any = client.xrange(LOG_KEY)
            first, *_, last = entries
            client.xdel(LOG_KEY, first[0], last[0])
        assert await feed.dropped_from_log(0, 4) == 2
        assert await feed.dropped_from_log(1, 3) == 0  # outside the numbers asked about
        own_redis.kill()
        assert await feed.dropped_from_log(0, 4) is None
        # Refused while Redis is down: never in the log, never owed, so not counted as lost
        # from it; the five before it are, once Redis is back empty (no persistence here).
        assert (await feed.publish_one()).receivers is None
        own_redis.start()
        assert await feed.dropped_from_log(0, 5) == 5
    finally:
        await feed.close()
