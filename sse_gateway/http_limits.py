"""What a connection may cost before it is served: the limits every protocol here enforces."""

from __future__ import annotations

import asyncio
import logging
import weakref
from dataclasses import dataclass
from typing import Protocol

from connectome_core.logs import RateLimitedLog

MAX_HEADER_BYTES = 16 * 1024
# Bytes a client may send after its stream request before it is dropped: pipelined
# requests are ignored, a client that keeps sending is abusive.
MAX_IGNORED_BYTES = 64 * 1024

# Lines a hostile client can repeat at will: one per interval, with a count of the rest.
limited_log = RateLimitedLog(logging.getLogger("sse_gateway.http"))


@dataclass(frozen=True)
class ConnectionLimits:
    """Per-process connection limits (picklable: uvicorn hands it to each worker)."""

    header_timeout: float = 10.0
    max_open: int | None = None


class HeadWaiter(Protocol):
    def header_timeout(self) -> None:
        """The request head did not arrive in time: close the connection."""


class HeaderDeadlines:
    """The connections of one event loop still sending their request head, and when each
    is due. One timer sweeps them a few times per timeout, instead of a timer per
    connection armed and cancelled on every connect: a storm of connects pays for none.
    A late head is cut within ``timeout`` plus a quarter of it (a second at most)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self._loop = loop
        self._timeout = timeout
        self._every = min(1.0, timeout / 4)
        # One timeout for all: insertion order is deadline order.
        self._waiting: dict[HeadWaiter, float] = {}
        self._sweep_timer: asyncio.TimerHandle | None = None

    def add(self, connection: HeadWaiter) -> None:
        self._waiting[connection] = self._loop.time() + self._timeout
        if self._sweep_timer is None:
            self._sweep_timer = self._loop.call_later(self._every, self._sweep)

    def discard(self, connection: HeadWaiter) -> None:
        self._waiting.pop(connection, None)

    def __len__(self) -> int:
        return len(self._waiting)

    def _sweep(self) -> None:
        self._sweep_timer = None
        now = self._loop.time()
        late = []
        for connection, due in self._waiting.items():
            if due > now:
                break
            late.append(connection)
        for connection in late:
            del self._waiting[connection]
            connection.header_timeout()
        if self._waiting:
            self._sweep_timer = self._loop.call_later(self._every, self._sweep)


_deadlines: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, HeaderDeadlines] = (
    weakref.WeakKeyDictionary()
)


def header_deadlines(timeout: float) -> HeaderDeadlines:
    """The running loop's ``HeaderDeadlines`` (every connection of a process has the same
    header timeout)."""
    loop = asyncio.get_running_loop()
    deadlines = _deadlines.get(loop)
    if deadlines is None:
        deadlines = _deadlines[loop] = HeaderDeadlines(loop, timeout)
    return deadlines
