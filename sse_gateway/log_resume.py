"""Resuming a stream from the event log: what a client missed after a log id, on any replica.

The in-memory history is the fast path. An id it does not hold (a replica started after
the event, or one that relayed so much since that it forgot it) is looked up in the log:
its entry must still be there with the same content, and of a type the stream may
receive; otherwise the id is unknown (``resync``), exactly like an id nobody ever saw.

The replay runs up to this process's log position as it was when the stream subscribed
to the hub: everything relayed after that is in the stream's queue, and everything at
or before it comes from the log, so each event reaches the client once.
"""

from __future__ import annotations

from typing import NamedTuple

from connectome_core.contract import CHANNEL_PREFIX
from connectome_core.event_log import parse_log_event_id, stream_id_key
from sse_gateway.framing import Frame
from sse_gateway.log_follower import EMPTY, PAGE, Position
from sse_gateway.log_store import LogEntry, LogStore
from sse_gateway.relay import Relay


class LogReplay(NamedTuple):
    frames: list[Frame]
    # Queued logged frames at or before this log position are the client's already.
    seen_until: tuple[int, int]


async def replay_from_log(
    store: LogStore,
    relay: Relay,
    last_id: str,
    events: frozenset[str] | None,
    until: Position | None,
    max_bytes: int,
) -> LogReplay | None:
    """The logged events of ``events`` after ``last_id`` up to ``until``; None when the log
    cannot say (the id is not a log id, its entry is gone or differs, its type is not the
    stream's, or the replay would not fit the client's buffer)."""
    parsed = parse_log_event_id(last_id)
    if parsed is None or until is None:
        return None
    stream_id, digest = parsed
    entry = await store.entry(stream_id)
    if entry is None or entry.digest != digest:
        return None  # trimmed, lost with Redis, or another entry under a reused id
    if events is not None and entry.event not in events:
        return None  # answered as unknown: an id reveals nothing about other types
    start = stream_id_key(stream_id)
    if until is EMPTY or until.key <= start:
        return LogReplay([], start)  # this process is behind the client: nothing to add
    entries = await _read(store, stream_id, until.stream_id, events, max_bytes)
    if entries is None:
        return None
    newest = {e.event: e for e in entries if e.event in relay.latest_only}
    frames = []
    for item in entries:
        if item.event in relay.latest_only and newest[item.event] is not item:
            continue  # latest-only: the newest unseen one alone
        frame = relay.encode(item.event, CHANNEL_PREFIX + item.event, item.data, item.stream_id)
        if frame is not None:
            frames.append(frame)
    return LogReplay(frames, until.key)


async def _read(
    store: LogStore,
    after: str,
    until: str,
    events: frozenset[str] | None,
    max_bytes: int,
) -> list[LogEntry] | None:
    found: list[LogEntry] = []
    size = 0
    while True:
        page = await store.after(after, PAGE, until)
        for entry in page:
            if events is None or entry.event in events:
                found.append(entry)
                size += len(entry.data)
        if size > max_bytes:
            return None  # it would cut the client, which would come back with the same id
        if len(page) < PAGE:
            return found
        after = page[-1].stream_id
