"""The bench's `--through-log` publisher on a real redis-server: the project's logged
publish (log entry, snapshot, marker, event), by EVALSHA, the script's text sent once."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis.asyncio as aioredis

from bench.payload import make_payload
from bench.publisher import LoggedPublisher
from bench.systems import CHANNEL, EVENT
from connectome_core.contract import snapshot_key
from connectome_core.event_log import LOG_ID_CHANNEL, LOG_KEY
from connectome_sse.localrun.redis_server import RedisServer

pytestmark = pytest.mark.integration


async def test_each_event_is_logged_and_published_after_its_marker(
    redis_server: RedisServer,
) -> None:
    listener = aioredis.Redis.from_url(redis_server.url, socket_timeout=5)
    pubsub = listener.pubsub()
    publisher = LoggedPublisher(redis_server.url, EVENT)
    bodies = [make_payload("run", seq, time.time(), 128) for seq in range(3)]
    try:
        await listener.config_resetstat()  # the shared server's counts: this test's alone
        await pubsub.psubscribe("sse:*")
        receivers = [await publisher.send(body) for body in bodies]
        got: list[tuple[bytes, bytes]] = []
        deadline = time.monotonic() + 10
        while len(got) < 2 * len(bodies) and time.monotonic() < deadline:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None:
                got.append((message["channel"], message["data"]))
        entries: Any = await listener.xrange(LOG_KEY)
        snapshot = await listener.get(snapshot_key(EVENT))
        calls = await listener.info("commandstats")
    finally:
        await publisher.aclose()
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await listener.aclose()
    assert receivers == [1, 1, 1]  # the listener's pattern subscription
    assert [fields[b"data"] for _, fields in entries] == bodies
    expected = []
    for (stream_id, _), body in zip(entries, bodies, strict=True):
        expected += [(LOG_ID_CHANNEL.encode(), stream_id + b" " + EVENT.encode())]
        expected += [(CHANNEL.encode(), body)]
    assert got == expected
    assert snapshot == bodies[-1]
    # The script's text went to Redis at most once; every event was an EVALSHA.
    assert calls["cmdstat_evalsha"]["calls"] >= len(bodies)
    assert calls.get("cmdstat_eval", {}).get("calls", 0) <= 1
