"""One-time stream tickets, kept in Redis so that any replica accepts each ticket once.

A ticket is 256 random bits, bound to its grant by keys derived from the secret, so
whoever can write Redis can neither invent a grant nor move one. Taking is one
``GETDEL``, never retried (a lost reply may have taken it); a mint is retried once,
idempotently.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
import secrets
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from connectome_core.logs import RateLimitedLog
from connectome_core.tokens import Grant

log = logging.getLogger("sse_gateway.auth")

KEY_PREFIX = "sse:ticket:"
TICKET_BYTES = 32  # 256 bits
# Labels of the keys derived from the secret. A JWT's signing input is base64url
# text and dots, so no label (they hold "/") is ever signed as one: no HMAC made
# here can pass for a token signature, nor the other way round.
_NAME_LABEL = b"connectome-sse/ticket-key-name/v1"
_SEAL_LABEL = b"connectome-sse/ticket-grant-seal/v1"
# Errors after which a command may or may not have run on Redis.
_UNCERTAIN = (RedisConnectionError, RedisTimeoutError, OSError)


class TicketStoreUnavailable(Exception):
    """Redis did not answer; the route answers 503, the client retries."""


class ForgedGrant(ValueError):
    """A stored value that no holder of the secret wrote for this key."""


def canonical_json(grant: Grant) -> bytes:
    return json.dumps(
        grant.to_json(), sort_keys=True, separators=(",", ":"), allow_nan=False
    ).encode()


class TicketSeal:
    """Key names and stored values of tickets, both keyed by the secret.

    The key is ``sse:ticket:<HMAC(name key, ticket)>``; the value is
    ``<HMAC(seal key, key name, grant JSON) hex>:<grant JSON>``. The key name
    is inside the MAC, so a value copied to another ticket's key is refused."""

    def __init__(self, secret: bytes) -> None:
        self._name_key = hmac.digest(secret, _NAME_LABEL, hashlib.sha256)
        self._seal_key = hmac.digest(secret, _SEAL_LABEL, hashlib.sha256)

    def key(self, ticket: str) -> str:
        return KEY_PREFIX + hmac.new(self._name_key, ticket.encode(), hashlib.sha256).hexdigest()

    def _mac(self, key: str, body: bytes) -> bytes:
        message = key.encode() + b"\n" + body
        return hmac.new(self._seal_key, message, hashlib.sha256).hexdigest().encode()

    def seal(self, key: str, grant: Grant) -> bytes:
        body = canonical_json(grant)
        return self._mac(key, body) + b":" + body

    def open(self, key: str, value: bytes) -> Grant:
        """The grant sealed under ``key``; ForgedGrant, or ValueError when it is malformed."""
        mac, _, body = value.partition(b":")
        if not hmac.compare_digest(mac, self._mac(key, body)):
            raise ForgedGrant("the stored grant's seal does not verify")
        return Grant.from_json(json.loads(body))


class TicketStore:
    """``concurrency`` commands at most in flight: a burst of connects (a reconnect
    storm) queues here instead of failing on redis-py's "Too many connections" or
    opening one Redis connection per client. Give the client a pool at least that big,
    and no retry of its own (see the module's note)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        secret: bytes,
        ttl: float,
        clock: Callable[[], float] = time.time,
        concurrency: int = 8,
        on_forged: Callable[[], None] = lambda: None,
    ) -> None:
        self._redis = redis
        self._seal = TicketSeal(secret)
        self.ttl = ttl
        self._clock = clock
        self._slots = asyncio.Semaphore(concurrency)
        self._on_forged = on_forged
        self._log = RateLimitedLog(log)

    async def mint(self, grant: Grant) -> str:
        """A new ticket for ``grant``, valid for the TTL (or until the token expires)."""
        left = min(self.ttl, grant.exp - self._clock())
        if left <= 0:
            raise ValueError("the token has expired")
        ticket = secrets.token_urlsafe(TICKET_BYTES)
        key = self._seal.key(ticket)
        value = self._seal.seal(key, grant)
        try:
            async with self._slots:
                stored = await self._store(key, value, max(1, math.ceil(left * 1000)))
        except (RedisError, OSError) as exc:
            raise TicketStoreUnavailable(type(exc).__name__) from None
        if not stored:
            raise TicketStoreUnavailable("ticket key already present")
        return ticket

    async def _store(self, key: str, value: bytes, px: int) -> bool:
        # NX: a collision of 256 random bits will not happen, but must never overwrite.
        try:
            return bool(await self._redis.set(key, value, px=px, nx=True))
        except _UNCERTAIN:
            pass
        # The first SET may have been stored with its reply lost: the same SET again,
        # and our own value already there is a success (anything else is not ours).
        if await self._redis.set(key, value, px=px, nx=True):
            return True
        return bool(await self._redis.get(key) == value)

    async def take(self, ticket: str, *, keep: bool = False) -> Grant | None:
        """The ticket's grant, once: the key is deleted by the same command that reads it.

        ``keep``: read it and leave it (a ``HEAD``, which opens no stream, must not use
        up the ticket that the ``GET`` after it will present)."""
        key = self._seal.key(ticket)
        try:
            async with self._slots:
                raw = await (self._redis.get(key) if keep else self._redis.getdel(key))
        except (RedisError, OSError) as exc:
            raise TicketStoreUnavailable(type(exc).__name__) from None
        if raw is None:
            return None
        try:
            return self._seal.open(key, raw if isinstance(raw, bytes) else raw.encode())
        except ForgedGrant:
            # Something that can write Redis but holds no secret; never the ticket in the log.
            self._on_forged()
            self._log.warning(
                "forged",
                "a ticket's stored grant was forged or copied (its seal does not verify); refused",
            )
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            self._log.warning("malformed", "a ticket's stored grant is malformed (%s)", exc)
        return None

    async def close(self) -> None:
        await self._redis.aclose()
