"""Running a :class:`DemoScenario` against Redis: XADD to ``connectome:signals`` with MAXLEN.

A drift-free schedule that resynchronises rather than bursts after a stall; a
lost Redis is retried with capped backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from connectome_core.backoff import Backoff
from connectome_core.contract import SIGNALS_STREAM
from connectome_core.redis_connect import async_client, describe_error
from connectome_core.redis_target import RedisTarget
from connectome_sse.demo.scenario import DemoScenario, Entry

log = logging.getLogger("connectome_sse.demo")

EXPECTED = {
    "async_epoch_mismatch": "WARN for HEALTH_WINDOW",
    "query_write_attempts": "ERROR for HEALTH_WINDOW",
    "dmz_violation_attempts": "ERROR for HEALTH_WINDOW",
    "stall": "WARN after HEALTH_STALE_AFTER",
}


def make_client(target: RedisTarget) -> aioredis.Redis:
    """The engine's client."""
    return async_client(
        target,
        socket_timeout=5.0,
        socket_connect_timeout=2.0,
        retry=Retry(NoBackoff(), 0),
        client_name="demo-engine",
    )


async def write_entries(
    client: aioredis.Redis, entries: list[Entry], maxlen: int, stream: str = SIGNALS_STREAM
) -> None:
    async with client.pipeline(transaction=False) as pipe:
        for entry in entries:
            fields: dict[Any, Any] = dict(entry)
            pipe.xadd(stream, fields, maxlen=maxlen, approximate=True)
        await pipe.execute()


async def run_engine(
    scenario: DemoScenario,
    target: RedisTarget,
    stop: asyncio.Event,
    *,
    # Only a safety cap for a stream no publisher trims: the leading publisher trims by time
    # (XTRIM MINID at the start of the window it still needs), which a count cannot do.
    maxlen: int = 1_000_000,
    duration: float = 0.0,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Write the scenario until ``stop`` is set or ``duration`` (0: forever) passes.

    Returns the number of entries written.
    """
    client = make_client(target)
    backoff = Backoff(base=0.2, cap=5.0)
    written = 0
    was_stalled = False
    log.info(
        "demo engine: playthrough %s at %s, writing %s on %s (MAXLEN ~%d)",
        scenario.playthrough_id,
        scenario.config.speed,
        SIGNALS_STREAM,
        target.display(),
        maxlen,
    )
    start = clock()
    step = 0
    try:
        while not stop.is_set():
            t = clock() - start
            if duration and t >= duration:
                break
            entries = scenario.step(t)
            was_stalled = _say_what_changed(scenario, t, was_stalled)
            if entries:
                try:
                    await write_entries(client, entries, maxlen)
                    written += len(entries)
                    backoff.reset()
                except (RedisError, OSError) as exc:
                    delay = backoff.next_delay()
                    log.warning(
                        "redis unavailable (%s); retrying in %.1fs",
                        describe_error(exc, target),
                        delay,
                    )
                    await _idle(stop, delay)
                    continue
            step, due = _next_step(start, step + 1, scenario.period, clock())
            await _idle(stop, due - clock())
    finally:
        await client.aclose()
    log.info("demo engine stopped after %d entries", written)
    return written


def _say_what_changed(scenario: DemoScenario, t: float, was_stalled: bool) -> bool:
    """Log a misbehaviour as it starts and a stall as it ends; whether it is stalled now."""
    if scenario.last_event:
        log.info(
            "demo engine misbehaves: %s (expect %s)",
            scenario.last_event,
            EXPECTED[scenario.last_event],
        )
    stalled = scenario.stalled(t)
    if was_stalled and not stalled:
        log.info("demo engine: stall over, signals resume")
    return stalled


def _next_step(start: float, step: int, period: float, now: float) -> tuple[int, float]:
    """Step ``step`` is due at ``start + step * period``; more than 1 s late, skip ahead."""
    due = start + step * period
    if now - due > 1.0:
        step = int((now - start) / period) + 1
        due = start + step * period
    return step, due


async def _idle(stop: asyncio.Event, seconds: float) -> None:
    if seconds > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=seconds)
