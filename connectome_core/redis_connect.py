"""Redis clients for a :class:`~connectome_core.redis_target.RedisTarget`, and one-line errors.

Every process builds its clients here, never with ``from_url``:

- :func:`async_client` / :func:`sync_client`: a ``redis.asyncio.Redis`` or
  ``redis.Redis`` for any target. A Sentinel target gets redis-py's public
  ``Sentinel(...).master_for(name)`` client: each new connection asks the
  sentinels for the current master, and a command that meets ``READONLY`` (a
  demoted master) drops its connection. Closing the client also closes its
  sentinel connections.
- :class:`MasterLocator` / :func:`current_master`: ask the sentinels, now,
  which address is the master. redis-py only re-asks when it makes a new
  connection, and a pub/sub socket on a demoted master never writes, so it
  never meets ``READONLY``: a subscriber compares its connection's peer
  (``pubsub.connection.host``/``.port``) with this address to notice.
- :func:`describe_error` (and :func:`explain_error`, which asks the sentinels
  why a Sentinel target failed): any exception from the above as one line that starts
  with the setting to look at (``REDIS_URL``, ``REDIS_TLS_CA_FILE``,
  ``REDIS_SENTINEL_PASSWORD``) and shows no password: an unknown master name,
  unreachable sentinels, a certificate that does not verify, an ACL user that
  lacks a permission (``NOPERM``), a refused password, an unreachable server.

TLS always verifies the server's certificate and host name
(``ssl_cert_reqs="required"``, ``ssl_check_hostname=True``); there is no
switch to turn that off. With a Sentinel target the master's address comes
from the sentinels (an IP unless they announce host names), so the master's
certificate must name that address.

Timeouts are explicit on every client (the STYLE trap: a library default that
changes between releases). Callers that hold a pub/sub connection and read it
with ``get_message(timeout=...)`` pass ``socket_timeout=None`` or a value
longer than their idle period.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import re
import ssl
from typing import Any, Protocol

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import MasterNotFoundError as AsyncMasterNotFoundError
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.backoff import NoBackoff
from redis.exceptions import (
    AuthenticationError,
    NoPermissionError,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry as SyncRetry
from redis.sentinel import MasterNotFoundError as SyncMasterNotFoundError
from redis.sentinel import Sentinel as SyncSentinel

from connectome_core.redis_target import Address, RedisTarget

SOCKET_TIMEOUT = 5.0
CONNECT_TIMEOUT = 3.0
# A dead sentinel must not hold up the question to the next one for long.
SENTINEL_TIMEOUT = 1.0


class RedisUnavailable(Exception):
    """Redis (or its sentinels) could not be used; the message is one line, password-free."""


class RedisMisconfigured(RedisUnavailable):
    """A :class:`RedisUnavailable` that retrying cannot cure: a setting must change
    (the sentinels know no such master name, or refused ``REDIS_SENTINEL_PASSWORD``)."""


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


def tls_options(target: RedisTarget) -> dict[str, Any]:
    """redis-py's TLS connection options for ``target`` (empty when it is not TLS)."""
    if not target.tls:
        return {}

    def text(path: object) -> str | None:
        return None if path is None else str(path)

    return {
        "ssl": True,
        "ssl_ca_certs": text(target.tls_ca_file),  # None: the system's CA store
        "ssl_certfile": text(target.tls_cert_file),
        "ssl_keyfile": text(target.tls_key_file),
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": True,
    }


def _auth_options(target: RedisTarget) -> dict[str, Any]:
    return {
        "username": target.username,
        "password": target.password.get_secret_value() if target.password else None,
        "db": target.db,
    }


def _sentinel_options(target: RedisTarget, timeout: float, sync: bool = False) -> dict[str, Any]:
    password = target.sentinel_password
    return {
        # Asking the next sentinel is the retry; redis-py's default backoff would spend
        # seconds on each dead one before moving on.
        "retry": SyncRetry(NoBackoff(), 0) if sync else AsyncRetry(NoBackoff(), 0),
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "password": password.get_secret_value() if password else None,
        **tls_options(target),
    }


