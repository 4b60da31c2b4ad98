"""A new leader's recovery against a real redis-server: deleted pending entries, trimming by
time, consumers of dead publishers, stream order, a long replay under a short lease, and a
flood of bad signals."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from connectome_core.contract import CONSUMER_GROUP, LEADER_KEY, SIGNALS_STREAM
from connectome_sse.localrun.redis_server import RedisServer
from connectome_sse.localrun.wait import until
from health_publisher.service import HealthPublisher
from tests.support.publisher import counters, group_info, snapshot, xadd
from tests.support.stepped_publishers import step_until, stepped_publishers

pytestmark = pytest.mark.integration

FAST = {"HEALTH_INTERVAL": "0.05", "HEALTH_MAX_RATE": "100"}
MakePublisher = Callable[..., HealthPublisher]


@pytest.fixture
async def make_publisher(redis_server: RedisServer) -> AsyncIterator[MakePublisher]:
    async with stepped_publishers(redis_server.url, FAST) as make:
        yield make


def server_ms(sync: Any, ago: float = 0.0) -> int:
    seconds, micros = sync.time()
    return int((seconds + micros / 1e6 - ago) * 1000)


async def test_pending_entries_trimmed_from_the_stream_do_not_block_recovery(
    redis_server: RedisServer, make_publisher: MakePublisher
) -> None:
    sync = redis_server.client()
    sync.xgroup_create(SIGNALS_STREAM, CONSUMER_GROUP, id="0", mkstream=True)
    ids = [xadd(sync, "counter", name="dmz_violation_attempts") for _ in range(5)]
    sync.xreadgroup(CONSUMER_GROUP, "dead-one", {SIGNALS_STREAM: ">"}, count=10)
    sync.xdel(SIGNALS_STREAM, *ids[:3])  # trimmed while pending
    publisher = make_publisher()
    await step_until(publisher, lambda: publisher.published >= 1)
    stored = snapshot(sync)
    assert stored is not None and counters(stored) == (0, 2, 0)
    await step_until(publisher, lambda: group_info(sync)["pending"] == 0)
    assert not publisher.needs_recovery


async def test_housekeeping_trims_by_time_and_removes_consumers_of_dead_publishers(
    redis_server: RedisServer, make_publisher: MakePublisher
) -> None:
    sync = redis_server.client()
    sync.xgroup_create(SIGNALS_STREAM, CONSUMER_GROUP, id="0", mkstream=True)
    for seq in range(1, 501):  # long before any window
        sync.xadd(SIGNALS_STREAM, {"kind": "plateau", "seconds": "1"}, id=f"1000-{seq}")
    recent = [xadd(sync, "sink_size", value=n) for n in range(5)]
    for ghost in ("host-101", "host-102"):  # publishers of earlier runs, restarted since
        sync.execute_command(  # type: ignore[no-untyped-call]
            "XGROUP", "CREATECONSUMER", SIGNALS_STREAM, CONSUMER_GROUP, ghost
        )
    sync.xreadgroup(CONSUMER_GROUP, "host-103", {SIGNALS_STREAM: ">"}, count=3)  # died holding 3
    publisher = make_publisher("host-104", PUBLISHER_LEASE_MS="300", HEALTH_WINDOW="30")
    await step_until(publisher, lambda: publisher.published >= 1)

    def consumers() -> set[str]:
        infos: Any = sync.xinfo_consumers(SIGNALS_STREAM, CONSUMER_GROUP)
        return {c["name"].decode() if isinstance(c["name"], bytes) else c["name"] for c in infos}

    # Everything read is acknowledged (a batch read but not yet acknowledged pins the trim),
    # the ghosts have been idle for more than two leases: the next housekeeping round.
    await step_until(publisher, lambda: group_info(sync)["pending"] == 0)

    def ghosts_idle() -> bool:
        infos: Any = sync.xinfo_consumers(SIGNALS_STREAM, CONSUMER_GROUP)
        return all(c["idle"] > 600 for c in infos if c["name"] != b"host-104")

    await until(ghosts_idle, what="the ghosts idle for two leases")
    publisher.housekeeping.next_at = 0.0
    await step_until(publisher, lambda: consumers() == {"host-104"})
    assert sync.xlen(SIGNALS_STREAM) < 150, "old entries not trimmed"
    kept: Any = sync.xrange(SIGNALS_STREAM, min=recent[0])
    assert [eid for eid, _ in kept][: len(recent)] == recent  # the window is untouched
    assert group_info(sync)["pending"] == 0


async def test_claimed_entries_are_applied_in_stream_order_with_the_replay(
    redis_server: RedisServer, make_publisher: MakePublisher
) -> None:
    sync = redis_server.client()
    sync.xgroup_create(SIGNALS_STREAM, CONSUMER_GROUP, id="0", mkstream=True)
    ids = [xadd(sync, "sink_size", value=n) for n in (1, 2, 3, 4)]
    sync.xreadgroup(CONSUMER_GROUP, "dead-one", {SIGNALS_STREAM: ">"}, count=10)
    sync.xack(SIGNALS_STREAM, CONSUMER_GROUP, ids[0], ids[2])  # 2 and 4 stay pending
    publisher = make_publisher()
    await step_until(publisher, lambda: publisher.published >= 1)
    samples = [v for _, v in publisher.aggregator._sinks.items]
    assert samples == [1.0, 2.0, 3.0, 4.0]
    times = [at for at, _ in publisher.aggregator._sinks.items]
    assert times == sorted(times)


async def test_a_long_replay_keeps_the_lease_and_the_oldest_violation_of_the_window(
    redis_server: RedisServer, make_publisher: MakePublisher
) -> None:
    sync = redis_server.client()
    start = server_ms(sync, 200)  # inside a 300 s window, older than the 60 s sample window
    sync.xgroup_create(SIGNALS_STREAM, CONSUMER_GROUP, id="0", mkstream=True)
    sync.xadd(SIGNALS_STREAM, {"kind": "counter", "name": "query_write_attempts"}, id=f"{start}-1")
    pipe = sync.pipeline(transaction=False)
    for n in range(60_000):
        pipe.xadd(SIGNALS_STREAM, {"kind": "sink_size", "value": str(n % 50)})
        if n % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    # An earlier leader read (and applied) everything: the new one must replay it.
    while sync.xreadgroup(CONSUMER_GROUP, "old-leader", {SIGNALS_STREAM: ">"}, count=10_000):
        pass
    everything: Any = sync.xrange(SIGNALS_STREAM)
    acked = sync.xack(SIGNALS_STREAM, CONSUMER_GROUP, *[eid for eid, _ in everything])
    assert acked == 60_001
    publisher = make_publisher(PUBLISHER_LEASE_MS="300")
    await step_until(publisher, lambda: publisher.published >= 1, steps=50)
    assert sync.get(LEADER_KEY) == publisher.token.encode()
    gained_once = publisher.metrics.leadership_changes._value.get() == 1
    assert gained_once, "the lease lapsed during the replay: leadership flapped"
    stored = snapshot(sync)
    assert stored is not None and stored.status.state == "ERROR"
    # No checkpoint (the earlier leader never published): the new leader counts it.
    assert stored.counters.query_write_attempts == 1


async def test_a_flood_of_bad_signals_is_counted_as_bad_input_and_logged_rate_limited(
    redis_server: RedisServer, make_publisher: MakePublisher, caplog: pytest.LogCaptureFixture
) -> None:
    sync = redis_server.client()
    publisher = make_publisher()
    await step_until(publisher, lambda: publisher.published >= 1)
    deep = "[" * 30_000 + "]" * 30_000  # deeper than the interpreter's stack, under 64 KiB
    for _ in range(50):
        xadd(sync, "pressure", contradiction=0.5, top_edges=deep)
    with caplog.at_level(logging.INFO, logger="health_publisher"):
        await step_until(publisher, lambda: publisher.bad_signals == 50)
    bad = publisher.metrics.signals_bad
    assert bad.labels("bad_value")._value.get() == 50
    assert bad.labels("internal")._value.get() == 0
    lines = [r for r in caplog.records if "bad signal" in r.getMessage()]
    assert len(lines) == 1 and "nested too deeply" in lines[0].getMessage()
    assert all(r.exc_info is None for r in caplog.records)
    publisher.applier.bad_log.clock = lambda: time.monotonic() + 3600  # the interval has passed
    xadd(sync, "pressure", contradiction=0.5, top_edges=deep)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="health_publisher"):
        await step_until(publisher, lambda: publisher.bad_signals == 51)
    (line,) = [r.getMessage() for r in caplog.records if "bad signal" in r.getMessage()]
    assert "(49 similar lines suppressed)" in line
