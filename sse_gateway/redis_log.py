"""The event log read from Redis: XRANGE, XREVRANGE and XINFO STREAM on ``sse:log``, read only.

Reads go through the source's small command pool, never the subscription's connection.
A connection error is ``SourceUnavailable``; an entry without its ``event`` or ``data``
field (someone wrote the key by hand) is skipped, never relayed.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from connectome_core.event_log import LOG_KEY
from sse_gateway.log_store import LogEntry
from sse_gateway.redis_pubsub import CONNECTION_ERRORS, text
from sse_gateway.source import SourceUnavailable


class RedisLog:
    def __init__(self, commands: aioredis.Redis, key: str = LOG_KEY) -> None:
        self.commands = commands
        self.key = key

    async def entry(self, stream_id: str) -> LogEntry | None:
        found = await self._read(self.commands.xrange(self.key, stream_id, stream_id, count=1))
        return found[0] if found else None

    async def after(self, stream_id: str, count: int, until: str = "+") -> list[LogEntry]:
        return await self._read(self.commands.xrange(self.key, f"({stream_id}", until, count=count))

    async def newest(self) -> LogEntry | None:
        found = await self._read(self.commands.xrevrange(self.key, "+", "-", count=1))
        return found[0] if found else None

    async def untrimmed(self) -> bool:
        try:
            info = await self.commands.xinfo_stream(self.key)
        except ResponseError as exc:
            if "no such key" in str(exc).lower():
                return True  # no log: nothing was ever lost from it
            raise SourceUnavailable(f"XINFO STREAM {self.key}: {exc}") from exc
        except CONNECTION_ERRORS as exc:
            raise SourceUnavailable(f"{type(exc).__name__}: {exc}") from exc
        added = info.get("entries-added")
        if added is None:  # Redis before 7.0 cannot say how many were ever added
            return False
        return int(added) == int(info["length"]) and text(info["max-deleted-entry-id"]) == "0-0"

    async def _read(self, command: Any) -> list[LogEntry]:
        try:
            raw = await command
        except CONNECTION_ERRORS as exc:
            raise SourceUnavailable(f"{type(exc).__name__}: {exc}") from exc
        entries = []
        for stream_id, fields in raw:
            event, data = fields.get(b"event"), fields.get(b"data")
            if isinstance(event, bytes) and isinstance(data, bytes):
                entries.append(LogEntry(text(stream_id), event.decode("utf-8", "replace"), data))
        return entries
