"""``publish --lines`` across a Redis cut: which of a batch's lines the log already holds.

A batch sent when the connection broke may have run in part or whole: its replies were
lost, not its effects. Blindly sending it again could publish a line twice, so before a
retry the log is read after the last entry this command saw confirmed, and the lines
found there, in order, are taken as published. Pipelined scripts run in order, so the
first line not found and every line after it were not published.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from connectome_core.event_log import LOG_KEY, log_event_id

# Entries read after the last confirmed one, beyond the batch: other writers share the log.
SLACK = 1000


async def log_tail(client: aioredis.Redis) -> str:
    """The stream id of the log's newest entry ("0-0" when there is none)."""
    newest = await client.xrevrange(LOG_KEY, "+", "-", count=1)
    return _text(newest[0][0]) if newest else "0-0"


async def already_logged(
    client: aioredis.Redis, after: str, event: str, texts: Sequence[str]
) -> list[tuple[str, str]]:
    """``(stream id, log id)`` of the first of ``texts`` found in the log after ``after``,
    in order."""
    entries: Any = await client.xrange(LOG_KEY, f"({after}", "+", count=len(texts) + SLACK)
    found: list[tuple[str, str]] = []
    for stream_id, fields in entries or ():
        if len(found) == len(texts):
            break
        text = texts[len(found)]
        if fields.get(b"event") == event.encode() and fields.get(b"data") == text.encode():
            sid = _text(stream_id)
            found.append((sid, log_event_id(sid, event, text)))
    return found


def _text(value: Any) -> str:
    return value.decode("ascii") if isinstance(value, bytes) else str(value)
