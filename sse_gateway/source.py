"""Where events come from: the contract between the gateway and its one Redis reader.

An ``EventSource`` holds ONE subscription to every ``sse:*`` channel for the
whole process and reports to a ``SourceListener``:

- ``on_message`` for each channel message, in the order Redis sent them,
  synchronously from the read loop: the listener must not block, and nothing
  in the read loop waits for a client.
- ``on_connected`` after every (re)subscription, so the listener can re-send
  snapshots (a change made during an outage is not missed);
  ``on_disconnected`` when the subscription is lost, or when Redis stopped
  answering while the source keeps the subscription (a pause); then
  ``on_connected(resumed=True)`` when that subscription answers again, which
  lost nothing. The source reconnects by itself, with capped jittered
  backoff, until it is cancelled. A listener that raises is logged; the
  source goes on.

``read_snapshots`` returns the current ``sse:last:*`` values; it raises
``SourceUnavailable`` while the store cannot be reached.

``caught_up`` is a barrier: it returns True once every message published
before the call began has been given to the listener, False when that cannot
be told now (no subscription, the round trip refused or too slow). A reader
can fall behind Redis (a replica whose loop is busy with a reconnect storm),
and then a snapshot read on another connection is newer than what it has
relayed, and an id a client got from a faster replica is not known here
yet: a new stream waits on this before it compares either with live events.

``MemorySource`` is the in-process twin for unit tests.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from connectome_core.contract import event_from_channel


class SourceUnavailable(Exception):
    """The store behind the source cannot be reached right now."""


class SourceListener(Protocol):
    def on_message(self, channel: str, data: bytes) -> None: ...

    def on_connected(self, resumed: bool = False) -> None: ...

    def on_disconnected(self) -> None: ...


class EventSource(Protocol):
    async def run(self, listener: SourceListener) -> None:
        """Subscribe and report to ``listener`` until cancelled."""

    async def read_snapshots(self) -> dict[str, bytes]:
        """Event name -> latest snapshot, for every event that has one."""

    async def caught_up(self) -> bool:
        """True once everything published before this call reached the listener."""

    async def aclose(self) -> None: ...


class MemorySource:
    """An EventSource kept in memory: ``publish`` and ``set_snapshot`` drive it."""

    def __init__(self) -> None:
        self.snapshots: dict[str, bytes] = {}
        self.up = True
        self._listener: SourceListener | None = None
        self._stopped = asyncio.Event()

    async def run(self, listener: SourceListener) -> None:
        self._listener = listener
        listener.on_connected()
        await self._stopped.wait()

    async def read_snapshots(self) -> dict[str, bytes]:
        if not self.up:
            raise SourceUnavailable("memory source is down")
        return dict(self.snapshots)

    async def caught_up(self) -> bool:
        # publish() hands each message over synchronously: never behind.
        return self.up and self._listener is not None

    def publish(self, channel: str, data: bytes, snapshot: bool = False) -> None:
        event = event_from_channel(channel)
        if snapshot and event is not None:
            self.snapshots[event] = data
        if self._listener is not None and self.up:
            self._listener.on_message(channel, data)

    def set_up(self, up: bool) -> None:
        self.up = up
        if self._listener is not None:
            (self._listener.on_connected if up else self._listener.on_disconnected)()

    async def aclose(self) -> None:
        self._stopped.set()
