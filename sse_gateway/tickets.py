"""One-time stream tickets, kept in Redis so that any replica accepts each ticket once.

A ticket is 256 random bits (``secrets.token_urlsafe(32)``), unrelated to the
token it was minted with: knowing a ticket tells nothing about the token, and
a ticket is worthless once used or ``SSE_TICKET_TTL`` seconds old.

Redis holds ``sse:ticket:<sha256 hex of the ticket>`` -> the grant as JSON
(``sub``, ``events``, ``exp``), with the ticket's expiry. The key is a hash
so that nothing that sees key names (``SCAN``, ``MONITOR``, keyspace
notifications, ``--bigkeys``, an RDB copy handed to someone debugging) sees
a bearer value that would open a stream: redeeming needs the ticket itself.
The value holds no token either. Taking is ``GETDEL``: one atomic command,
so of two replicas racing on the same ticket exactly one gets the grant.

A ticket never outlives its token: its expiry is the shorter of the TTL and
the time left on the token.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import secrets
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from sse_gateway.auth import Grant

log = logging.getLogger("sse_gateway.auth")

KEY_PREFIX = "sse:ticket:"
TICKET_BYTES = 32  # 256 bits; the SPEC asks for at least 128


class TicketStoreUnavailable(Exception):
    """Redis did not answer; the route answers 503, the client retries."""


def ticket_key(ticket: str) -> str:
    return KEY_PREFIX + hashlib.sha256(ticket.encode()).hexdigest()


class TicketStore:
    """``concurrency`` commands at most in flight: a burst of connects (a reconnect
    storm) queues here instead of failing on redis-py's "Too many connections" or
    opening one Redis connection per client. Give the client a pool at least that big."""

    def __init__(
        self,
        redis: aioredis.Redis,
        ttl: float,
        clock: Callable[[], float] = time.time,
        concurrency: int = 8,
    ) -> None:
        self._redis = redis
        self.ttl = ttl
        self._clock = clock
        self._slots = asyncio.Semaphore(concurrency)

    async def mint(self, grant: Grant) -> str:
        """A new ticket for ``grant``, valid for the TTL (or until the token expires)."""
        left = min(self.ttl, grant.exp - self._clock())
        if left <= 0:
            raise ValueError("the token has expired")
        ticket = secrets.token_urlsafe(TICKET_BYTES)
        value = json.dumps(grant.to_json(), separators=(",", ":"))
        try:
            # NX: a collision of 256 random bits will not happen, but must never overwrite.
            async with self._slots:
                stored = await self._redis.set(
                    ticket_key(ticket), value, px=max(1, math.ceil(left * 1000)), nx=True
                )
        except (RedisError, OSError) as exc:
            raise TicketStoreUnavailable(type(exc).__name__) from None
        if not stored:
            raise TicketStoreUnavailable("ticket key already present")
        return ticket

    async def take(self, ticket: str, *, keep: bool = False) -> Grant | None:
        """The ticket's grant, once: the key is deleted by the same command that reads it.

        ``keep``: read it and leave it (a ``HEAD``, which opens no stream, must not use
        up the ticket that the ``GET`` after it will present)."""
        try:
            async with self._slots:
                key = ticket_key(ticket)
                raw = await (self._redis.get(key) if keep else self._redis.getdel(key))
        except (RedisError, OSError) as exc:
            raise TicketStoreUnavailable(type(exc).__name__) from None
        if raw is None:
            return None
        try:
            return Grant.from_json(json.loads(raw))
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            # Someone else wrote under our prefix; never the ticket itself in the log.
            log.warning("a ticket's stored grant is malformed (%s); refused", exc)
            return None

    async def close(self) -> None:
        await self._redis.aclose()
