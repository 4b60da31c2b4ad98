"""Reading every ``sse:last:*`` snapshot from Redis, bounded in round trips, keys and bytes.

Discovery is a SCAN (a registry of event types would change the wire contract). SCAN's
default COUNT looks at about ten keys per round trip, so on a Redis shared with a
million other keys it asks for a thousand per round trip; the keys and the bytes read
are capped, so a Redis full of snapshot keys cannot make one read unbounded. Each batch
reads its snapshots and the event log ids that set them (``sse:log:last``) in one
MULTI, so a snapshot never gets the id of an older publish.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.exceptions import NoPermissionError, ResponseError

from connectome_core.contract import SNAPSHOT_PREFIX, is_valid_event_name
from connectome_core.event_log import LOG_LAST_KEY, STREAM_ID_RE
from sse_gateway.redis_pubsub import CONNECTION_ERRORS, limited, text
from sse_gateway.source import Snapshot, SourceUnavailable

SCAN_COUNT = 1000
MGET_BATCH = 500
MAX_SNAPSHOT_KEYS = 10_000
MAX_SNAPSHOT_BYTES = 64 * 1024 * 1024


async def read_snapshots(commands: aioredis.Redis) -> dict[str, Snapshot]:
    """Event name -> its snapshot; ``SourceUnavailable`` when Redis cannot be reached."""
    try:
        return await _mget(commands, await _scan(commands))
    except CONNECTION_ERRORS as exc:
        raise SourceUnavailable(f"{type(exc).__name__}: {exc}") from exc


async def _scan(commands: aioredis.Redis) -> list[bytes]:
    keys: list[bytes] = []
    async for key in commands.scan_iter(match=SNAPSHOT_PREFIX + "*", count=SCAN_COUNT):
        if len(keys) >= MAX_SNAPSHOT_KEYS:
            limited.warning(
                "too_many_keys",
                "more than %d snapshot keys: the rest are not sent",
                MAX_SNAPSHOT_KEYS,
            )
            break
        keys.append(key)
    return keys


async def _mget(commands: aioredis.Redis, keys: list[bytes]) -> dict[str, Snapshot]:
    snapshots: dict[str, Snapshot] = {}
    total = 0
    for start in range(0, len(keys), MGET_BATCH):
        batch = keys[start : start + MGET_BATCH]
        events = [text(key)[len(SNAPSHOT_PREFIX) :] for key in batch]
        values, stream_ids = await _read_batch(commands, batch, events)
        for event, value, stream_id in zip(events, values, stream_ids, strict=True):
            if not isinstance(value, bytes) or not is_valid_event_name(event):
                continue
            total += len(value)
            if total > MAX_SNAPSHOT_BYTES:
                limited.warning(
                    "too_many_bytes",
                    "snapshots larger than %d bytes in all: the rest are not sent",
                    MAX_SNAPSHOT_BYTES,
                )
                return snapshots
            snapshots[event] = Snapshot(value, _stream_id(stream_id))
    return snapshots


async def _read_batch(
    commands: aioredis.Redis, batch: list[bytes], events: list[str]
) -> tuple[list[object], list[object]]:
    """The snapshots of ``batch`` and the log ids that set them, read atomically."""
    try:
        async with commands.pipeline(transaction=True) as pipe:
            pipe.mget(batch)
            pipe.hmget(LOG_LAST_KEY, events)
            values, stream_ids = await pipe.execute()
        return values, stream_ids
    except ResponseError as exc:
        if not isinstance(exc, NoPermissionError) and "NOPERM" not in str(exc):
            raise
    # A user made before the event log (no MULTI, EXEC, HMGET): snapshots keep working,
    # with content ids.
    limited.warning(
        "no_log_ids",
        "this Redis user may not read sse:log:last in a MULTI (its ACL predates the event "
        "log): snapshots get content ids",
    )
    return list(await commands.mget(batch)), [None] * len(batch)


def _stream_id(value: object) -> str | None:
    # Anything but a stream id (a hash written by hand) gives the snapshot a content id.
    if isinstance(value, bytes) and STREAM_ID_RE.fullmatch(sid := value.decode("ascii", "replace")):
        return sid
    return None
