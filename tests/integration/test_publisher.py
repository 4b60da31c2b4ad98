"""The publisher in this event loop against a real redis-server: signals in, payloads out.

Process-level behaviour (restart, two publishers, kill -9) is in
test_publisher_processes.py.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from connectome_core.contract import SIGNALS_STREAM
from connectome_sse.localrun.redis_server import RedisServer
from connectome_sse.localrun.wait import async_wait_for, until
from health_publisher.lease import CHECKPOINT_KEY
from tests.support.publisher import (
    HEALTH_CHANNEL,
    counters,
    group_info,
    next_payload,
    running_publisher,
    snapshot,
    xadd,
)

pytestmark = pytest.mark.integration

FAST = {"HEALTH_INTERVAL": "0.2", "HEALTH_MAX_RATE": "10"}
EDGE = {
    "from": "a",
    "to": "b",
    "polarity": -0.8,
    "strength": 0.9,
    "confidence": 0.7,
    "contrib": 0.3,
}


@pytest.fixture
async def channel(redis_server: RedisServer) -> AsyncIterator[aioredis.client.PubSub]:
    client = aioredis.Redis.from_url(redis_server.url, socket_timeout=10)
    pubsub = client.pubsub()
    await pubsub.subscribe(HEALTH_CHANNEL)
    yield pubsub
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    await client.aclose()


async def test_signals_in_valid_payload_out_on_channel_and_snapshot(
    redis_server: RedisServer, channel: aioredis.client.PubSub
) -> None:
    sync = redis_server.client()
    async with running_publisher(redis_server.url, FAST) as publisher:
        await next_payload(channel)  # the group exists once the first payload is out
        xadd(sync, "tick", tick=41, speed="x2", playthrough_id="pt-1", place_id="hall")
        for value in (2, 4, 6, 8):
            xadd(sync, "sink_size", value=value)
        xadd(sync, "focus_change", changed=1)
        xadd(sync, "interrupt", reason="spoken", moment_id="m-3", age_ticks=1)
        xadd(sync, "neighborhood", nodes=30, edges=70)
        xadd(sync, "pressure", contradiction=0.55, top_edges=json.dumps([EDGE]))
        xadd(sync, "plateau", seconds=3.5)
        xadd(sync, "counter", name="async_epoch_mismatch")
        xadd(sync, "tick", tick=42, speed="x2", playthrough_id="pt-1", place_id="hall")

        payload = await next_payload(channel, lambda p: p.runner.tick == 42)
        assert (payload.playthrough_id, payload.place_id, payload.runner.speed) == (
            "pt-1",
            "hall",
            "x2",
        )
        assert payload.runner.last_interrupt.moment_id == "m-3"
        assert payload.runner.last_interrupt.age_ticks == 2
        assert payload.attention.sink_set_size.p50 == 5.0
        assert payload.attention.sink_set_size.p95 == pytest.approx(7.7)
        assert payload.attention.focus_reconfig_rate_per_min == 1.0
        assert payload.attention.neighborhood_size.edges == 70
        assert payload.attention.plateau_seconds == 3.5
        assert payload.pressure.contradiction == 0.55
        assert payload.pressure.top_edges[0].from_ == "a"
        assert counters(payload) == (0, 0, 1)
        assert payload.status.state == "WARN"
        assert "async epoch mismatch" in payload.status.notes[0]

        stored = snapshot(sync)
        assert stored is not None and stored.runner.tick == 42
        info = group_info(sync)
        assert info["pending"] == 0
        assert publisher.leader
        checkpoint = json.loads(sync.get(CHECKPOINT_KEY) or b"{}")
        assert checkpoint["counters"]["async_epoch_mismatch"] == 1


async def test_state_change_goes_out_at_once_and_recovers_after_the_window(
    redis_server: RedisServer, channel: aioredis.client.PubSub
) -> None:
    # One interval is an hour: every event after the first one is due to a state change.
    env = {"HEALTH_INTERVAL": "3600", "HEALTH_WINDOW": "1", "HEALTH_STALE_AFTER": "60"}
    sync = redis_server.client()
    async with running_publisher(redis_server.url, env):
        first = await next_payload(channel)
        assert first.status.state == "OK"
        xadd(sync, "counter", name="query_write_attempts")
        error = await next_payload(channel)
        assert error.status.state == "ERROR"
        assert counters(error) == (1, 0, 0)
        recovered = await next_payload(channel)
        assert recovered.status.state == "OK"
        assert recovered.status.notes == []
        assert counters(recovered) == (1, 0, 0)  # counters stay totals


async def test_bad_signals_are_acknowledged_counted_and_change_nothing(
    redis_server: RedisServer, channel: aioredis.client.PubSub
) -> None:
    sync = redis_server.client()
    async with running_publisher(redis_server.url, FAST) as publisher:
        await next_payload(channel)
        xadd(sync, "tick", tick=5, speed="x1", playthrough_id="p", place_id="q")
        before = await next_payload(channel, lambda p: p.runner.tick == 5)
        bad = [
            xadd(sync, "wormhole", value=1),
            xadd(sync, "sink_size", value="lots"),
            xadd(sync, "sink_size", value=-4),
            xadd(sync, "tick", speed="x1", playthrough_id="p", place_id="q"),
            xadd(sync, "counter", name="query_write_attempts", by="zero"),
            xadd(sync, "pressure", contradiction=0.5, top_edges="[not json"),
        ]
        sync.xadd(SIGNALS_STREAM, {b"kind": b"\xff\xfe"})
        xadd(sync, "plateau", seconds=1)  # a good one after the bad ones
        after = await next_payload(channel, lambda p: p.attention.plateau_seconds == 1.0)
        await until(lambda: publisher.bad_signals == 7, what="7 bad signals")
        assert after.status.state == before.status.state == "OK"
        assert counters(after) == counters(before) == (0, 0, 0)
        assert after.runner == before.runner
        assert group_info(sync)["pending"] == 0
        assert len(bad) == 6


async def test_pending_entries_of_a_dead_consumer_are_claimed_and_applied(
    redis_server: RedisServer, channel: aioredis.client.PubSub
) -> None:
    sync = redis_server.client()
    sync.xgroup_create(SIGNALS_STREAM, "health-publisher", id="0", mkstream=True)
    for _ in range(3):
        xadd(sync, "counter", name="dmz_violation_attempts")
    # A consumer read them and died before acknowledging.
    sync.xreadgroup("health-publisher", "dead-one", {SIGNALS_STREAM: ">"}, count=10)
    assert group_info(sync)["pending"] == 3
    async with running_publisher(redis_server.url, FAST):
        payload = await next_payload(channel, lambda p: counters(p) == (0, 3, 0))
        assert payload.status.state == "ERROR"
        await until(lambda: group_info(sync)["pending"] == 0, what="pending entries acknowledged")


async def test_redis_restart_keeps_state_and_resumes(own_redis: RedisServer) -> None:
    sync = own_redis.client()
    async with running_publisher(own_redis.url, FAST) as publisher:
        await until(lambda: snapshot(sync) is not None, what="first payload")
        xadd(sync, "counter", name="dmz_violation_attempts", by=2)
        await until(lambda: (s := snapshot(sync)) is not None and counters(s) == (0, 2, 0))
        published = publisher.published

        own_redis.restart()  # empty: no stream, no group, no lease, no snapshot
        sync = own_redis.client()

        def resumed() -> bool:
            return publisher.published > published and snapshot(sync) is not None

        await until(resumed, timeout=30, what="publishing after the restart")
        xadd(sync, "counter", name="query_write_attempts")
        await until(
            lambda: (s := snapshot(sync)) is not None and counters(s) == (1, 2, 0),
            timeout=30,
            what="counters kept across the restart, new signal applied",
        )
        stored = snapshot(sync)
        assert stored is not None and stored.status.state == "ERROR"
        assert group_info(sync)["pending"] == 0


async def test_a_bug_applying_one_signal_costs_that_signal_only(
    redis_server: RedisServer, channel: aioredis.client.PubSub, monkeypatch: pytest.MonkeyPatch
) -> None:
    sync = redis_server.client()
    async with running_publisher(redis_server.url, FAST) as publisher:
        await next_payload(channel)
        real_apply = publisher.aggregator.apply

        def buggy_apply(signal: Any, *args: Any, **kwargs: Any) -> None:
            if signal.kind == "plateau":
                raise ZeroDivisionError("a bug")
            real_apply(signal, *args, **kwargs)

        monkeypatch.setattr(publisher.aggregator, "apply", buggy_apply)
        xadd(sync, "plateau", seconds=5)
        xadd(sync, "sink_size", value=9)
        payload = await next_payload(channel, lambda p: p.attention.sink_set_size.p50 == 9.0)
        assert payload.attention.plateau_seconds == 0.0
        assert publisher.bad_signals == 1
        assert group_info(sync)["pending"] == 0


async def test_routine_housekeeping_is_logged_at_debug_not_info(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    client = aioredis.Redis.from_url(redis_server.url, socket_timeout=10)
    await client.delete(SIGNALS_STREAM)
    # Entries far older than the window: the first housekeeping trims them.
    for seq in range(1, 201):
        await client.xadd(SIGNALS_STREAM, {"kind": "plateau", "seconds": "1"}, id=f"1-{seq}")
    caplog.set_level(logging.DEBUG, logger="health_publisher")
    async with running_publisher(redis_server.url, FAST):
        await async_wait_for(lambda: _trimmed(client), what="old entries trimmed")
    trimmed = [r for r in caplog.records if "housekeeping" in r.getMessage()]
    assert trimmed, "the trim is still logged, at debug"
    assert all(r.levelno == logging.DEBUG for r in trimmed)
    await client.aclose()


async def _trimmed(client: aioredis.Redis) -> bool:
    return int(await client.xlen(SIGNALS_STREAM)) < 100
