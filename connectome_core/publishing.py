"""Publishing an event the proper way: log entry, snapshot and channel in one atomic script.

One script (``event_log.PUBLISH_LUA``) appends the event to the log, sets the snapshot,
publishes the log-id marker and the event: a client that connects in between can never see
a snapshot older than the last live event it receives, and a gateway that missed the
PUBLISH finds the event in the log.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from connectome_core.contract import RESERVED_EVENTS, is_valid_event_name
from connectome_core.event_log import PUBLISH_LUA, LogCaps, log_event_id


@dataclass(frozen=True)
class Published:
    """One logged event: its stream id, its client-facing id, and the channel's receivers
    (each a gateway process's subscription, not a browser)."""

    stream_id: str
    event_id: str
    receivers: int


def check_event_name(event: str) -> None:
    """ValueError (one line) when ``event`` may not be published: a bad or reserved name."""
    if not is_valid_event_name(event):
        raise ValueError(f"invalid event name {event!r}: use 1 to 64 of A-Z a-z 0-9 _ . -")
    if event in RESERVED_EVENTS:
        raise ValueError(
            f"{event!r} is reserved: the gateway makes {', '.join(sorted(RESERVED_EVENTS))} "
            "events itself, so clients can trust them"
        )


def published_from_reply(reply: Any, event: str, data: str | bytes) -> Published:
    """The ``{stream id, receivers}`` a logged publish script answers, as :class:`Published`."""
    stream_id, receivers = reply
    sid = stream_id.decode("ascii") if isinstance(stream_id, bytes) else str(stream_id)
    return Published(sid, log_event_id(sid, event, data), int(receivers))


async def publish_logged(
    client: aioredis.Redis, event: str, data: str | bytes, caps: LogCaps | None = None
) -> Published:
    """Append to the log, SET ``sse:last:<event>``, PUBLISH the marker and ``sse:<event>``."""
    check_event_name(event)
    reply = await client.eval(PUBLISH_LUA, 0, event, data, *(caps or LogCaps()).script_args())
    return published_from_reply(reply, event, data)


async def publish_many(
    client: aioredis.Redis, events: Sequence[tuple[str, str | bytes]], caps: LogCaps | None = None
) -> list[Published | Exception]:
    """Each event as :func:`publish_logged`, in order, in one pipeline (one round trip).

    Each event is its own atomic step; a refused one comes back as its exception.
    """
    for event, _ in events:
        check_event_name(event)
    args = (caps or LogCaps()).script_args()
    async with client.pipeline(transaction=False) as pipe:
        for event, data in events:
            pipe.eval(PUBLISH_LUA, 0, event, data, *args)
        replies = await pipe.execute(raise_on_error=False)
    return [
        reply if isinstance(reply, Exception) else published_from_reply(reply, event, data)
        for reply, (event, data) in zip(replies, events, strict=True)
    ]


async def publish_event(
    client: aioredis.Redis, event: str, data: str | bytes, caps: LogCaps | None = None
) -> int:
    """:func:`publish_logged`, returning the channel's receiver count."""
    return (await publish_logged(client, event, data, caps)).receivers
