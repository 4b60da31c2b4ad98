"""The Redis EventSource: one pattern subscription per process, and the snapshot reads.

We own the reconnect loop instead of trusting the client library's: every
failure is logged (rate-limited) and followed by a fresh connection. Only
failed attempts back off (capped, jittered): a connect, an AUTH or a
SUBSCRIBE that fails, or a subscription lost within ``stable_after`` seconds
of being made (a Redis that accepts and drops at once). A subscription that
worked longer and is cut (``CLIENT KILL``, an output-buffer limit, a
half-open socket) is remade at once, after a jitter of at most
``RESUBSCRIBE_JITTER``: every instant unsubscribed is events lost. Nothing
but cancellation ends ``run``: an unexpected error is logged and treated
like a lost connection.

The watchdog: a subscription silent for ``probe_interval`` seconds is sent a
PING. With no answer after ``probe_timeout`` more, the watchdog asks whether
Redis answers at all, on a command connection. If it does, this subscription
is dead (half-open): what it already received is drained and relayed, then
it is rebuilt. If Redis answers nobody (``CLIENT PAUSE``, SIGSTOP, a network
cut), a new connection would not help and would lose what Redis queued for
this one, so the subscription is kept, reported down, and checked again.
A pause Redis recovers from then costs nothing (issue 16, item 9a). The
question "does Redis answer?" is ``redis_answers``.

Liveness of the subscription itself (issue 10): a pub/sub socket never writes,
so one left on a demoted or partitioned master never fails, and PING answers
prove only that the socket works, not that it is on the server the publishers
write to. So every ``liveness_interval`` (2 s with Sentinel) and on every
watchdog decision the reader

- compares the subscription's peer with the master the sentinels name now
  (``MasterLocator``) and resubscribes on a mismatch;
- PUBLISHes a nonce on the command connection to a channel only this process
  subscribes to (``connectome:gateway:probe:<host>-<pid>-<random>``, in the
  same pub/sub connection as ``sse:*``). PUBLISH returns its receivers: 0 proves
  at once that our subscription is not on that server (resubscribe); otherwise
  the echo arriving is traffic that keeps the watchdog quiet, and an echo that
  never comes leaves the subscription silent, which the watchdog above handles.

The same private channel is the barrier ``caught_up`` (see ``source``): a
nonce PUBLISHed after the call began arrives on the subscription after every
message Redis took before it (Redis runs commands one at a time, and a
subscriber's messages leave in that order), so once it is read, everything
published earlier has been relayed.

The command pool is told the new master first, so the probe (and snapshot
reads) go where the publishers write. Sentinels that cannot be asked give no
verdict: the subscription is kept.

Timeouts are set explicitly (see STYLE.md's redis-py traps): reads poll with
``get_message(timeout=...)``, commands have a ``socket_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError, NoPermissionError, RedisError, TimeoutError

from connectome_core.backoff import Backoff
from connectome_core.contract import CHANNEL_PATTERN, SNAPSHOT_PREFIX, is_valid_event_name
from connectome_core.logs import RateLimitedLog
from connectome_core.redis_connect import (
    MasterLocator,
    RedisUnavailable,
    async_client,
    describe_error,
    is_configuration_error,
    short_error,
)
from connectome_core.redis_target import Address, RedisTarget, parse_redis_url
from sse_gateway.source import SourceListener, SourceUnavailable

log = logging.getLogger("sse_gateway.redis")
_limited = RateLimitedLog(log)

_CONNECTION_ERRORS = (RedisError, OSError, asyncio.TimeoutError)

# Shown by CLIENT LIST, so operators can count a gateway's connections (one
# subscription plus a small pool for snapshot reads, whatever the clients).
CLIENT_NAME = "sse-gateway"

# Snapshot discovery (issue 16, item 11). SCAN's default COUNT looks at ~10 keys per
# round trip: on a shared Redis with a million keys, 100,000 round trips per read. With
# COUNT 1000 that is ~1,000 short ones. A registry of event types would be cheaper still
# but changes the wire contract (every publisher, `redis-cli` included, would have to
# register), so discovery stays a SCAN, bounded in keys and bytes so that a Redis full
# of `sse:last:*` keys cannot make one read unbounded.
SCAN_COUNT = 1000
MGET_BATCH = 500
MAX_SNAPSHOT_KEYS = 10_000
MAX_SNAPSHOT_BYTES = 64 * 1024 * 1024

# The liveness round trip's private channel (README's gateway ACL: &connectome:gateway:*).
PROBE_CHANNEL_PREFIX = "connectome:gateway:probe:"
SENTINEL_LIVENESS_INTERVAL = 2.0
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


class SubscriptionMisplaced(ConnectionError):
    """The subscription is on a server the publishers no longer write to: rebuild it."""


def probe_channel() -> str:
    """A channel no other process subscribes to: host, pid and a random part."""
    return f"{PROBE_CHANNEL_PREFIX}{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


class RedisSource:
    def __init__(
        self,
        target: RedisTarget | str,
        *,
        probe_interval: float = 5.0,
        probe_timeout: float = 5.0,
        command_timeout: float = 5.0,
        backoff: Backoff | None = None,
        stable_after: float = STABLE_AFTER_S,
        liveness_interval: float | None = None,
        catch_up_timeout: float = CATCH_UP_TIMEOUT_S,
    ) -> None:
        self.catch_up_timeout = catch_up_timeout
        self.target = parse_redis_url(target) if isinstance(target, str) else target
        # Seconds between liveness checks (peer vs master, probe round trip); default
        # 2 s with Sentinel, where a failover moves the master, else probe_interval.
        self.liveness_interval = liveness_interval or (
            SENTINEL_LIVENESS_INTERVAL if self.target.is_sentinel else probe_interval
        )
        self.probe_channel = probe_channel()
        self._probe_ready = False  # Redis confirmed the probe channel's SUBSCRIBE
        self._barriers: dict[bytes, asyncio.Future[None]] = {}  # caught_up's nonces
        self._locator = MasterLocator(self.target) if self.target.is_sentinel else None
        self.probe_interval = probe_interval
        self.probe_timeout = probe_timeout
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

    async def run(self, listener: SourceListener) -> None:
        first = True
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
                lost_peer = _peer(pubsub)
                await pubsub.subscribe(self.probe_channel)
                _reraise_swallowed_cancel()
                subscribed_at = time.monotonic()
                log.info(
                    "redis %s: subscribed to %s on %s (%s)",
                    "connected" if first else "reconnected",
                    CHANNEL_PATTERN,
                    self.target.display(),
                    _format_peer(_peer(pubsub)),
                )
                first = False
                _notify(listener.on_connected)
                await self._read(pubsub, listener)
            except Exception as exc:  # nothing but cancellation ends the reader
                worked = subscribed_at is not None and (
                    time.monotonic() - subscribed_at >= self.stable_after
                )
                if worked or isinstance(exc, SubscriptionMisplaced):
                    # Redis answered and the subscription worked (or the master is known
                    # and answers): come back at once. Only a failed attempt backs off.
                    self.backoff.reset()
                    delay = random.uniform(0.0, RESUBSCRIBE_JITTER)
                else:
                    delay = self.backoff.next_delay()
                if isinstance(exc, SubscriptionMisplaced):
                    log.warning("%s; resubscribing in %.2fs", exc, delay)
                elif is_configuration_error(exc):
                    # A setting (or the server's ACL) changed under a running gateway.
                    _limited.log(
                        logging.ERROR,
                        "misconfigured",
                        "%s; retrying in %.2fs",
                        describe_error(exc, self.target),
                        delay,
                    )
                elif isinstance(exc, _CONNECTION_ERRORS):
                    _limited.warning(
                        "lost",
                        "redis lost (%s); reconnecting in %.2fs",
                        short_error(exc),
                        delay,
                    )
                else:
                    failed = "redis reader failed (%r); reconnecting in %.2fs"
                    if _limited.log(logging.ERROR, "failed", failed, exc, delay):
                        log.error("traceback of the failure above", exc_info=exc)
                _notify(listener.on_disconnected)
                await self._before_reconnect(delay, lost_peer)
            finally:
                await _quietly_close(pubsub)
                with contextlib.suppress(*_CONNECTION_ERRORS):
                    await client.aclose()

    async def _before_reconnect(self, delay: float, lost_peer: Address | None) -> None:
        """Wait ``delay`` before the next attempt; with Sentinel, stop waiting as soon as the
        sentinels name a master other than the node just lost (a failover is done: go now,
        whatever the backoff had grown to, so that few events are published unheard)."""
        if self._locator is None or lost_peer is None:
            await asyncio.sleep(delay)
            return
        deadline = time.monotonic() + delay
        while (remaining := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(FAILOVER_POLL_S, remaining))
            master = await self._follow_master()
            if master is not None and master != lost_peer:
                log.info("the sentinels name a new master, %s: resubscribing", _format_peer(master))
                self.backoff.reset()
                return

    async def _read(self, pubsub: aioredis.client.PubSub, listener: SourceListener) -> None:
        self._probe_ready = False  # set when Redis confirms the probe channel's SUBSCRIBE
        checks = _LivenessChecks(lambda: self.check_subscription(pubsub), self.liveness_interval)
        try:
            await self._watch(pubsub, listener, checks)
        finally:
            await checks.aclose()

    async def _watch(
        self, pubsub: aioredis.client.PubSub, listener: SourceListener, checks: _LivenessChecks
    ) -> None:
        last_heard = time.monotonic()
        probe_sent: float | None = None
        stalled = False
        while True:
            message = await pubsub.get_message(timeout=min(1.0, self.liveness_interval))
            _reraise_swallowed_cancel()
            now = time.monotonic()
            checks.poll(now)  # raises SubscriptionMisplaced once a check proved it
            if message is not None:
                last_heard, probe_sent = now, None
                if stalled:
                    stalled = False
                    log.info("redis answers again; the subscription was kept")
                    _notify(lambda: listener.on_connected(resumed=True))
                self._note_probe(message)
                _deliver(listener, message)
                continue
            if probe_sent is None:
                if now - last_heard > self.probe_interval:
                    await pubsub.ping()
                    probe_sent = now
                continue
            if now - probe_sent <= self.probe_timeout:
                continue
            # A watchdog decision: check at once where the subscription is, too.
            checks.poll(now, due=True)
            if await self.redis_answers():
                # Redis answers others. Relay what this subscription already received;
                # then, as Redis may have just woken up (a pause ends for every client in
                # turn), one more PING with a full probe_timeout to answer. Only silence
                # after that means the subscription is dead.
                heard = await _drain(pubsub, listener, 0.0, self._note_probe)
                if not heard:
                    await pubsub.ping()
                    heard = await _drain(pubsub, listener, self.probe_timeout, self._note_probe)
                if heard:
                    last_heard, probe_sent = time.monotonic(), None
                    if stalled:
                        stalled = False
                        log.info("redis answers again; the subscription was kept")
                        _notify(lambda: listener.on_connected(resumed=True))
                    continue
                raise ConnectionError(
                    f"no answer to PING for {self.probe_timeout:.1f}s while Redis answers "
                    "other connections (half-open subscription)"
                )
            # Redis answers nobody: keep this subscription (Redis may be queueing
            # messages for it) and look again after another probe_timeout.
            if not stalled:
                stalled = True
                _limited.warning(
                    "stalled",
                    "redis answers no command (paused or frozen?); keeping the subscription",
                )
                _notify(listener.on_disconnected)
            probe_sent = time.monotonic()

    async def redis_answers(self) -> bool:
        """Whether Redis (with Sentinel: the current master) answers a command on another
        connection within the command timeout."""
        try:
            await self._follow_master()
            return bool(await self._commands.ping())
        except _CONNECTION_ERRORS:
            return False

    async def check_subscription(self, pubsub: aioredis.client.PubSub) -> None:
        """Raise :class:`SubscriptionMisplaced` when the subscription provably is not on the
        server the publishers write to; no verdict (return) when that cannot be told now."""
        master = await self._follow_master()
        peer = _peer(pubsub)
        if master is not None and peer is not None and peer != master:
            raise SubscriptionMisplaced(
                f"the subscription is on {_format_peer(peer)} but the sentinels name "
                f"{_format_peer(master)} as master"
            )
        if not self._probe_ready:
            return
        nonce = secrets.token_hex(8)
        try:
            receivers = await self._commands.publish(self.probe_channel, nonce)
        except NoPermissionError as exc:  # the ACL lacks the probe channel: no verdict
            _limited.warning("probe_denied", "liveness probe: %s", describe_error(exc, self.target))
            return
        except _CONNECTION_ERRORS:
            return  # Redis does not answer commands: the watchdog's case, not ours
        if receivers == 0:
            raise SubscriptionMisplaced(
                "the liveness probe reached no subscriber: the subscription is not on the "
                f"server that {self.target.display()} leads to"
            )

    async def _follow_master(self) -> Address | None:
        """With Sentinel: the master now, and the command pool moved there (its idle
        connections to a former master are closed). None without Sentinel, or when no
        sentinel can say."""
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

    def _note_probe(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "message" and self._barriers:
            barrier = self._barriers.get(message["data"])
            if barrier is not None and not barrier.done():
                barrier.set_result(None)
        elif kind == "subscribe" and _text(message["channel"]) == self.probe_channel:
            self._probe_ready = True

    async def caught_up(self) -> bool:
        """True once every message Redis took before this call has reached the listener
        (a nonce through the probe channel, see the module docstring); False when that
        cannot be told within ``catch_up_timeout``."""
        if not self._probe_ready:
            return False  # no subscription (yet): nothing to be behind of
        nonce = secrets.token_hex(8).encode()
        barrier = self._barriers[nonce] = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(self.catch_up_timeout):
                if not await self._commands.publish(self.probe_channel, nonce):
                    return False  # our subscription is not there: the liveness check's case
                await barrier
            return True
        except (NoPermissionError, *_CONNECTION_ERRORS):
            return False
        finally:
            del self._barriers[nonce]

    async def read_snapshots(self) -> dict[str, bytes]:
        try:
            keys: list[bytes] = []
            async for key in self._commands.scan_iter(
                match=SNAPSHOT_PREFIX + "*", count=SCAN_COUNT
            ):
                if len(keys) >= MAX_SNAPSHOT_KEYS:
                    _limited.warning(
                        "too_many_keys",
                        "more than %d snapshot keys: the rest are not sent",
                        MAX_SNAPSHOT_KEYS,
                    )
                    break
                keys.append(key)
            snapshots: dict[str, bytes] = {}
            total = 0
            for start in range(0, len(keys), MGET_BATCH):
                batch = keys[start : start + MGET_BATCH]
                for key, value in zip(batch, await self._commands.mget(batch), strict=True):
                    event = _text(key)[len(SNAPSHOT_PREFIX) :]
                    if not isinstance(value, bytes) or not is_valid_event_name(event):
                        continue
                    total += len(value)
                    if total > MAX_SNAPSHOT_BYTES:
                        _limited.warning(
                            "too_many_bytes",
                            "snapshots larger than %d bytes in all: the rest are not sent",
                            MAX_SNAPSHOT_BYTES,
                        )
                        return snapshots
                    snapshots[event] = value
        except _CONNECTION_ERRORS as exc:
            raise SourceUnavailable(f"{type(exc).__name__}: {exc}") from exc
        return snapshots

    async def aclose(self) -> None:
        try:
            await self._commands.aclose()
        finally:
            if self._locator is not None:
                await self._locator.aclose()


class _LivenessChecks:
    """``check_subscription`` in the background, every ``interval`` seconds.

    In the background because it waits on the sentinels and on a PUBLISH: a paused
    Redis must not hold up the read loop and its watchdog. One check at a time; a
    finished check's verdict is raised by the next :meth:`poll`.
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