def _master_name(target: RedisTarget) -> str:
    assert target.master_name is not None, "a sentinel target always has a master name"
    return target.master_name


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
        **_auth_options(target),
        **options,
    }
    if target.kind == "unix":
        return aioredis.Redis(unix_socket_path=target.path, **connection)
    if target.kind == "tcp":
        host, port = target.addresses[0]
        return aioredis.Redis(host=host, port=port, **connection, **tls_options(target))
    sentinel = AsyncSentinel(  # type: ignore[no-untyped-call]
        list(target.addresses),
        sentinel_kwargs=_sentinel_options(target, sentinel_timeout),
        **connection,
        **tls_options(target),
    )
    client: SentinelAsyncRedis = sentinel.master_for(
        _master_name(target), redis_class=SentinelAsyncRedis
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
        **_auth_options(target),
        **options,
    }
    if target.kind == "unix":
        return redis.Redis(unix_socket_path=target.path, **connection)
    if target.kind == "tcp":
        host, port = target.addresses[0]
        return redis.Redis(host=host, port=port, **connection, **tls_options(target))
    sentinel = SyncSentinel(  # type: ignore[no-untyped-call]
        list(target.addresses),
        sentinel_kwargs=_sentinel_options(target, sentinel_timeout, sync=True),
        **connection,
        **tls_options(target),
    )
    client: SentinelSyncRedis = sentinel.master_for(  # type: ignore[no-untyped-call]
        _master_name(target), redis_class=SentinelSyncRedis
    )
    client.owned_sentinel = sentinel
    return client


class MasterLocator:
    """Asks a target's sentinels which address is the master, with one-line failures.

    Keep one for the life of a process and call :meth:`master` as often as
    needed (every watchdog tick): the sentinel connections are reused. For a
    plain TCP target the answer is the URL's address; a Unix socket has none.
    """

    def __init__(self, target: RedisTarget, timeout: float = SENTINEL_TIMEOUT) -> None:
        self.target = target
        self._sentinel = (
            AsyncSentinel(  # type: ignore[no-untyped-call]
                list(target.addresses), sentinel_kwargs=_sentinel_options(target, timeout)
            )
            if target.is_sentinel
            else None
        )

    async def master(self) -> Address:
        """The current master's ``(host, port)``; :class:`RedisUnavailable` if none is known."""
        if self._sentinel is None:
            if self.target.kind == "unix":
                raise ValueError("a unix:// target has no network address")
            return self.target.addresses[0]
        name = _master_name(self.target)
        unreachable: list[str] = []
        refused: list[str] = []
        down = False
        misconfigured = False  # a sentinel's certificate did not verify, for example
        for node in list(self._sentinel.sentinels):
            where = _node_name(node)
            try:
                masters: dict[str, dict[str, Any]] = await node.sentinel_masters()  # type: ignore[assignment]
            except AuthenticationError as exc:
                refused.append(f"{where} ({_one_line(exc)})")
                continue
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                unreachable.append(f"{where} ({_one_line(exc)})")
                misconfigured = misconfigured or is_configuration_error(exc)
                continue
            state = masters.get(name)
            if state is None:
                continue
            if self._sentinel.check_master_state(state, name):
                return str(state["ip"]), int(state["port"])
            down = True
        display = self.target.display()
        if refused and not unreachable and len(refused) == len(self.target.addresses):
            raise RedisMisconfigured(
                f"REDIS_SENTINEL_PASSWORD: the sentinels of {display} refused it: "
                + "; ".join(refused)
            )
        if len(unreachable) == len(self.target.addresses):
            raise (RedisMisconfigured if misconfigured else RedisUnavailable)(
                f"REDIS_URL: none of the sentinels of {display} answered: " + "; ".join(unreachable)
            )
        if down:
            raise RedisUnavailable(
                f"REDIS_URL: the sentinels of {display} see master {name!r} down "
                "(a failover may be in progress)"
            )
        answered = len(self.target.addresses) - len(unreachable) - len(refused)
        if not answered:
            raise RedisUnavailable(
                f"REDIS_URL: no sentinel of {display} could be asked about {name!r}: "
                + "; ".join(unreachable + refused)
            )
        raise RedisMisconfigured(
            f"REDIS_URL: the sentinels of {display} know no master named {name!r} "
            f"({answered} answered)"
        )

    async def aclose(self) -> None:
        if self._sentinel is not None:
            await self._sentinel.aclose()

    async def __aenter__(self) -> MasterLocator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def current_master(target: RedisTarget, timeout: float = SENTINEL_TIMEOUT) -> Address:
    """One question to the sentinels: the master's ``(host, port)`` now (see MasterLocator)."""
    async with MasterLocator(target, timeout) as locator:
        return await locator.master()


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


# README "What Redis must offer": the oldest Redis the suite runs (Debian bookworm's
# 7.0), and the first with read-only key patterns (%R~) for the gateway's ACL rule.
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


def is_configuration_error(exc: BaseException) -> bool:
    """True when retrying cannot help until someone fixes a setting: a certificate that
    does not verify, a failed TLS handshake, a refused password, a missing ACL permission.

    A process may stop at start on these (one line from :func:`describe_error`) instead
    of retrying forever; connection refused, timeouts and "no master found" (a
    failover in progress) stay retryable.
    """
    return any(
        isinstance(link, (NoPermissionError, AuthenticationError, ssl.SSLError))
        for link in _chain(exc)
    )


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


