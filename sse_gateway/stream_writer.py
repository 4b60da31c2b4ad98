"""One client's SSE stream over an ASGI ``send``: the hub's subscriber for HTTP clients.

Fan-out must not wake a task per client: while the connection takes bytes, ``offer``
writes at once (through the server's ``DirectBody`` when there is one, else by running
``send`` by hand); only a write that suspends starts a task that finishes it and writes
what queued behind it. The queue is bounded in frames and bytes (the opening counts
only against the bytes), latest-only frames replace their queued predecessor, and a
client that takes no bytes for ``send_timeout`` is cut. ``release`` writes a new
stream's opening and what queued meanwhile, minus what the opening already covers.
The writer records why it ended (``ended_by``) at the moment it ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Generator, Sequence
from typing import Any, Protocol

from connectome_core.event_log import parse_log_event_id, stream_id_key
from sse_gateway.framing import Frame

# Consecutive opening frames smaller than this together are written as one body: a
# replay of many small events costs a few writes, and the copy stays this small.
COALESCED_BYTES = 64 * 1024

# Why a stream ended, as its close line says it. The gateway's own reasons are recorded
# on the writer when it ends the stream; a stream with none ended on the client's side.
CLIENT, CUT, TIMEOUT, DRAIN, EXPIRED, ERROR = (
    "client",
    "cut",
    "timeout",
    "drain",
    "expired",
    "error",
)

# An ASGI send whose calls are coroutines (true of every ASGI server and middleware in
# use here); the fast path drives them by hand.
Send = Callable[[dict[str, Any]], Coroutine[Any, Any, None]]


class DirectBody(Protocol):
    """What a server may offer beyond ASGI (see ``sse_gateway.stream_connection``)."""

    def write(self, frame: Frame) -> bool:
        """Write ``frame``'s body bytes now (framed as the response needs), or return False."""

    def abort(self) -> None:
        """Drop the connection at once."""


class _Continuation:
    """Awaits the rest of a coroutine that was already run up to its first suspension."""

    __slots__ = ("_blocker", "_coro")

    def __init__(self, coro: Coroutine[Any, Any, Any], blocker: Any) -> None:
        self._coro = coro
        self._blocker = blocker

    def __await__(self) -> Generator[Any, Any, None]:
        coro, value = self._coro, self._blocker
        while True:
            try:
                sent = yield value
            except BaseException as exc:  # cancellation reaches the send it interrupts
                try:
                    value = coro.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    value = coro.send(sent)
                except StopIteration:
                    return