def _reraise_swallowed_cancel() -> None:
    # redis-py (seen with 8.1) can swallow a cancellation that lands while it
    # connects; the task then runs on and shutdown waits for ever. The request
    # is still recorded on the task, so honour it here.
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _notify(callback: Callable[[], None]) -> None:
    # A listener bug must not end the reader: it is logged, and the loop goes on.
    try:
        callback()
    except Exception as exc:
        if _limited.log(logging.ERROR, "listener", "source listener failed: %r", exc):
            log.error("traceback of the failure above", exc_info=exc)


def _deliver(listener: SourceListener, message: dict[str, Any]) -> None:
    if message["type"] != "pmessage":
        return
    try:  # as _notify, without a closure per message
        listener.on_message(_text(message["channel"]), message["data"])
    except Exception as exc:
        if _limited.log(logging.ERROR, "listener", "source listener failed: %r", exc):
            log.error("traceback of the failure above", exc_info=exc)


async def _drain(
    pubsub: aioredis.client.PubSub,
    listener: SourceListener,
    wait: float,
    note: Callable[[dict[str, Any]], None],
) -> bool:
    """Relay what the connection holds, waiting up to ``wait`` for a first message.

    True when anything at all came (a message or a PING's answer): the connection lives.
    """
    heard = False
    deadline = time.monotonic() + wait
    while True:
        remaining = 0.01 if heard else max(0.01, deadline - time.monotonic())
        message = await pubsub.get_message(timeout=remaining)
        if message is None:
            if heard or time.monotonic() >= deadline:
                return heard
            continue
        heard = True
        note(message)
        _deliver(listener, message)


def _peer(pubsub: aioredis.client.PubSub) -> Address | None:
    """The address the subscription's socket is connected to (None: a Unix socket)."""
    connection = pubsub.connection
    host = getattr(connection, "host", None)
    port = getattr(connection, "port", None)
    if not isinstance(host, str) or not isinstance(port, int):
        return None
    return host, port


def _format_peer(peer: Address | None) -> str:
    return "a unix socket" if peer is None else f"{peer[0]}:{peer[1]}"


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


async def _quietly_close(pubsub: aioredis.client.PubSub) -> None:
    try:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        if pubsub.connection_pool is not None:
            await pubsub.connection_pool.disconnect()
    except _CONNECTION_ERRORS:
        pass