def _node_name(node: aioredis.Redis) -> str:
    kwargs = node.connection_pool.connection_kwargs
    return f"{kwargs.get('host')}:{kwargs.get('port')}"


def _one_line(exc: BaseException) -> str:
    return _squash(str(exc)) or type(exc).__name__


def short_error(exc: BaseException) -> str:
    """``exc`` for a log line repeated on every retry: its type and a short text.

    Redis's own texts can be paragraphs (a protected-mode Redis answers with an
    850-character ``DENIED`` explanation): a long one is cut to its first sentence.
    """
    return f"{type(exc).__name__}: {_one_line(exc)}"


def _squash(text: str, limit: int = 120) -> str:
    """One line; a text longer than ``limit`` is cut to its first sentence, or to ``limit``."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    end = text.find(". ", 20)
    if 0 < end < 2 * limit:
        return text[: end + 1]
    return text[: limit - 1] + "…"


def _message(exc: BaseException) -> str:
    """The error text itself: redis-py's pipeline errors may nest it in a tuple in ``args``."""
    value: object = exc.args[0] if exc.args else str(exc)
    while isinstance(value, tuple) and value:
        value = value[0]
    return str(value)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


_PIPELINE_PREFIX = re.compile(r"^Command # \d+ \(.*?\) of pipeline caused error: ", re.S)
# Redis's answers to a client that sent no password (NOAUTH, also to redis-py's HELLO),
# and to one that sent a password to a Redis that has none.
_NEEDS_PASSWORD = re.compile(
    r"NOAUTH|Authentication required|HELLO must be called with the client already "
    r"authenticated",
    re.I,
)
_NO_PASSWORD_SET = re.compile(r"called without any password configured|no password is set", re.I)


def describe_error(exc: BaseException, target: RedisTarget) -> str:
    """``exc`` from a client of ``target`` as one password-free line naming what to fix."""
    where = target.display()
    chain = _chain(exc)
    for link in chain:
        if isinstance(link, RedisUnavailable):
            return str(link)
    if isinstance(exc, (AsyncMasterNotFoundError, SyncMasterNotFoundError)):
        # redis-py's own text repeats each sentinel client's repr; ours names the setting.
        return (
            f"REDIS_URL: the sentinels of {where} gave no usable master "
            f"{target.master_name!r} (unreachable, unknown name, or down)"
        )
    cert_error = next((e for e in chain if isinstance(e, ssl.SSLCertVerificationError)), None)
    if cert_error is not None or "CERTIFICATE_VERIFY_FAILED" in str(exc):
        reason = (
            cert_error.verify_message
            if cert_error is not None and cert_error.verify_message
            else _one_line(exc)
        )
        trust = (
            f"REDIS_TLS_CA_FILE ({target.tls_ca_file})"
            if target.tls_ca_file
            else "the system's CA store (REDIS_TLS_CA_FILE is not set)"
        )
        return (
            f"REDIS_TLS_CA_FILE: the TLS certificate of {where} does not verify "
            f"against {trust}: {reason}"
        )
    # redis-py may wrap these in a ConnectionError raised while connecting.
    denied = next((e for e in chain if isinstance(e, NoPermissionError)), None)
    refused = next((e for e in chain if isinstance(e, AuthenticationError)), None)
    if denied is not None:
        user = target.username or "default"
        reason = _PIPELINE_PREFIX.sub("", _message(denied))
        return (
            f"REDIS_URL: the ACL user {user!r} lacks a permission on {where}: "
            f"{_squash(reason)} (see the README's ACL rules)"
        )
    if refused is not None:
        text = _message(refused)
        if _NEEDS_PASSWORD.search(text):
            return (
                f"REDIS_URL: {where}: Redis needs a password "
                "(set it in REDIS_URL or REDIS_PASSWORD_FILE)"
            )
        if _NO_PASSWORD_SET.search(text):
            return (
                f"REDIS_URL: {where}: Redis has no password set, but one is given "
                "(in REDIS_URL or REDIS_PASSWORD_FILE)"
            )
        return f"REDIS_URL: {where} refused the user or password: {_one_line(refused)}"
    tls_error = next((e for e in chain if isinstance(e, ssl.SSLError)), None)
    if tls_error is not None:
        return (
            f"REDIS_URL: the TLS handshake with {where} failed (check REDIS_TLS_CERT_FILE and "
            f"REDIS_TLS_KEY_FILE): {_one_line(tls_error)}"
        )
    if isinstance(exc, (RedisConnectionError, RedisTimeoutError, OSError)):
        return f"cannot reach Redis at {where} (REDIS_URL): {_one_line(exc)}"
    if isinstance(exc, ResponseError):
        return f"REDIS_URL: {where} answered with an error: {_one_line(exc)}"
    return f"REDIS_URL: {where}: {type(exc).__name__}: {_one_line(exc)}"
