"""Reading ``connectome:signals`` through the consumer group ``health-publisher``.

The delivery contract the service builds on:

- Only the leader reads (``XREADGROUP ... >``), and it acknowledges an entry
  only after applying it, so an entry delivered to a leader that dies stays
  in the group's pending list.
- A new leader claims every pending entry of the group (``XAUTOCLAIM`` with
  min-idle 0 — only a leader reads, so whatever is pending belongs to a
  leader that is gone, or to ourselves before a reconnect) and applies it.
- ``history`` reads (``XRANGE``, no group, nothing to acknowledge) let a new
  leader rebuild its windows from entries an earlier leader already applied.
- A missing group (first start, or a Redis that restarted empty) is created
  at a given id with MKSTREAM; the service passes "now minus HEALTH_WINDOW",
  so a recreated group neither loses the entries written since the restart nor
  replays ancient history.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from connectome_sse.contract import CONSUMER_GROUP, SIGNALS_STREAM

Entry = tuple[bytes, Mapping[bytes, bytes]]


def id_ms(entry_id: bytes | str) -> int:
    """The millisecond part of a stream id."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.split("-", 1)[0])


def id_key(entry_id: bytes | str) -> tuple[int, int]:
    """A stream id as a sortable pair."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def is_nogroup(exc: ResponseError) -> bool:
    return str(exc).startswith("NOGROUP")


class SignalReader:
    def __init__(
        self,
        client: aioredis.Redis,
        consumer: str,
        *,
        stream: str = SIGNALS_STREAM,
        group: str = CONSUMER_GROUP,
    ) -> None:
        self.client = client
        self.consumer = consumer
        self.stream = stream
        self.group = group

    async def ensure_group(self, start_id: str) -> bool:
        """Create the group at ``start_id`` if it is missing; True when it was created."""
        try:
            await self.client.xgroup_create(self.stream, self.group, id=start_id, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" in str(exc):
                return False
            raise
        return True

    async def read(self, count: int, block_ms: int | None) -> list[Entry]:
        """New entries for this consumer; ``block_ms`` None or 0 means do not block."""
        response: Any = await self.client.xreadgroup(
            self.group,
            self.consumer,
            {self.stream: ">"},
            count=count,
            block=block_ms if block_ms else None,
        )
        return _entries(response)

    async def claim_pending(self, count: int = 500) -> list[Entry]:
        """Claim every pending entry of the group for this consumer (trimmed ones are dropped)."""
        claimed: list[Entry] = []
        cursor: bytes | str = "0-0"
        while True:
            response: Any = await self.client.xautoclaim(
                self.stream,
                self.group,
                self.consumer,
                min_idle_time=0,
                start_id=cursor,
                count=count,
            )
            cursor = response[0]
            # Entries trimmed away while pending come back without fields (Redis 6.2) or in
            # a separate deleted list (7.0, which also removes them from the pending list).
            gone = [eid for eid, fields in response[1] if fields is None]
            if gone:
                await self.ack(gone)
            claimed.extend((eid, fields) for eid, fields in response[1] if fields is not None)
            if cursor in (b"0-0", "0-0"):
                return claimed

    async def ack(self, ids: list[bytes]) -> None:
        if ids:
            await self.client.xack(self.stream, self.group, *ids)

    async def last_delivered_id(self) -> bytes | None:
        groups: Any = await self.client.xinfo_groups(self.stream)
        for info in groups:
            name = info.get("name")
            if name in (self.group, self.group.encode()):
                value = info.get("last-delivered-id")
                return value if isinstance(value, bytes) else str(value).encode()
        return None

    async def history(self, after: bytes | str, until: bytes | str, count: int) -> list[Entry]:
        """Entries with ``after < id <= until``, oldest first, at most ``count``."""
        after_text = after.decode() if isinstance(after, bytes) else after
        response: Any = await self.client.xrange(
            self.stream, min=f"({after_text}", max=until, count=count
        )
        return [(eid, fields) for eid, fields in response]

    async def server_time(self) -> float:
        seconds, micros = await self.client.time()
        return float(seconds) + float(micros) / 1e6


def _entries(response: Any) -> list[Entry]:
    # The client speaks RESP2: [[stream, [(id, fields), ...]], ...].
    if not response:
        return []
    entries: list[Entry] = []
    for _stream, stream_entries in response:
        entries.extend((eid, fields) for eid, fields in stream_entries)
    return entries
