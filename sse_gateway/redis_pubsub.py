"""Small pieces of handling a redis-py pub/sub connection that the Redis modules share.

Handing messages to the listener (a listener bug never ends the reader), reading what
a connection already holds, its peer address, closing it quietly, and the errors that
mean "Redis cannot be reached".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from connectome_core.logs import RateLimitedLog
from connectome_core.redis_target import Address
from sse_gateway.source import SourceListener

log = logging.getLogger("sse_gateway.redis")
limited = RateLimitedLog(log)

CONNECTION_ERRORS = (RedisError, OSError, asyncio.TimeoutError)

PubSub = aioredis.client.PubSub


def reraise_swallowed_cancel() -> None:
    # redis-py (seen with 8.1) can swallow a cancellation that lands while it
    # connects; the task then runs on and shutdown waits for ever. The request
    # is still recorded on the task, so honour it here.
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def notify(callback: Callable[[], None]) -> None:
    # A listener bug must not end the reader: it is logged, and the loop goes on.
    try:
        callback()
    except Exception as exc:
        if limited.log(logging.ERROR, "listener", "source listener failed: %r", exc):
            log.error("traceback of the failure above", exc_info=exc)


def deliver(listener: SourceListener, message: dict[str, Any]) -> None:
    if message["type"] != "pmessage":
        return
    try:  # as notify, without a closure per message
        listener.on_message(text(message["channel"]), message["data"])
    except Exception as exc:
        if limited.log(logging.ERROR, "listener", "source listener failed: %r", exc):
            log.error("traceback of the failure above", exc_info=exc)


async def drain(
    pubsub: PubSub,
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
        deliver(listener, message)


def peer_of(pubsub: PubSub) -> Address | None:
    """The address the subscription's socket is connected to (None: a Unix socket)."""
    connection = pubsub.connection
    host = getattr(connection, "host", None)
    port = getattr(connection, "port", None)
    if not isinstance(host, str) or not isinstance(port, int):
        return None
    return host, port


def format_peer(peer: Address | None) -> str:
    return "a unix socket" if peer is None else f"{peer[0]}:{peer[1]}"


def text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


async def quietly_close(pubsub: PubSub) -> None:
    try:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        if pubsub.connection_pool is not None:
            await pubsub.connection_pool.disconnect()
    except CONNECTION_ERRORS:
        pass
