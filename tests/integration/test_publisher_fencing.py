"""A deposed leader must neither read nor acknowledge signals: real redis-server, two publishers
stepped by hand (white-box), so the exact interleavings that lost a violation are replayed.

The path that once lost a DMZ violation: the lease key vanishes (eviction,
``DEL``, a failover that lost it); a standby takes the lease and finishes its recovery
(claim + replay up to the group's last-delivered id); then a violation arrives and the old
leader, still inside its local deadline, reads it with ``XREADGROUP >`` and acknowledges it.
The new leader never sees it (it was delivered to someone else and is not pending) and
publishes OK.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from connectome_core.contract import LEADER_KEY, SIGNALS_STREAM
from connectome_sse.localrun.redis_server import RedisServer
from health_publisher.service import HealthPublisher
from tests.support.publisher import counters, group_info, snapshot, xadd
from tests.support.stepped_publishers import step_until, stepped_publishers

pytestmark = pytest.mark.integration

# A long lease: the old leader's local deadline stays valid for the whole test, as it does
# for up to a lease after its key vanished in production; no renewal falls due on its own.
ENV = {"HEALTH_INTERVAL": "0.05", "HEALTH_MAX_RATE": "100", "PUBLISHER_LEASE_MS": "60000"}


@pytest.fixture
async def make_publisher(
    redis_server: RedisServer,
) -> AsyncIterator[Callable[[str], HealthPublisher]]:
    async with stepped_publishers(redis_server.url, ENV) as make:
        yield make


async def test_a_deposed_leader_cannot_swallow_a_violation_the_new_leader_must_see(
    redis_server: RedisServer, make_publisher: Callable[[str], HealthPublisher]
) -> None:
    sync = redis_server.client()
    old = make_publisher("pub-old")
    await step_until(old, lambda: old.published >= 1)
    assert old.leader and old.lease.held()

    sync.delete(LEADER_KEY)  # evicted under allkeys-lru, or lost in a failover
    new = make_publisher("pub-new")
    await step_until(new, lambda: new.published >= 1)
    assert new.leader

    xadd(sync, "counter", name="dmz_violation_attempts")
    # The old leader still believes it leads (its local deadline is far away): one step.
    await old.run_once()
    assert group_info(sync)["pending"] <= 1  # read at most, never acknowledged by the old one

    published = new.published
    await step_until(new, lambda: new.published > published + 1)
    stored = snapshot(sync)
    assert stored is not None
    assert counters(stored) == (0, 1, 0), "the violation was lost by the deposed leader"
    assert stored.status.state == "ERROR"
    assert group_info(sync)["pending"] == 0


async def test_a_leader_deposed_after_reading_leaves_the_entries_for_the_next_one(
    redis_server: RedisServer, make_publisher: Callable[[str], HealthPublisher]
) -> None:
    sync = redis_server.client()
    old = make_publisher("pub-old")
    await step_until(old, lambda: old.published >= 1)
    xadd(sync, "counter", name="query_write_attempts")
    # The old leader reads it (legitimately), then loses its key before it acknowledges.
    await step_until(old, lambda: old.aggregator.counters["query_write_attempts"] == 1)
    sync.delete(LEADER_KEY)
    xadd(sync, "tick", tick=7, speed="x1", playthrough_id="p", place_id="q")
    await old.run_once()  # refused by the fence: neither acknowledges nor reads
    assert not old.leader
    new = make_publisher("pub-new")
    await step_until(
        new,
        lambda: (s := snapshot(sync)) is not None and s.runner.tick == 7 and new.published >= 1,
    )
    stored = snapshot(sync)
    assert stored is not None and counters(stored) == (1, 0, 0)
    assert stored.status.state == "ERROR"
    await step_until(new, lambda: group_info(sync)["pending"] == 0)
    assert sync.xlen(SIGNALS_STREAM) == 2
