"""Where events come from: the contract between the gateway and its one Redis reader.

An ``EventSource`` holds one subscription to every ``sse:*`` channel for the process and
reports to a ``SourceListener``; ``MemorySource`` is its in-process twin for unit tests.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from connectome_core.contract import event_from_channel


class SourceUnavailable(Exception):
    """The store behind the source cannot be reached right now."""


class SourceListener(Protocol):
    def on_message(self, channel: str, data: bytes) -> None:
        """Each channel message, in the order Redis sent it, synchronously from the read
        loop: it must not block (nothing in the read loop waits for a client)."""

    def on_connected(self, resumed: bool = False) -> None:
        """After every (re)subscription (snapshots may have changed meanwhile); with
        ``resumed``, the kept subscription answers again after a pause and lost nothing."""

    def on_disconnected(self) -> None:
        """The subscription is lost, or Redis stopped answering while it is kept."""


class EventSource(Protocol):
    async def run(self, listener: SourceListener) -> None:
        """Subscribe and report to ``listener`` until cancelled, reconnecting by itself (a
        listener that raises is logged; the source goes on)."""

    async def read_snapshots(self) -> dict[str, bytes]:
        """Event name -> latest snapshot, for every event that has one; raises
        ``SourceUnavailable`` while the store cannot be reached."""

    async def caught_up(self) -> bool:
        """True once everything published before this call reached the listener; False when
        that cannot be told now. A reader can lag behind Redis (a busy process): a stream
        waits on this before it compares a snapshot or an unknown id with live events."""

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
