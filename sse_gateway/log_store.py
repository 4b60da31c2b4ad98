"""Reading the event log: what a gateway fills a gap and resumes a client from.

``LogStore`` is what the relay and the opener need from the log (entries by stream id,
the entries after one, the newest one, whether any entry was ever removed);
``sse_gateway.redis_log`` reads it from Redis, ``MemoryLog`` is its in-process twin
for unit tests. How the log is written: ``connectome_core.event_log``.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from connectome_core.event_log import digest8, stream_id_key

# The position before the first entry: "after" it is the whole log.
START = "0-0"


class LogEntry(NamedTuple):
    stream_id: str
    event: str
    data: bytes

    @property
    def key(self) -> tuple[int, int]:
        """The stream id as ``(ms, seq)``: the log's order."""
        return stream_id_key(self.stream_id)

    @property
    def digest(self) -> str:
        """What ties a log id to this entry's content (``connectome_core.event_log``)."""
        return digest8(self.event, self.data)


class LogStore(Protocol):
    async def entry(self, stream_id: str) -> LogEntry | None:
        """The entry at ``stream_id``; None when the log holds none there.

        Every method raises ``SourceUnavailable`` while the log cannot be read."""

    async def after(self, stream_id: str, count: int, until: str = "+") -> list[LogEntry]:
        """Up to ``count`` entries after ``stream_id`` (``START``: from the first) and up to
        ``until`` (included), oldest first."""

    async def newest(self) -> LogEntry | None:
        """The newest entry; None when there is no log."""

    async def untrimmed(self) -> bool:
        """True when the log holds every entry ever added to it (none trimmed or deleted),
        or does not exist; False when that cannot be proven."""


class MemoryLog:
    """A ``LogStore`` in memory: ``add`` appends, ``trim`` forgets the oldest entries."""

    def __init__(self) -> None:
        self.entries: list[LogEntry] = []
        self.removed = 0
        self._ms = 1_000

    def add(self, event: str, data: bytes) -> LogEntry:
        self._ms += 1
        entry = LogEntry(f"{self._ms}-0", event, data)
        self.entries.append(entry)
        return entry

    def trim(self, keep: int) -> None:
        drop = max(0, len(self.entries) - keep)
        self.removed += drop
        del self.entries[:drop]

    def clear(self) -> None:
        """The log is gone (a Redis that came back empty)."""
        self.entries.clear()
        self.removed = 0

    async def entry(self, stream_id: str) -> LogEntry | None:
        return next((e for e in self.entries if e.stream_id == stream_id), None)

    async def after(self, stream_id: str, count: int, until: str = "+") -> list[LogEntry]:
        start = stream_id_key(stream_id)
        end = None if until == "+" else stream_id_key(until)
        found = [e for e in self.entries if e.key > start and (end is None or e.key <= end)]
        return found[:count]

    async def newest(self) -> LogEntry | None:
        return self.entries[-1] if self.entries else None

    async def untrimmed(self) -> bool:
        return self.removed == 0
