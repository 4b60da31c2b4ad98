"""The logged publish against a real redis-server: log entry, snapshot id, snapshot, marker and
event in one atomic step; the count and age caps; the same body as a Redis function."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from connectome_core.event_log import (
    FUNCTION_LIBRARY,
    LOG_ID_CHANNEL,
    LOG_KEY,
    LOG_LAST_KEY,
    LogCaps,
    function_library,
)
from connectome_core.publishing import publish_logged, publish_many
from connectome_sse.localrun.redis_server import RedisServer

pytestmark = pytest.mark.integration

NODE = 10  # entries per stream node of the capped servers below: trims come in tens


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    made = aioredis.Redis.from_url(redis_server.url, socket_timeout=5)
    yield made
    await made.aclose()


@pytest.fixture
def small_nodes(tmp_path: Path) -> Any:
    server = RedisServer(tmp_path / "redis", extra_args=("--stream-node-max-entries", str(NODE)))
    server.start()
    yield server
    server.stop()


async def pattern_messages(pubsub: Any, count: int) -> list[tuple[bytes, bytes]]:
    """The next ``count`` messages (subscribe confirmations skipped), within 10 s."""
    got: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + 10
    while len(got) < count:
        assert time.monotonic() < deadline, f"{len(got)} of {count} messages"
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
        if message is not None:
            got.append((message["channel"], message["data"]))
    return got


async def test_one_step_writes_entry_snapshot_id_snapshot_marker_and_event(
    client: aioredis.Redis,
) -> None:
    pubsub = client.pubsub()
    await pubsub.psubscribe("sse:*")
    published = await publish_logged(client, "deploy", "v1.2 rolled out")
    sid = published.stream_id.encode()
    assert published.receivers == 1
    assert await client.xrange(LOG_KEY) == [
        (sid, {b"event": b"deploy", b"data": b"v1.2 rolled out"})
    ]
    assert await client.hgetall(LOG_LAST_KEY) == {b"deploy": sid}
    assert await client.get("sse:last:deploy") == b"v1.2 rolled out"
    assert await pattern_messages(pubsub, 2) == [
        (LOG_ID_CHANNEL.encode(), sid + b" deploy"),
        (b"sse:deploy", b"v1.2 rolled out"),
    ]
    await pubsub.aclose()  # type: ignore[no-untyped-call]


async def test_concurrent_writers_never_split_a_marker_from_its_event(
    redis_server: RedisServer, client: aioredis.Redis
) -> None:
    pubsub = client.pubsub()
    await pubsub.psubscribe("sse:*")
    writers = [aioredis.Redis.from_url(redis_server.url) for _ in range(3)]
    batches = [[(f"w{w}", f"{w}-{n}") for n in range(100)] for w in range(3)]
    try:
        for _ in range(5):  # interleaved pipelines from three connections at once
            await asyncio.gather(
                *(publish_many(c, b[:20]) for c, b in zip(writers, batches, strict=True))
            )
            batches = [b[20:] for b in batches]
    finally:
        for writer in writers:
            await writer.aclose()
    messages = await pattern_messages(pubsub, 600)
    entries: Any = await client.xrange(LOG_KEY)
    assert len(entries) == 300
    for (marker, event), (sid, fields) in zip(
        zip(messages[::2], messages[1::2], strict=True), entries, strict=True
    ):
        assert marker == (LOG_ID_CHANNEL.encode(), sid + b" " + fields[b"event"])
        assert event == (b"sse:" + fields[b"event"], fields[b"data"])
    await pubsub.aclose()  # type: ignore[no-untyped-call]


async def test_the_count_cap_keeps_the_newest_about_maxlen(small_nodes: RedisServer) -> None:
    async with aioredis.Redis.from_url(small_nodes.url) as client:
        await publish_many(client, [("e", str(n)) for n in range(200)], LogCaps(50, 0))
        entries: Any = await client.xrange(LOG_KEY)
        assert 50 <= len(entries) < 50 + NODE
        assert [f[b"data"] for _, f in entries] == [
            str(n).encode() for n in range(200 - len(entries), 200)
        ]
        await publish_many(client, [("e", "x")] * 100, LogCaps(0, 0))  # 0: no count cap
        assert await client.xlen(LOG_KEY) == len(entries) + 100


async def test_the_age_cap_trims_entries_older_than_max_age(small_nodes: RedisServer) -> None:
    async with aioredis.Redis.from_url(small_nodes.url) as client:
        for n in range(1, 3 * NODE + 1):  # three nodes of entries from 1970
            await client.xadd(LOG_KEY, {"event": "old", "data": "x"}, id=f"{n}-1")
        await publish_logged(client, "new", "y", LogCaps(0, 0))  # 0: no age cap
        assert await client.xlen(LOG_KEY) == 3 * NODE + 1
        await publish_logged(client, "new", "z", LogCaps(0, 3600))
        entries: Any = await client.xrange(LOG_KEY)
        assert [f[b"data"] for _, f in entries] == [b"y", b"z"]


async def test_the_function_library_publishes_the_same_way(client: aioredis.Redis) -> None:
    assert await client.function_load(function_library(LogCaps()), replace=True) == (
        FUNCTION_LIBRARY.encode()
    )
    pubsub = client.pubsub()
    await pubsub.psubscribe("sse:*")
    stream_id, receivers = await client.fcall("sse_publish", 0, "deploy", "via FCALL")
    assert receivers == 1
    assert await client.xrange(LOG_KEY) == [
        (stream_id, {b"event": b"deploy", b"data": b"via FCALL"})
    ]
    assert await pattern_messages(pubsub, 2) == [
        (LOG_ID_CHANNEL.encode(), stream_id + b" deploy"),
        (b"sse:deploy", b"via FCALL"),
    ]
    await pubsub.aclose()  # type: ignore[no-untyped-call]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("ping", "x"), "reserved event name"),
        (("bad name", "x"), "invalid event name"),
        (("x" * 65, "x"), "invalid event name"),
        (("deploy",), "usage"),
    ],
)
async def test_the_function_refuses_bad_calls_and_writes_nothing(
    client: aioredis.Redis, args: tuple[str, ...], error: str
) -> None:
    await client.function_load(function_library(LogCaps()), replace=True)
    with pytest.raises(redis.exceptions.ResponseError, match=error):
        await client.fcall("sse_publish", 0, *args)
    assert await client.keys("*") == []
