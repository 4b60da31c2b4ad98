"""Redis clients for a :class:`~connectome_core.redis_target.RedisTarget`, and the start-up check.

Every process builds its clients here, never with ``from_url``. A Sentinel
target gets redis-py's ``Sentinel(...).master_for(name)`` client, whose new
connections ask the sentinels for the master; closing it closes the sentinel
connections too. Timeouts are explicit on every client: library defaults change
between releases. The sentinel and error helpers are re-exported here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import re
from typing import Any, Protocol

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.sentinel import Sentinel as SyncSentinel

from connectome_core.redis_errors import (
    RedisMisconfigured,
    RedisUnavailable,
    describe_error,
    is_configuration_error,
    short_error,
)
from connectome_core.redis_options import (
    auth_options,
    master_name,
    no_maint_notifications,
    sentinel_options,
    tls_options,
)
from connectome_core.redis_sentinel import SENTINEL_TIMEOUT, MasterLocator, current_master
from connectome_core.redis_target import RedisTarget

__all__ = [
    "MIN_REDIS_VERSION",
    "MasterLocator",
    "RedisMisconfigured",
    "RedisUnavailable",
    "SentinelAsyncRedis",
    "SentinelSyncRedis",
    "async_client",
    "current_master",
    "describe_error",
    "explain_error",
    "explain_error_sync",
    "is_configuration_error",
    "server_version",
    "short_error",
    "startup_problem",
    "startup_problem_sync",
    "sync_client",
    "tls_options",
    "too_old",
]

SOCKET_TIMEOUT = 5.0
CONNECT_TIMEOUT = 3.0


class SentinelAsyncRedis(aioredis.Redis):
    """A ``master_for`` client that also closes its connections to the sentinels."""

    # Not ``sentinel``: that name is the SENTINEL command's method.
    owned_sentinel: AsyncSentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        try:
            await super().aclose(close_connection_pool)
        finally:
            if self.owned_sentinel is not None:
                sentinel, self.owned_sentinel = self.owned_sentinel, None
                await sentinel.aclose()


class SentinelSyncRedis(redis.Redis):
    """The synchronous twin of :class:`SentinelAsyncRedis`."""

    owned_sentinel: SyncSentinel | None = None

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.owned_sentinel is not None:
                sentinel, self.owned_sentinel = self.owned_sentinel, None
                sentinel.close()


def async_client(
    target: RedisTarget,
    *,
    socket_timeout: float | None = SOCKET_TIMEOUT,
    socket_connect_timeout: float = CONNECT_TIMEOUT,
    sentinel_timeout: float = SENTINEL_TIMEOUT,
    **options: Any,
) -> aioredis.Redis:
    """A ``redis.asyncio.Redis`` for ``target``; ``options`` are further connection options
    (``client_name``, ``retry``, ``health_check_interval``, ``decode_responses``...)."""
    connection: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_connect_timeout,
        **auth_options(target),
        **no_maint_notifications(),
        **options,
    }
    if target.kind == "unix":
        return aioredis.Redis(unix_socket_path=target.path, **connection)
    if target.kind == "tcp":
        host, port = target.addresses[0]
        return aioredis.Redis(host=host, port=port, **connection, **tls_options(target))
    sentinel = AsyncSentinel(  # type: ignore[no-untyped-call]
        list(target.addresses),
        sentinel_kwargs=sentinel_options(target, sentinel_timeout),
        **connection,
        **tls_options(target),
    )
    client: SentinelAsyncRedis = sentinel.master_for(
        master_name(target), redis_class=SentinelAsyncRedis
    )
    client.owned_sentinel = sentinel
    return client


def sync_client(
    target: RedisTarget,
    *,
    socket_timeout: float | None = SOCKET_TIMEOUT,
    socket_connect_timeout: float = CONNECT_TIMEOUT,
    sentinel_timeout: float = SENTINEL_TIMEOUT,
    **options: Any,
) -> redis.Redis:
    """A ``redis.Redis`` for ``target``; see :func:`async_client`."""
    connection: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_connect_timeout,
        **auth_options(target),
        **no_maint_notifications(),
        **options,
    }
    if target.kind == "unix":
        return redis.Redis(unix_socket_path=target.path, **connection)
    if target.kind == "tcp":
        host, port = target.addresses[0]
        return redis.Redis(host=host, port=port, **connection, **tls_options(target))
    sentinel = SyncSentinel(  # type: ignore[no-untyped-call]
        list(target.addresses),
        sentinel_kwargs=sentinel_options(target, sentinel_timeout, sync=True),
        **connection,
        **tls_options(target),
    )
    client: SentinelSyncRedis = sentinel.master_for(  # type: ignore[no-untyped-call]
        master_name(target), redis_class=SentinelSyncRedis
    )
    client.owned_sentinel = sentinel
    return client


async def startup_problem(target: RedisTarget) -> str | None:
    """The start-up check of a long-running process: one line when a setting must change
    (stop the process), None when Redis works or is only unreachable for now (retry).

    Configuration: an unknown master name, a sentinel password refused, a certificate
    that does not verify, a refused password, a missing ACL permission for PING.
    Connection refused, timeouts, a master being failed over: None.
    """
    if target.is_sentinel:
        try:
            await current_master(target)
        except RedisMisconfigured as exc:
            return str(exc)
        except RedisUnavailable:
            return None
        except (RedisError, OSError) as exc:
            return describe_error(exc, target) if is_configuration_error(exc) else None
    # One try: redis-py retries a refused password or a failed handshake like a lost
    # connection (3 times, backing off: 3 s before the one line), and neither can heal.
    client = async_client(target, retry=AsyncRetry(NoBackoff(), retries=0))
    try:
        await client.ping()
        return too_old(await server_version(client), target)
    except (RedisError, OSError) as exc:
        return describe_error(exc, target) if is_configuration_error(exc) else None
    finally:
        with contextlib.suppress(RedisError, OSError):
            await client.aclose()


# The oldest Redis the suite runs (Debian bookworm's 7.0), and the first with
# read-only key patterns (%R~) for the gateway's ACL rule.
MIN_REDIS_VERSION = (7, 0)


class CommandClient(Protocol):
    """What :func:`server_version` needs of a client (redis-py's asyncio one is untyped)."""

    async def execute_command(self, *args: Any, **options: Any) -> Any: ...


async def server_version(client: CommandClient) -> tuple[int, ...] | None:
    """The server's version from ``HELLO 2`` (which every ACL user may send), or None
    when it cannot be told; ``(0,)`` for a server older than 6.0, which has no HELLO."""
    try:
        reply = await client.execute_command("HELLO", "2")
    except ResponseError as exc:
        return (0,) if "unknown command" in str(exc).lower() else None
    fields = reply if isinstance(reply, dict) else dict(zip(reply[::2], reply[1::2], strict=False))
    text = fields.get(b"version", fields.get("version"))
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    numbers = re.match(r"(\d+)\.(\d+)", text) if isinstance(text, str) else None
    return (int(numbers[1]), int(numbers[2])) if numbers else None


def too_old(version: tuple[int, ...] | None, target: RedisTarget) -> str | None:
    """One line when ``version`` is below the minimum; None when it is fine or unknown."""
    if version is None or version >= MIN_REDIS_VERSION:
        return None
    have = "older than 6.0" if version == (0,) else ".".join(map(str, version))
    need = ".".join(map(str, MIN_REDIS_VERSION))
    return f"REDIS_URL: {target.display()} runs Redis {have}; connectome-sse needs {need} or later"


def startup_problem_sync(target: RedisTarget) -> str | None:
    """:func:`startup_problem` from synchronous code, even inside a running event loop
    (uvicorn calls the gateway's app factory from its loop): it runs on its own thread."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, startup_problem(target)).result()


async def explain_error(exc: BaseException, target: RedisTarget) -> str:
    """Like :func:`describe_error`, but a Sentinel target's failure to connect is explained
    by asking the sentinels (unreachable, password refused, unknown master name, master down)."""
    if target.is_sentinel and isinstance(exc, (RedisConnectionError, RedisTimeoutError, OSError)):
        try:
            await current_master(target)
        except RedisUnavailable as precise:
            return str(precise)
        except (RedisError, OSError):
            pass
    return describe_error(exc, target)


def explain_error_sync(exc: BaseException, target: RedisTarget) -> str:
    """:func:`explain_error` for synchronous callers (no running event loop)."""
    return asyncio.run(explain_error(exc, target))
