"""Reading ``connectome:signals`` through the consumer group ``health-publisher``.

Read, acknowledge, claim and trim run fenced by the lease (``fenced_lua.py``); history is read
without the group. The delivery contract: ``docs/publisher.md`` ("The consumer group").
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from connectome_core.contract import CONSUMER_GROUP, LEADER_KEY, SIGNALS_STREAM
from health_publisher import fenced_lua

Entry = tuple[bytes, Mapping[bytes, bytes]]
CLAIM_BATCH = 500


class NotLeader(Exception):
    """The lease in Redis is not ours: a fenced group command was refused."""


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


@dataclass
class ReadResult:
    """New entries, or none and the id after which ``wait`` should block."""

    entries: list[Entry] = field(default_factory=list)
    wait_after: bytes = b"0-0"


@dataclass
class Housekeeping:
    trimmed: int
    removed_consumers: list[str]


class SignalReader:
    def __init__(
        self,
        client: aioredis.Redis,
        consumer: str,
        token: str,
        *,
        stream: str = SIGNALS_STREAM,
        group: str = CONSUMER_GROUP,
        lease_key: str = LEADER_KEY,
    ) -> None:
        self.client = client
        self.consumer = consumer
        self.token = token
        self.stream = stream
        self.group = group
        self.lease_key = lease_key
        self._read = client.register_script(fenced_lua.READ_LUA)
        self._claim = client.register_script(fenced_lua.CLAIM_LUA)
        self._housekeeping = client.register_script(fenced_lua.HOUSEKEEPING_LUA)
        self._compact = client.register_script(fenced_lua.COMPACT_HISTORY_LUA)

    async def ensure_group(self, start_id: str) -> bool:
        """Create the group at ``start_id`` if it is missing; True when it was created."""
        try:
            await self.client.xgroup_create(self.stream, self.group, id=start_id, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" in str(exc):
                return False
            raise
        return True

    async def _fenced(self, script: Any, *args: object) -> Any:
        result = await script(keys=[self.lease_key, self.stream], args=[self.token, *args])
        if result == -1:
            raise NotLeader
        return result

    async def read(self, count: int, ack: Sequence[bytes] = ()) -> ReadResult:
        """Acknowledge ``ack`` (applied entries), then read new entries without blocking."""
        result = await self._fenced(self._read, self.group, self.consumer, count, *ack)
        if int(result[0]) == 1:
            return ReadResult(entries=_entries(result[1]))
        return ReadResult(wait_after=_bytes(result[1]))

    async def wait(self, after: bytes, block_ms: int) -> bool:
        """Block up to ``block_ms`` until the stream has an entry after ``after`` (reads no
        group, changes nothing: safe for anyone). True when one is there."""
        if block_ms <= 0:
            return False
        response: Any = await self.client.xread({self.stream: after}, count=1, block=block_ms)
        return bool(response)

    async def claim_pending(
        self, between: Callable[[], Awaitable[None]] | None = None
    ) -> tuple[list[Entry], int]:
        """Claim every pending entry of the group for this consumer; returns the entries that
        still exist, oldest first, and how many were gone from the stream (acknowledged).
        ``between`` runs between batches (the service renews its lease there)."""
        claimed: list[Entry] = []
        gone = 0
        start: bytes | str = "-"
        while True:
            if between is not None:
                await between()
            result = await self._fenced(self._claim, self.group, self.consumer, start, CLAIM_BATCH)
            claimed.extend(_entries(result[1]))
            gone += len(result[2])
            start = result[0]
            if not start:
                claimed.sort(key=lambda entry: id_key(entry[0]))
                return claimed, gone

    async def housekeeping(self, keep_from: str, idle_ms: int) -> Housekeeping:
        """Trim what no one needs any more and remove consumers of dead publishers."""
        result = await self._fenced(
            self._housekeeping, self.group, self.consumer, keep_from, idle_ms
        )
        return Housekeeping(int(result[0]), [_bytes(n).decode() for n in result[1]])

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

    async def compact_history(
        self, after: bytes | str, until: bytes | str, scan: int
    ) -> tuple[bytes | None, list[Entry]]:
        """Scan up to ``scan`` entries after ``after`` on the server and return only those a
        new leader cannot do without (see ``fenced_lua.COMPACT_HISTORY_LUA``), with the last
        id scanned (None when there was nothing left)."""
        result: Any = await self._compact(keys=[self.stream], args=[after, until, scan])
        last = _bytes(result[0])
        return (last or None), _entries(result[1])

    async def server_time(self) -> float:
        seconds, micros = await self.client.time()
        return float(seconds) + float(micros) / 1e6


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _pairs(flat: Sequence[Any]) -> dict[bytes, bytes]:
    return {_bytes(flat[i]): _bytes(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}


def _entries(raw: Any) -> list[Entry]:
    """Entries as a script returns them: [[id, [field, value, ...]], ...]."""
    return [(_bytes(entry[0]), _pairs(entry[1])) for entry in raw or []]
