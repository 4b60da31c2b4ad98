"""What chaos puts into Redis and what it watches there while a scenario runs.

``SeqFeed`` publishes numbered events and records which every expected gateway
received (only those a client must get); ``HealthWatch`` follows the health
channel itself, so a stale payload is seen even when no client would show it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from connectome_core.contract import HEALTH_EVENT, channel_for
from connectome_core.redis_connect import async_client
from connectome_core.redis_target import parse_redis_url
from connectome_sse.localrun.browser import health_ts
from connectome_sse.localrun.seq_publisher import RedisEvents, SeqPublisher

SEQ_EVENT = "chaos_seq"
# A publish that hangs (a frozen Redis) is given up after this, its outcome unknown.
PUBLISH_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class Published:
    seq: int
    at: float  # monotonic, when the publish was sent
    receivers: int | None  # None: failed or unknown (a timeout)
    expected: int  # gateways that should have been subscribed

    @property
    def owed(self) -> bool:
        """True when every expected gateway got it, so every client must."""
        return self.receivers is not None and self.receivers >= self.expected > 0


@dataclass
class SeqFeed:
    url: str
    expected: Callable[[], int]
    rate: float = 10.0
    records: list[Published] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._client = redis_client(self.url, PUBLISH_TIMEOUT_S)
        self.publisher = SeqPublisher(
            RedisEvents(self._client),
            SEQ_EVENT,
            refused=(RedisError, OSError, TimeoutError),
            timeout=PUBLISH_TIMEOUT_S * 2,
        )

    @property
    def last_seq(self) -> int:
        return self.publisher.next - 1

    async def publish_one(self) -> Published:
        seq, at, expected = self.publisher.next, time.monotonic(), self.expected()
        receivers = await self.publisher.publish()
        record = Published(seq, at, receivers, expected)
        self.records.append(record)
        return record

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            await self.publish_one()
            await asyncio.sleep(max(0.0, 1 / self.rate - (time.monotonic() - started)))

    def since(self, seq: int) -> list[Published]:
        return [r for r in self.records if r.seq >= seq]

    async def close(self) -> None:
        await self._client.aclose()


@dataclass
class HealthWatch:
    """Every health payload on the channel: (arrival, ts); reconnects when cut (CLIENT KILL)."""

    url: str
    seen: list[tuple[float, float]] = field(default_factory=list)

    async def run(self) -> None:
        while True:
            client = redis_client(self.url, None)
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(channel_for(HEALTH_EVENT))
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None:
                        self.seen.append((time.monotonic(), health_ts(message["data"])))
            except (RedisError, OSError):
                await asyncio.sleep(0.2)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                with contextlib.suppress(RedisError, OSError):
                    await client.aclose()

    def backwards(self, after: float) -> int:
        """Payloads that arrived after ``after`` with a ts older than one published before them."""
        newest = float("-inf")
        count = 0
        for arrived, ts in self.seen:
            if arrived >= after and ts < newest:
                count += 1
            newest = max(newest, ts)
        return count


def redis_client(url: str, timeout: float | None) -> aioredis.Redis:
    """A client for any REDIS_URL form (a Sentinel one follows the master through a failover).

    One attempt per command: a publish whose answer was lost is "unknown", never sent
    again (a retried PUBLISH could deliver an event twice). ``timeout`` None: no read
    timeout (a subscription polled with ``get_message(timeout=...)``).
    """
    return async_client(
        parse_redis_url(url),
        socket_timeout=timeout,
        socket_connect_timeout=timeout or 1.0,
        retry=Retry(NoBackoff(), 0),
    )
