"""What chaos puts into Redis and what it watches there while a scenario runs.

``SeqFeed`` publishes numbered events through the event log (``chaos_seq``) and
the same numbers as a raw PUBLISH (``chaos_raw``), and records what Redis said to
each; ``HealthWatch`` follows the health channel itself, so a stale payload is seen
even when no client would show it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from connectome_core.contract import HEALTH_EVENT, channel_for
from connectome_core.event_log import LOG_KEY
from connectome_core.redis_connect import async_client
from connectome_core.redis_target import parse_redis_url
from connectome_sse.localrun.browser import health_ts
from connectome_sse.localrun.seq_publisher import ChannelOnly, RedisEvents, SeqPublisher

SEQ_EVENT = "chaos_seq"  # through the log: the project's publish (connectome_core.publishing)
RAW_EVENT = "chaos_raw"  # the same numbers by a bare PUBLISH: no log entry, no snapshot
# A publish that hangs (a frozen Redis) is given up after this, its outcome unknown.
PUBLISH_TIMEOUT_S = 1.0
# Numbered events published back to back right after a cut, while the gateways are
# resubscribing: what the log must fill (a steady 10/s alone rarely falls in that gap).
GAP_PROBES = 3
LOG_PAGE = 1000  # entries read per XRANGE when checking what the log still holds
LogPage = list[tuple[bytes, dict[bytes, bytes]]]  # XRANGE's answer (the client decodes nothing)


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

    @property
    def accepted(self) -> bool:
        """True when Redis answered the publish: for a logged one, the log has it."""
        return self.receivers is not None


@dataclass
class SeqFeed:
    url: str
    expected: Callable[[], int]
    rate: float = 10.0
    records: list[Published] = field(default_factory=list)  # the logged ``SEQ_EVENT``
    raw_records: list[Published] = field(default_factory=list)  # ``RAW_EVENT``, same numbers

    def __post_init__(self) -> None:
        self._client = redis_client(self.url, PUBLISH_TIMEOUT_S)
        refused = (RedisError, OSError, TimeoutError)
        self.publisher = SeqPublisher(
            RedisEvents(self._client), SEQ_EVENT, refused=refused, timeout=PUBLISH_TIMEOUT_S * 2
        )
        self.raw = SeqPublisher(
            ChannelOnly(self._client), RAW_EVENT, refused=refused, timeout=PUBLISH_TIMEOUT_S * 2
        )
        # The steady loop and a scenario's probes both publish: one number at a time.
        self._turn = asyncio.Lock()

    @property
    def last_seq(self) -> int:
        return self.publisher.next - 1

    async def publish_one(self) -> Published:
        """Number n as a raw PUBLISH, then through the log. Raw first: both reach a gateway
        on its one subscription, in order, so a client holding logged n has had raw n or
        never will (the figures count raw n only once the logged n is settled)."""
        async with self._turn:
            seq = self.publisher.next
            raw_at, raw_expected = time.monotonic(), self.expected()
            raw = await self.raw.publish(seq)
            self.raw_records.append(Published(seq, raw_at, raw, raw_expected))
            at, expected = time.monotonic(), self.expected()
            receivers = await self.publisher.publish(seq)
            record = Published(seq, at, receivers, expected)
            self.records.append(record)
            return record

    async def probe_gap(self) -> None:
        """``GAP_PROBES`` numbers at once, between the steady ones (right after a cut)."""
        for _ in range(GAP_PROBES):
            await self.publish_one()

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            await self.publish_one()
            await asyncio.sleep(max(0.0, 1 / self.rate - (time.monotonic() - started)))

    def since(self, seq: int) -> list[Published]:
        return [r for r in self.records if r.seq >= seq]

    def raw_since(self, seq: int) -> list[Published]:
        return [r for r in self.raw_records if r.seq >= seq]

    async def dropped_from_log(self, first: int, last: int) -> int | None:
        """Publishes of ``first``..``last`` the log accepted but no longer holds (a failover
        that lost the newest writes, a Redis that came back empty): no gateway can fill
        those. None when the log cannot be read."""
        accepted = {r.seq for r in self.records if r.accepted and first <= r.seq <= last}
        held: set[int] = set()
        client = redis_client(self.url, 5.0)
        try:
            start = "-"
            while page := cast(LogPage, await client.xrange(LOG_KEY, start, "+", count=LOG_PAGE)):
                held.update(
                    json.loads(fields[b"data"])["seq"]
                    for _, fields in page
                    if fields.get(b"event") == SEQ_EVENT.encode()
                )
                start = "(" + page[-1][0].decode()
        except (RedisError, OSError, ValueError, KeyError):
            return None
        finally:
            await client.aclose()
        return len(accepted - held)

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
