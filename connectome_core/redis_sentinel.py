"""Asking a target's sentinels, now, which address is the master.

redis-py re-asks the sentinels only when it makes a new connection, and a
pub/sub socket on a demoted master never writes, so it never meets
``READONLY``: a subscriber compares its connection's peer with this address to
notice a failover.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from connectome_core.redis_errors import (
    RedisMisconfigured,
    RedisUnavailable,
    is_configuration_error,
    one_line,
)
from connectome_core.redis_options import master_name, sentinel_options
from connectome_core.redis_target import Address, RedisTarget

# A dead sentinel must not hold up the question to the next one for long.
SENTINEL_TIMEOUT = 1.0


@dataclass
class _Answers:
    """What the sentinels said when none named a usable master."""

    unreachable: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    down: bool = False
    misconfigured: bool = False  # a sentinel's certificate did not verify, for example


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
                list(target.addresses), sentinel_kwargs=sentinel_options(target, timeout)
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
        name = master_name(self.target)
        answers = _Answers()
        for node in list(self._sentinel.sentinels):
            where = _node_name(node)
            try:
                masters: dict[str, dict[str, Any]] = await node.sentinel_masters()  # type: ignore[assignment]
            except AuthenticationError as exc:
                answers.refused.append(f"{where} ({one_line(exc)})")
                continue
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                answers.unreachable.append(f"{where} ({one_line(exc)})")
                answers.misconfigured = answers.misconfigured or is_configuration_error(exc)
                continue
            state = masters.get(name)
            if state is None:
                continue
            if self._sentinel.check_master_state(state, name):
                return str(state["ip"]), int(state["port"])
            answers.down = True
        raise self._no_master(name, answers)

    def _no_master(self, name: str, answers: _Answers) -> RedisUnavailable:
        display = self.target.display()
        asked = len(self.target.addresses)
        unreachable, refused = answers.unreachable, answers.refused
        if refused and not unreachable and len(refused) == asked:
            return RedisMisconfigured(
                f"REDIS_SENTINEL_PASSWORD: the sentinels of {display} refused it: "
                + "; ".join(refused)
            )
        if len(unreachable) == asked:
            return (RedisMisconfigured if answers.misconfigured else RedisUnavailable)(
                f"REDIS_URL: none of the sentinels of {display} answered: " + "; ".join(unreachable)
            )
        if answers.down:
            return RedisUnavailable(
                f"REDIS_URL: the sentinels of {display} see master {name!r} down "
                "(a failover may be in progress)"
            )
        answered = asked - len(unreachable) - len(refused)
        if not answered:
            return RedisUnavailable(
                f"REDIS_URL: no sentinel of {display} could be asked about {name!r}: "
                + "; ".join(unreachable + refused)
            )
        return RedisMisconfigured(
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


def _node_name(node: aioredis.Redis) -> str:
    kwargs = node.connection_pool.connection_kwargs
    return f"{kwargs.get('host')}:{kwargs.get('port')}"
