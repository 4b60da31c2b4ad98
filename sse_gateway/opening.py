"""A new stream's opening: a replay, or ``resync`` and the snapshots; then ``health_stale``.

A stream that comes with ``Last-Event-ID`` (the header, or ``?lastEventId=``
for clients that cannot set headers) and whose id this process knows gets
the events it missed, from the relay's history, and no snapshots: the replay
brings it up to date. An unknown or ambiguous id gets ``event: resync`` and
then the snapshots, as a new stream does: never a silent gap. So does the id
of an event the stream may not see (outside its ``events``), by the same path
and the same wait below, so that a guessed id reveals nothing. While
publisher health is stale, the stream then gets ``health_stale``.

Exactly once around the replay. The stream subscribed before the replay is
taken, and every frame relayed since then waits in its queue; all of those
are in the history the replay was taken from, so ``StreamWriter.release``
drops the queued ones that carry an id (``Opening.replayed``): each event
reaches the client in the replay or live, once, in relay order.

An id unknown here may only be not yet known: the client got it from a
replica that is ahead of this one (this process is busy with the very
reconnect storm that brought the client). Before answering ``resync``, the
stream waits until this process has relayed everything Redis took so far
(``EventSource.caught_up``, shared by every stream that asks meanwhile) and
looks again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import NamedTuple
from urllib.parse import parse_qs

from sse_gateway.framing import Frame
from sse_gateway.hub import Subscriber
from sse_gateway.relay import RESYNC_FRAME, Relay

LAST_EVENT_ID_HEADER = b"last-event-id"
LAST_EVENT_ID_PARAMETER = "lastEventId"
MAX_ID_LENGTH = 256  # ours are 16; anything longer cannot be known, whatever it is


def last_event_id(headers: list[tuple[bytes, bytes]], query_string: bytes) -> str:
    """The id a reconnecting client sent (header first, then query parameter); "" if none."""
    for name, value in headers:
        if name.lower() == LAST_EVENT_ID_HEADER:
            return value.decode("latin-1").strip()[:MAX_ID_LENGTH]
    values = parse_qs(query_string.decode("latin-1")).get(LAST_EVENT_ID_PARAMETER, [])
    return values[0].strip()[:MAX_ID_LENGTH] if values else ""


class Opening(NamedTuple):
    frames: list[Frame]
    replayed: bool  # a replay from the history, not snapshots


async def opening_frames(
    relay: Relay,
    stream: Subscriber,
    events: frozenset[str] | None,
    last_id: str,
    snapshots: Callable[[], Awaitable[list[Frame]]],
) -> Opening:
    first: list[Frame] = []
    if last_id:
        replay = relay.resume(last_id, events)
        if replay is None and relay.redis_up and await relay.caught_up():
            replay = relay.resume(last_id, events)
        if replay is not None:
            return Opening([*replay, *relay.opening_extras()], replayed=True)
        first.append(RESYNC_FRAME)
    if not relay.redis_up:
        relay.awaiting_snapshots.add(stream)  # the re-send after reconnecting is for it too
    # health_stale once: a state that turns stale during the read was broadcast to this
    # (already subscribed) stream, and one that ended meanwhile is ended by the queued health.
    stale_before = relay.liveness.stale
    first.extend(await snapshots())
    return Opening([*first, *(relay.opening_extras() if stale_before else [])], replayed=False)
