"""Waiting on conditions with a deadline, never on fixed sleeps (tests, ``chaos``, the bench).

``wait_for`` blocks the thread; ``until`` polls a plain predicate without
blocking the event loop; ``async_wait_for`` awaits an async one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def _timed_out(timeout: float, what: str, predicate: object) -> AssertionError:
    return AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")


def wait_for(
    predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    last: T = predicate()
    while not last:
        if time.monotonic() > deadline:
            raise _timed_out(timeout, what, predicate)
        time.sleep(interval)
        last = predicate()
    return last


async def until(
    predicate: Callable[..., object], timeout: float = 15.0, what: str = "", interval: float = 0.02
) -> None:
    """``wait_for`` inside an event loop: the loop runs on between the polls.

    ``predicate`` is called without arguments (``...``: a lambda binding a loop
    variable as a default argument is one too)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise _timed_out(timeout, what, predicate)
        await asyncio.sleep(interval)


async def async_wait_for(
    predicate: Callable[[], Awaitable[T]],
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str = "",
) -> T:
    deadline = time.monotonic() + timeout
    last = await predicate()
    while not last:
        if time.monotonic() > deadline:
            raise _timed_out(timeout, what, predicate)
        await asyncio.sleep(interval)
        last = await predicate()
    return last
