"""The Redis EventSource: one pattern subscription per process, and the snapshot reads.

We own the reconnect loop instead of trusting the client library's: every
failure is logged once, counted, followed by a capped jittered backoff and a
fresh connection. A watchdog PINGs a subscription that has been silent for
``probe_interval`` seconds and rebuilds it when no answer comes within
``probe_timeout``: a half-open socket never raises by itself.

Timeouts are set explicitly (see STYLE.md's redis-py traps): reads poll with
``get_message(timeout=...)``, commands have a ``socket_timeout``.
"""

from __future__ import annotations

import asyncio
import logging
import time

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError, RedisError, TimeoutError

from connectome_sse.backoff import Backoff
from connectome_sse.contract import CHANNEL_PATTERN, SNAPSHOT_PREFIX, is_valid_event_name
from connectome_sse.redaction import redact_url
from sse_gateway.source import SourceListener, SourceUnavailable

log = logging.getLogger("sse_gateway.redis")

_CONNECTION_ERRORS = (RedisError, OSError, asyncio.TimeoutError)

# Shown by CLIENT LIST, so operators can count a gateway's connections (one
# subscription plus a small pool for snapshot reads, whatever the clients).
CLIENT_NAME = "sse-gateway"


class RedisSource:
    def __init__(
        self,
        url: str,
        *,
        probe_interval: float = 5.0,
        probe_timeout: float = 5.0,
        command_timeout: float = 5.0,
        backoff: Backoff | None = None,
    ) -> None:
        self.url = url
        self.probe_interval = probe_interval
        self.probe_timeout = probe_timeout
        self.command_timeout = command_timeout
        self.backoff = backoff or Backoff(base=0.1, cap=5.0)
        # Snapshot reads share one small pool; the subscription has its own connection.
        # A pooled connection may have died with a Redis restart: one retry on a fresh one.
        self._commands = aioredis.from_url(
            url,
            socket_timeout=command_timeout,
            socket_connect_timeout=command_timeout,
            max_connections=4,
            client_name=CLIENT_NAME,
            retry=Retry(NoBackoff(), retries=1),
            retry_on_error=[ConnectionError, TimeoutError],
        )

    async def run(self, listener: SourceListener) -> None:
        first = True
        while True:
            pubsub = aioredis.from_url(
                self.url,
                socket_timeout=self.command_timeout,
                socket_connect_timeout=self.command_timeout,
                client_name=CLIENT_NAME,
            ).pubsub()
            try:
                await pubsub.psubscribe(CHANNEL_PATTERN)
                _reraise_swallowed_cancel()
                log.info(
                    "redis %s: subscribed to %s on %s",
                    "connected" if first else "reconnected",
                    CHANNEL_PATTERN,
                    redact_url(self.url),
                )
                first = False
                self.backoff.reset()
                listener.on_connected()
                await self._read(pubsub, listener)
            except _CONNECTION_ERRORS as exc:
                delay = self.backoff.next_delay()
                log.warning(
                    "redis lost (%s: %s); reconnecting in %.2fs",
                    type(exc).__name__,
                    exc,
                    delay,
                )
                listener.on_disconnected()
                await asyncio.sleep(delay)
            finally:
                await _quietly_close(pubsub)

    async def _read(self, pubsub: aioredis.client.PubSub, listener: SourceListener) -> None:
        last_heard = time.monotonic()
        probe_sent: float | None = None
        while True:
            message = await pubsub.get_message(timeout=1.0)
            _reraise_swallowed_cancel()
            now = time.monotonic()
            if message is not None:
                last_heard, probe_sent = now, None
                if message["type"] == "pmessage":
                    listener.on_message(_text(message["channel"]), message["data"])
                continue
            if probe_sent is not None:
                if now - probe_sent > self.probe_timeout:
                    raise ConnectionError(
                        f"no answer to PING for {self.probe_timeout:.0f}s (half-open connection)"
                    )
            elif now - last_heard > self.probe_interval:
                await pubsub.ping()
                probe_sent = now

    async def read_snapshots(self) -> dict[str, bytes]:
        try:
            keys = [key async for key in self._commands.scan_iter(match=SNAPSHOT_PREFIX + "*")]
            values = await self._commands.mget(keys) if keys else []
        except _CONNECTION_ERRORS as exc:
            raise SourceUnavailable(f"{type(exc).__name__}: {exc}") from exc
        snapshots: dict[str, bytes] = {}
        for key, value in zip(keys, values, strict=True):
            event = _text(key)[len(SNAPSHOT_PREFIX) :]
            if isinstance(value, bytes) and is_valid_event_name(event):
                snapshots[event] = value
        return snapshots

    async def aclose(self) -> None:
        await self._commands.aclose()


def _reraise_swallowed_cancel() -> None:
    # redis-py (seen with 8.1) can swallow a cancellation that lands while it
    # connects; the task then runs on and shutdown waits for ever. The request
    # is still recorded on the task, so honour it here.
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


async def _quietly_close(pubsub: aioredis.client.PubSub) -> None:
    try:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        if pubsub.connection_pool is not None:
            await pubsub.connection_pool.disconnect()
    except _CONNECTION_ERRORS:
        pass