class StreamWriter:
    __slots__ = (
        "__weakref__",
        "_direct",
        "_exempt",
        "_final",
        "_flusher",
        "_holding",
        "_limit",
        "_max_bytes",
        "_on_conflate",
        "_pending",
        "_pending_bytes",
        "_send",
        "_send_timeout",
        "bytes_sent",
        "closed",
        "cut",
        "ended_by",
        "frames",
        "timed_out",
    )

    def __init__(
        self,
        send: Send,
        limit: int,
        direct: DirectBody | None = None,
        max_bytes: int = 1024 * 1024,
        send_timeout: float | None = None,
        on_conflate: Callable[[], object] | None = None,
    ) -> None:
        self._send = send
        self._direct = direct
        self._limit = limit
        self._max_bytes = max_bytes
        # Bytes of every frame that waits: the queue and the part of it being written.
        self._pending_bytes = 0
        # A list, not a deque: it is only ever appended to and taken whole, and an
        # empty deque costs ten times the memory of an empty list on every stream.
        self._pending: list[Frame] = []
        # How many frames at the head of the queue came with the opening: bytes only.
        self._exempt = 0
        # While holding, frames queue up: the snapshot must reach the client first.
        self._holding = True
        self._flusher: asyncio.Future[None] | None = None
        self._final: bytes | None = None
        self._send_timeout = send_timeout
        self._on_conflate = on_conflate
        self.closed = False
        self.cut = False
        self.timed_out = False
        self.ended_by: str | None = None  # why the gateway ended it (None: it has not)
        self.frames = 0  # frames written (handed to the server), and their bytes
        self.bytes_sent = 0

    def offer(self, frame: Frame) -> bool:
        if self.closed:
            return True
        if self._holding or self._flusher is not None:
            if frame.conflate is not None:
                self._conflate(frame.conflate)
            elif self._pending_bytes and self._over_limits(len(frame.data)):
                self._cut()
                return False
            self._pending.append(frame)
            self._pending_bytes += len(frame.data)
        else:
            self._put(frame)
        return True

    def _put(self, frame: Frame) -> None:
        """Write ``frame`` now; if the send suspends, the flusher finishes it."""
        try:
            if self._direct is not None and self._direct.write(frame):
                self._sent(len(frame.data))
            else:
                self._write(frame.data, more_body=True, size=len(frame.data))
        except Exception:  # the connection is gone: end this stream only
            self._broken()

    def _sent(self, size: int, count: int = 1) -> None:
        self.frames += count
        self.bytes_sent += size

    def _conflate(self, key: str) -> None:
        """Drop the queued frame of latest-only type ``key``, if any: a newer one follows."""
        pending = self._pending
        for index in range(len(pending) - 1, -1, -1):
            if pending[index].conflate == key:
                self._pending_bytes -= len(pending[index].data)
                del pending[index]
                if index < self._exempt:
                    self._exempt -= 1
                if self._on_conflate is not None:
                    self._on_conflate()
                return

    def _over_limits(self, size: int) -> bool:
        if self._pending_bytes + size > self._max_bytes:
            return True
        # Frames held behind the snapshot read, and the opening, are not the client's pace.
        return not self._holding and len(self._pending) - self._exempt >= self._limit

    def _broken(self) -> None:
        self.closed = True
        self._drop_pending()
        self._final = None
        if self._direct is not None:
            self._direct.abort()

    def _drop_pending(self) -> None:
        self._pending.clear()
        self._pending_bytes = 0
        self._exempt = 0

    def release(
        self,
        first: Sequence[Frame],
        replayed: bool = False,
        seen_until: tuple[int, int] | None = None,
    ) -> None:
        """End holding: write ``first`` (the snapshots, or a replay when ``replayed``),
        then what queued meanwhile and is newer.

        Of the queued frames, after a replay from the history only those without an id
        stay (every one with an id was relayed before the replay was taken); after a
        replay from the event log, all but logged ones at or before ``seen_until`` (the
        replay or the client has those); after snapshots, per type, the live copy of its
        snapshot and what queued before it go.
        Written like live frames, one by one: once a write stalls, the rest waits within
        ``max_bytes`` (one frame is always taken), or the client is cut."""
        self._holding = False
        held = self._pending
        self._pending = []
        self._pending_bytes = 0
        if self.closed:  # closed while holding: only its final frame is still owed
            if self._final is not None and self._flusher is None:
                final, self._final = self._final, None
                try:
                    self._write(final, more_body=False)
                except Exception:
                    self._broken()
            return
        if seen_until is not None:
            queued = [frame for frame in held if not _logged_by(frame, seen_until)]
        elif replayed:
            queued = [frame for frame in held if frame.event_id is None]
        else:
            queued = _newer_than(first, held)
        del held
        self._write_backlog([*first, *queued])  # references to shared frames: no copy

    def _write_backlog(self, backlog: list[Frame]) -> None:
        """Write ``backlog`` now, in order, until a write stalls; the rest waits behind it."""
        # A joined piece is one stalled write at most: never more than the bound allows.
        piece = min(COALESCED_BYTES, self._max_bytes)
        index = 0
        while index < len(backlog):
            if self._flusher is not None:
                self._wait_behind(backlog[index:])
                return
            end, size = index, 0
            while end < len(backlog) and size + len(backlog[end].data) <= piece:
                size += len(backlog[end].data)
                end += 1
            if end - index > 1:  # small frames: one write of a bounded copy, not one each
                body = b"".join([frame.data for frame in backlog[index:end]])
                try:
                    self._write(body, more_body=True, size=size, count=end - index)
                except Exception:
                    self._broken()
                index = end
            else:
                self._put(backlog[index])
                index += 1
            if self.closed:
                return

    def _wait_behind(self, rest: list[Frame]) -> None:
        """Queue the opening's rest behind a stalled write, or cut the client if it cannot fit."""
        size = sum(len(frame.data) for frame in rest)
        if len(rest) > 1 and size > self._max_bytes:
            self._cut()
            return
        self._pending = rest
        self._pending_bytes = size
        self._exempt = len(rest)

    def _cut(self) -> None:
        """End a client that cannot keep up with its bound."""
        self.cut = True
        self.close(b"")
        self.ended_by = CUT

    def close(self, final_frame: bytes, reason: str | None = None) -> None:
        """End the stream after ``final_frame``, for ``reason``; frames still waiting are
        dropped."""
        if self.closed:
            return
        self.closed = True
        self.ended_by = reason
        self._drop_pending()
        if self._flusher is not None and self._direct is not None:
            self._direct.abort()  # the stalled write then returns: the connection is gone
        elif self._holding or self._flusher is not None:
            self._final = final_frame  # written by release() or by the flusher
        else:
            try:
                self._write(final_frame, more_body=False)
            except Exception:
                self._broken()

    def _write(self, body: bytes, more_body: bool, size: int = 0, count: int = 1) -> None:
        """Send ``body`` (``count`` frames, ``size`` bytes; 0 for a final frame)."""
        coro = self._send({"type": "http.response.body", "body": body, "more_body": more_body})
        try:
            blocker = coro.send(None)
        except StopIteration:
            if size:
                self._sent(size, count)
            return
        self._flusher = asyncio.ensure_future(self._flush(coro, blocker, size, count))

    async def _flush(
        self, coro: Coroutine[Any, Any, Any], blocker: Any, size: int, count: int
    ) -> None:
        try:
            async with asyncio.timeout(self._send_timeout):
                await _Continuation(coro, blocker)
            if size and not self.closed:
                self._sent(size, count)
            while self._pending and not self.closed:
                # Taken whole; what is offered meanwhile queues behind it.
                batch = self._pending
                self._pending = []
                self._exempt = 0
                await self._write_each(batch)
            if self._final is not None:
                final, self._final = self._final, None
                await self._send({"type": "http.response.body", "body": final, "more_body": False})
        except TimeoutError:  # the client took no bytes for send_timeout: cut it
            self.cut = self.timed_out = True
            self.ended_by = TIMEOUT
            self._broken()
        except Exception:  # the connection is gone: end this stream only
            self._broken()
        finally:
            self._flusher = None

    async def _write_each(self, batch: list[Frame]) -> None:
        """Write ``batch`` frame by frame: straight to the transport while it takes bytes,
        else through ``send``, which waits until it does (never one joined copy)."""
        for frame in batch:
            if self.closed:
                return
            if self._direct is None or not self._direct.write(frame):
                async with asyncio.timeout(self._send_timeout):
                    message = {"type": "http.response.body", "body": frame.data, "more_body": True}
                    await self._send(message)
                if self.closed:  # closed while that write waited: nothing waits any more
                    return
            self._pending_bytes -= len(frame.data)
            self._sent(len(frame.data))

    async def wait_flushed(self) -> None:
        """Let a write that is still under way finish (used before the handler returns)."""
        if self._flusher is not None:
            await asyncio.shield(self._flusher)


def _logged_by(frame: Frame, position: tuple[int, int]) -> bool:
    """Whether ``frame`` is a logged event at or before ``position`` in the event log."""
    parsed = parse_log_event_id(frame.event_id) if frame.event_id else None
    return parsed is not None and stream_id_key(parsed[0]) <= position


def _newer_than(snapshots: Sequence[Frame], queued: list[Frame]) -> list[Frame]:
    """``queued`` without, per type, the live copy of its snapshot and what came before it."""
    frames = [frame for frame in snapshots if frame.event_id]
    if not frames or not queued:
        return queued
    repeated = {frame.event_id for frame in frames}
    snapshot_ids = {frame.event: frame.event_id for frame in frames if frame.event is not None}
    # Type -> index of its snapshot's live copy. The first one if the same event came
    # twice: which copy the read saw cannot be told, and a repeat beats a loss.
    covered_until: dict[str, int] = {}
    for index, frame in enumerate(queued):
        if frame.event is not None and snapshot_ids.get(frame.event) == frame.event_id:
            covered_until.setdefault(frame.event, index)
    return [
        frame
        for index, frame in enumerate(queued)
        if frame.event_id not in repeated
        and (frame.event is None or index > covered_until.get(frame.event, -1))
    ]
