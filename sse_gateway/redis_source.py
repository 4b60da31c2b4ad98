"""The Redis ``EventSource``: one pattern subscription per process, kept alive for ever.

``run`` owns the reconnect loop: any failure is logged and followed by a new
subscription, at once (after a small jitter) when the lost one had worked, after a
capped jittered backoff when the attempt failed; only cancellation ends it. Reading a
subscription is ``redis_reader``'s job, the checks of where it is ``redis_checks``',
snapshot reads ``redis_snapshots``'; ``OutageLog`` says what an outage looks like.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable

from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError, TimeoutError

from connectome_core.backoff import Backoff
from connectome_core.contract import CHANNEL_PATTERN
from connectome_core.logs import RateLimitedLog
from connectome_core.redis_connect import (
    async_client,
    describe_error,
    is_configuration_error,
    short_error,
)
from connectome_core.redis_target import Address, RedisTarget, parse_redis_url
from sse_gateway.redis_checks import (
    SENTINEL_CHECK_INTERVAL,
    Echo,
    Master,
    SubscriptionCheck,
    SubscriptionChecks,
    SubscriptionMisplaced,
)
from sse_gateway.redis_log import RedisLog
from sse_gateway.redis_pubsub import (
    CONNECTION_ERRORS,
    PubSub,
    format_peer,
    log,
    notify,
    peer_of,
    quietly_close,
    reraise_swallowed_cancel,
)
from sse_gateway.redis_reader import SubscriptionReader
from sse_gateway.redis_snapshots import read_snapshots
from sse_gateway.source import Snapshot, SourceListener

# Shown by CLIENT LIST, so operators can count a gateway's connections (one
# subscription plus a small pool for snapshot reads, whatever the clients).
CLIENT_NAME = "sse-gateway"
# How long a new stream waits for this process to catch up with Redis (``caught_up``)
# before it goes on without that guarantee.
CATCH_UP_TIMEOUT_S = 2.0
# While waiting to reconnect on Sentinel: how often to ask whether a failover is done.
FAILOVER_POLL_S = 0.25
# A subscription that lived this long worked: its loss is answered at once, not backed off.
STABLE_AFTER_S = 0.25
# At most this long before remaking a subscription that worked, so that the gateways a
# Redis-wide cut hit do not all reconnect in the same instant.
RESUBSCRIBE_JITTER = 0.02
# While Redis stays down, how often one line says so.
STILL_DOWN_EVERY_S = 30.0


class RedisSource:
    def __init__(
        self,
        target: RedisTarget | str,
        *,
        ping_after: float = 5.0,
        ping_timeout: float = 5.0,
        command_timeout: float = 5.0,
        backoff: Backoff | None = None,
        stable_after: float = STABLE_AFTER_S,
        check_interval: float | None = None,
        catch_up_timeout: float = CATCH_UP_TIMEOUT_S,
    ) -> None:
        self.target = parse_redis_url(target) if isinstance(target, str) else target
        # Seconds between subscription checks: 2 s with Sentinel (a failover moves the
        # master), else ping_after.
        self.check_interval = check_interval or (
            SENTINEL_CHECK_INTERVAL if self.target.is_sentinel else ping_after
        )
        self.ping_after = ping_after  # silence before the subscription is sent a PING
        self.ping_timeout = ping_timeout
        self.command_timeout = command_timeout
        self.backoff = backoff or Backoff(base=0.1, cap=5.0)
        # A subscription that lasted this long worked: its loss is no failed attempt.
        self.stable_after = stable_after
        # Snapshot reads share one small pool; the subscription has its own connection.
        # A pooled connection may have died with a Redis restart: one retry on a fresh one.
        self._commands = async_client(
            self.target,
            socket_timeout=command_timeout,
            socket_connect_timeout=command_timeout,
            max_connections=4,
            client_name=CLIENT_NAME,
            retry=Retry(NoBackoff(), retries=1),
            retry_on_error=[ConnectionError, TimeoutError],
        )
        self.log = RedisLog(self._commands)
        self.master = Master(self.target, self._commands)
        self.echo = Echo(self._commands, catch_up_timeout)
        self.check_subscription = SubscriptionCheck(self.target, self.master, self.echo)
        self.outage = OutageLog(self.target)

    async def run(self, listener: SourceListener) -> None:
        lost_peer: Address | None = None  # the node of the last subscription that worked
        while True:
            # Its own client, closed with the subscription: a Sentinel client also holds
            # connections to the sentinels.
            # No retry: redis.Redis(...) (unlike from_url) retries 10 times by default,
            # and a pub/sub retry silently reconnects and resubscribes inside redis-py,
            # so a lost subscription would never reach on_connected (no snapshot re-send).
            client = async_client(
                self.target,
                socket_timeout=self.command_timeout,
                socket_connect_timeout=self.command_timeout,
                client_name=CLIENT_NAME,
                retry=Retry(NoBackoff(), retries=0),
            )
            pubsub = client.pubsub()
            subscribed_at: float | None = None
            try:
                await pubsub.psubscribe(CHANNEL_PATTERN)
                lost_peer = peer_of(pubsub)
                await pubsub.subscribe(self.echo.channel)
                reraise_swallowed_cancel()
                subscribed_at = time.monotonic()
                self.outage.subscribed(format_peer(peer_of(pubsub)))
                notify(listener.on_connected)
                await self._read(pubsub, listener)
            except Exception as exc:  # nothing but cancellation ends the reader
                delay = self._delay_after(exc, subscribed_at)
                self.outage.failed(exc, delay)
                notify(listener.on_disconnected)
                await self._before_reconnect(delay, lost_peer)
            finally:
                await quietly_close(pubsub)
                with contextlib.suppress(*CONNECTION_ERRORS):
                    await client.aclose()

    def _delay_after(self, exc: Exception, subscribed_at: float | None) -> float:
        worked = subscribed_at is not None and time.monotonic() - subscribed_at >= self.stable_after
        if worked or isinstance(exc, SubscriptionMisplaced):
            # Redis answered and the subscription worked (or the master is known and
            # answers): come back at once. Only a failed attempt backs off.
            self.backoff.reset()
            return random.uniform(0.0, RESUBSCRIBE_JITTER)
        return self.backoff.next_delay()

    async def _read(self, pubsub: PubSub, listener: SourceListener) -> None:
        self.echo.ready = False  # set when Redis confirms the echo channel's SUBSCRIBE
        reader = SubscriptionReader(
            pubsub,
            listener,
            self.echo,
            self.redis_answers,
            ping_after=self.ping_after,
            ping_timeout=self.ping_timeout,
            check_interval=self.check_interval,
        )
        checks = SubscriptionChecks(lambda: self.check_subscription(pubsub), self.check_interval)
        try:
            await reader.run(checks)
        finally:
            await checks.aclose()

    async def _before_reconnect(self, delay: float, lost_peer: Address | None) -> None:
        """Wait ``delay`` before the next attempt; with Sentinel, stop waiting as soon as the
        sentinels name a master other than the node just lost (a failover is done: go now,
        whatever the backoff had grown to, so that few events are published unheard)."""
        if not self.master.sentinel or lost_peer is None:
            await asyncio.sleep(delay)
            return
        deadline = time.monotonic() + delay
        while (remaining := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(FAILOVER_POLL_S, remaining))
            master = await self.master.follow()
            if master is not None and master != lost_peer:
                log.info("the sentinels name a new master, %s: resubscribing", format_peer(master))
                self.backoff.reset()
                return

    async def redis_answers(self) -> bool:
        """Whether Redis (with Sentinel: the current master) answers a command on another
        connection within the command timeout."""
        try:
            await self.master.follow()
            return bool(await self._commands.ping())
        except CONNECTION_ERRORS:
            return False

    async def caught_up(self) -> bool:
        """True once every message Redis took before this call has reached the listener
        (an echo through the private channel); False when that cannot be told in time."""
        return await self.echo.caught_up()

    async def read_snapshots(self) -> dict[str, Snapshot]:
        return await read_snapshots(self._commands)

    async def aclose(self) -> None:
        try:
            await self._commands.aclose()
        finally:
            await self.master.aclose()


class OutageLog:
    """What the reader says about reaching Redis.

    The first failure of an outage says what happened ("cannot reach Redis yet" before
    the first subscription, "redis lost" after one); while Redis stays down, one line
    every ``every`` seconds says since when. A new subscription ends the outage.
    """

    def __init__(
        self,
        target: RedisTarget,
        every: float = STILL_DOWN_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.target = target
        self.every = every
        self.clock = clock
        self.wall = wall
        self.connected_once = False
        self.down_since: float | None = None  # wall-clock time of the outage's first failure
        self.attempts = 0
        self._last_line = 0.0
        self._limited = RateLimitedLog(log)  # lines a flapping Redis repeats: one per interval

    def subscribed(self, peer: str) -> None:
        log.info(
            "redis %s: subscribed to %s on %s (%s)",
            "reconnected" if self.connected_once else "connected",
            CHANNEL_PATTERN,
            self.target.display(),
            peer,
        )
        self.connected_once = True
        self.down_since = None

    def failed(self, exc: Exception, delay: float) -> None:
        first = self.down_since is None
        if first:
            self.down_since, self.attempts, self._last_line = self.wall(), 0, self.clock()
        self.attempts += 1
        if isinstance(exc, SubscriptionMisplaced):
            log.warning("%s; resubscribing in %.2fs", exc, delay)
        elif is_configuration_error(exc):
            # A setting (or the server's ACL) changed under a running gateway.
            problem = describe_error(exc, self.target)
            self._limited.log(
                logging.ERROR, "misconfigured", "%s; retrying in %.2fs", problem, delay
            )
        elif isinstance(exc, CONNECTION_ERRORS):
            self._unreachable(exc, delay, first)
        else:
            failed = "redis reader failed (%r); reconnecting in %.2fs"
            if self._limited.log(logging.ERROR, "failed", failed, exc, delay):
                log.error("traceback of the failure above", exc_info=exc)

    def _unreachable(self, exc: Exception, delay: float, first: bool) -> None:
        if first and not self.connected_once:
            log.warning("cannot reach Redis yet (%s); retrying in %.2fs", short_error(exc), delay)
        elif first:
            self._limited.warning(
                "lost", "redis lost (%s); reconnecting in %.2fs", short_error(exc), delay
            )
        elif self.clock() - self._last_line >= self.every:
            self._last_line = self.clock()
            since = time.strftime("%H:%M:%S", time.localtime(self.down_since))
            log.warning("Redis still down since %s (%d attempts)", since, self.attempts)
