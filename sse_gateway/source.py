"""Where events come from: the contract between the gateway and its one Redis reader.

An ``EventSource`` holds one subscription to every ``sse:*`` channel for the process and
reports to a ``SourceListener``; ``MemorySource`` is its in-process twin for unit tests.
"""

from __future__ import annotations

import asyncio
from typing import NamedTuple, Protocol

from connectome_core.contract import event_from_channel
from connectome_core.event_log import LOG_ID_CHANNEL
from sse_gateway.log_store import LogStore, MemoryLog


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


class Snapshot(NamedTuple):
    data: bytes
    stream_id: str | None = None  # the event log entry that set it (``sse:log:last``)


class EventSource(Protocol):
    @property
    def log(self) -> LogStore:
        """The event log beside the subscription: gap fills and resumes read it."""

    async def run(self, listener: SourceListener) -> None:
        """Subscribe and report to ``listener`` until cancelled, reconnecting by itself (a
        listener that raises is logged; the source goes on)."""

    async def read_snapshots(self) -> dict[str, Snapshot]:
        """Event name -> latest snapshot, for every event that has one, with the log entry
        that set it; raises ``SourceUnavailable`` while the store cannot be reached."""

    async def caught_up(self) -> bool:
        """True once everything published before this call reached the listener; False when
        that cannot be told now. A reader can lag behind Redis (a busy process): a stream
        waits on this before it compares a snapshot or an unknown id with live events."""

    async def aclose(self) -> None: ...


class MemorySource:
    """An EventSource kept in memory: ``publish`` and ``publish_logged`` drive it."""

    def __init__(self) -> None:
        self.snapshots: dict[str, bytes] = {}
        self.snapshot_ids: dict[str, str] = {}  # event -> the log entry that set its snapshot
        self.log = MemoryLog()
        self.up = True
        self._listener: SourceListener | None = None
        self._stopped = asyncio.Event()

    async def run(self, listener: SourceListener) -> None:
        self._listener = listener
        listener.on_connected()
        await self._stopped.wait()

    async def read_snapshots(self) -> dict[str, Snapshot]:
        if not self.up:
            raise SourceUnavailable("memory source is down")
        return {e: Snapshot(d, self.snapshot_ids.get(e)) for e, d in self.snapshots.items()}

    async def caught_up(self) -> bool:
        # publish() hands each message over synchronously: never behind.
        return self.up and self._listener is not None

    def publish(self, channel: str, data: bytes, snapshot: bool = False) -> None:
        event = event_from_channel(channel)
        if snapshot and event is not None:
            self.snapshots[event] = data
            self.snapshot_ids.pop(event, None)
        if self._listener is not None and self.up:
            self._listener.on_message(channel, data)

    def publish_logged(self, event: str, data: bytes, delivered: bool = True) -> str:
        """What the logged publish does: log entry, snapshot, marker, message; returns the
        stream id. ``delivered=False``: the subscription missed it (a cut)."""
        entry = self.log.add(event, data)
        self.snapshots[event] = data
        self.snapshot_ids[event] = entry.stream_id
        if self._listener is not None and self.up and delivered:
            self._listener.on_message(LOG_ID_CHANNEL, f"{entry.stream_id} {event}".encode())
            self._listener.on_message("sse:" + event, data)
        return entry.stream_id

    def set_up(self, up: bool) -> None:
        self.up = up
        if self._listener is not None:
            (self._listener.on_connected if up else self._listener.on_disconnected)()

    async def aclose(self) -> None:
        self._stopped.set()
