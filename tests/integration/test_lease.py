"""The leader lease on a real redis-server: acquire, compare-and-renew, local deadline before
expiry, the fenced logged publish. (Fencing of the group's read/ack/claim:
test_publisher_fencing.py.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from connectome_core.contract import LEADER_KEY
from connectome_core.event_log import LOG_ID_CHANNEL, LOG_KEY, LOG_LAST_KEY, log_event_id
from connectome_sse.localrun.redis_server import RedisServer
from health_publisher.lease import CHECKPOINT_KEY, LeaderLease
from tests.support.publisher import FakeClock

pytestmark = pytest.mark.integration


@pytest.fixture
async def server(redis_server: RedisServer) -> AsyncIterator[_Clients]:
    clients = _Clients(redis_server.url)
    yield clients
    for made in clients.made:
        await made.aclose()


class _Clients:
    """Real clients of the test's redis-server, closed after the test."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.made: list[aioredis.Redis] = []


def client(server: _Clients) -> aioredis.Redis:
    made = aioredis.Redis.from_url(server.url, socket_timeout=5)
    server.made.append(made)
    return made


async def test_only_one_acquires(server: _Clients) -> None:
    clock = FakeClock(100.0)
    a = LeaderLease(client(server), "a", 3000, clock=clock)
    b = LeaderLease(client(server), "b", 3000, clock=clock)
    assert await a.acquire()
    assert not await b.acquire()
    assert a.held() and not b.held()
    assert await client(server).get(LEADER_KEY) == b"a"
    assert 2900 <= await client(server).pttl(LEADER_KEY) <= 3000


async def test_local_deadline_falls_before_the_key_expires(server: _Clients) -> None:
    clock = FakeClock(100.0)
    lease = LeaderLease(client(server), "a", 3000, clock=clock)
    assert await lease.acquire()
    assert lease.valid_for < 3.0
    clock.advance(lease.valid_for - 0.001)
    assert lease.held()
    clock.advance(0.001)
    assert not lease.held()


async def test_renew_extends_only_our_own_lease(server: _Clients) -> None:
    clock = FakeClock(100.0)
    a = LeaderLease(client(server), "a", 3000, clock=clock)
    b = LeaderLease(client(server), "b", 3000, clock=clock)
    assert await a.acquire()
    clock.advance(2.0)
    assert await a.renew()
    assert a.held_until == pytest.approx(102.0 + a.valid_for)
    assert not await b.renew()
    assert await client(server).get(LEADER_KEY) == b"a"


async def test_renew_fails_once_another_holds_it(server: _Clients) -> None:
    a = LeaderLease(client(server), "a", 3000)
    assert await a.acquire()
    await client(server).set(LEADER_KEY, "b")  # a expired and b acquired meanwhile
    assert not await a.renew()
    assert not a.held()


async def test_acquire_recognises_its_own_token(server: _Clients) -> None:
    await client(server).set(LEADER_KEY, "a", px=3000)  # our SET went through, its reply did not
    lease = LeaderLease(client(server), "a", 3000)
    assert await lease.acquire()


async def test_release_is_compare_and_delete(server: _Clients) -> None:
    a = LeaderLease(client(server), "a", 3000)
    b = LeaderLease(client(server), "b", 3000)
    assert await a.acquire()
    assert not await b.release()
    assert await client(server).get(LEADER_KEY) == b"a"
    assert await a.release()
    assert not a.held()
    assert await b.acquire()


async def test_fenced_publish_writes_log_snapshot_checkpoint_and_channel(
    server: _Clients,
) -> None:
    redis = client(server)
    pubsub = redis.pubsub()
    await pubsub.psubscribe("sse:*")
    await pubsub.get_message(timeout=1.0)  # the subscribe confirmation
    lease = LeaderLease(client(server), "a", 3000)
    assert await lease.acquire()
    published = await lease.publish("connectome_health", '{"x":1}', "cp")
    assert published is not None and published.receivers == 1
    assert published.event_id == log_event_id(published.stream_id, "connectome_health", '{"x":1}')
    assert await redis.get("sse:last:connectome_health") == b'{"x":1}'
    assert await redis.get(CHECKPOINT_KEY) == b"cp"
    sid = published.stream_id.encode()
    assert await redis.xrange(LOG_KEY) == [
        (sid, {b"event": b"connectome_health", b"data": b'{"x":1}'})
    ]
    assert await redis.hgetall(LOG_LAST_KEY) == {b"connectome_health": sid}
    marker = await pubsub.get_message(timeout=1.0)
    assert marker is not None and marker["channel"] == LOG_ID_CHANNEL.encode()
    assert marker["data"] == sid + b" connectome_health"
    message = await pubsub.get_message(timeout=1.0)
    assert message is not None and message["data"] == b'{"x":1}'
    await pubsub.aclose()  # type: ignore[no-untyped-call]


async def test_fenced_publish_refuses_a_publisher_that_lost_the_lease(
    server: _Clients,
) -> None:
    redis = client(server)
    a = LeaderLease(client(server), "a", 3000)
    assert await a.acquire()
    await redis.set(LEADER_KEY, "b")
    assert await a.publish("connectome_health", "{}", "cp") is None
    assert not a.held()
    assert await redis.get("sse:last:connectome_health") is None
    # Nothing else either: no log entry, no snapshot id, no checkpoint.
    assert await redis.exists(LOG_KEY, LOG_LAST_KEY, CHECKPOINT_KEY) == 0
