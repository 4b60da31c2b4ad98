"""The subscription check: is the one subscription on the server the publishers write to?

A pub/sub socket never writes, so one left on a demoted or partitioned master never
fails, and PING answers prove only that the socket works. So every ``check_interval``
seconds the reader compares the subscription's peer with the master the sentinels name
now (``Master``), and publishes a nonce on a channel only this process subscribes to
(``Echo``): zero receivers proves the subscription is elsewhere. The echo is also the
catch-up barrier: Redis delivers a nonce published now after everything it took before.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.exceptions import ConnectionError, NoPermissionError, RedisError

from connectome_core.redis_connect import MasterLocator, RedisUnavailable, describe_error
from connectome_core.redis_target import Address, RedisTarget
from sse_gateway.redis_pubsub import CONNECTION_ERRORS, PubSub, format_peer, limited, peer_of, text

# The echo's private channel (the gateway's ACL rule allows &connectome:gateway:echo:*).
ECHO_CHANNEL_PREFIX = "connectome:gateway:echo:"
SENTINEL_CHECK_INTERVAL = 2.0


class SubscriptionMisplaced(ConnectionError):
    """The subscription is on a server the publishers no longer write to: rebuild it."""


def echo_channel() -> str:
    """A channel no other process subscribes to: host, pid and a random part."""
    return f"{ECHO_CHANNEL_PREFIX}{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


class Master:
    """With Sentinel, the master the sentinels name now; the command pool follows it."""

    def __init__(self, target: RedisTarget, commands: aioredis.Redis) -> None:
        self._locator = MasterLocator(target) if target.is_sentinel else None
        self._commands = commands

    @property
    def sentinel(self) -> bool:
        return self._locator is not None

    async def follow(self) -> Address | None:
        """The master now, and the command pool moved there (its idle connections to a
        former master are closed). None without Sentinel, or when no sentinel can say."""
        if self._locator is None:
            return None
        try:
            master = await self._locator.master()
        except (RedisUnavailable, RedisError, OSError):
            return None
        pool = self._commands.connection_pool
        if isinstance(pool, SentinelConnectionPool) and pool.master_address != master:
            await pool.get_master_address()  # type: ignore[no-untyped-call]
        return master

    async def aclose(self) -> None:
        if self._locator is not None:
            await self._locator.aclose()


class Echo:
    """Nonces published on this process's private channel and read back on its subscription."""

    def __init__(self, commands: aioredis.Redis, timeout: float) -> None:
        self.channel = echo_channel()
        self.ready = False  # Redis confirmed this subscription's SUBSCRIBE to the channel
        self.timeout = timeout
        self._commands = commands
        self._barriers: dict[bytes, asyncio.Future[None]] = {}  # caught_up's nonces

    def note(self, message: dict[str, Any]) -> None:
        """Look at every message the subscription reads: an echo or the channel's SUBSCRIBE."""
        kind = message["type"]
        if kind == "message" and self._barriers:
            barrier = self._barriers.get(message["data"])
            if barrier is not None and not barrier.done():
                barrier.set_result(None)
        elif kind == "subscribe" and text(message["channel"]) == self.channel:
            self.ready = True

    async def send(self) -> int:
        """Publish a nonce that only the echo listens to; the number of receivers."""
        return int(await self._commands.publish(self.channel, secrets.token_hex(8)))

    async def caught_up(self) -> bool:
        """True once every message Redis took before this call has been read (a nonce
        published now arrives after them); False when that cannot be told in time."""
        if not self.ready:
            return False  # no subscription (yet): nothing to be behind of
        nonce = secrets.token_hex(8).encode()
        barrier = self._barriers[nonce] = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(self.timeout):
                if not await self._commands.publish(self.channel, nonce):
                    return False  # our subscription is not there: the check's case
                await barrier
            return True
        except (NoPermissionError, *CONNECTION_ERRORS):
            return False
        finally:
            del self._barriers[nonce]


class SubscriptionCheck:
    """Raises ``SubscriptionMisplaced`` when a subscription provably is not on the server
    the publishers write to; no verdict when that cannot be told now."""

    def __init__(self, target: RedisTarget, master: Master, echo: Echo) -> None:
        self.target = target
        self.master = master
        self.echo = echo

    async def __call__(self, pubsub: PubSub) -> None:
        master = await self.master.follow()
        peer = peer_of(pubsub)
        if master is not None and peer is not None and peer != master:
            raise SubscriptionMisplaced(
                f"the subscription is on {format_peer(peer)} but the sentinels name "
                f"{format_peer(master)} as master"
            )
        if not self.echo.ready:
            return
        try:
            receivers = await self.echo.send()
        except NoPermissionError as exc:  # the ACL lacks the echo channel: no verdict
            limited.warning(
                "echo_denied", "subscription check: %s", describe_error(exc, self.target)
            )
            return
        except CONNECTION_ERRORS:
            return  # Redis does not answer commands: the silence check's case, not ours
        if receivers == 0:
            raise SubscriptionMisplaced(
                "the subscription check's echo reached no subscriber: the subscription is "
                f"not on the server that {self.target.display()} leads to"
            )


class SubscriptionChecks:
    """A check in the background, every ``interval`` seconds.

    In the background because it waits on the sentinels and on a PUBLISH: a paused
    Redis must not hold up the read loop. One check at a time; a finished check's
    verdict is raised by the next :meth:`poll`.
    """

    def __init__(self, check: Callable[[], Awaitable[None]], interval: float) -> None:
        self._check = check
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self._next = time.monotonic() + min(1.0, interval)

    def poll(self, now: float, due: bool = False) -> None:
        if self._task is not None and self._task.done():
            finished, self._task = self._task, None
            finished.result()
        if self._task is None and (due or now >= self._next):
            self._next = now + self._interval
            self._task = asyncio.ensure_future(self._check())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
