"""One client's SSE stream over an ASGI ``send``: the hub's subscriber for HTTP clients.

The fast path is why this module exists. Fanning an event out to thousands
of streams must not wake thousands of tasks: when a client's connection can
take bytes, ``offer`` writes them right there, synchronously: through the
server's ``DirectBody`` when it offers one (the event's chunk-framed bytes,
built once for all clients), else by running the ASGI ``send`` coroutine to
completion by hand. An ASGI server only suspends a body ``send`` when the
transport is paused for flow control (the client reads slower than we
write). Only then does the writer start a task that finishes that send and
then flushes, coalesced into one write, whatever queued up behind it.

Bounds: at most ``limit`` frames and ``max_bytes`` bytes wait behind a
stalled write; one more and the client is cut (its stream ends, its browser
reconnects and gets the snapshot). A single frame is always taken, so the
queue of one client holds at most ``max(max_bytes, one frame)``. Frames that
wait while the stream is still *holding* (its snapshot is being read) are
not the client's fault: they count only against ``max_bytes``, the memory
bound, never against ``limit``. A stream closed while a write is stalled is
aborted when the server offers a way (``DirectBody.abort``): waiting for a
client that stopped reading to take a goodbye would hold its connection for
ever. Frames are shared ``bytes`` objects, so a waiting frame costs a
reference, not a copy.

A write that fails (the client's connection is already gone) closes this
writer and nothing else: one client's error never reaches the hub's fan-out.

Latest-only types (``Frame.conflate``). Once frames wait (behind a stalled
write or the snapshot read), a frame of a latest-only type replaces the
queued one of the same type (``on_conflate`` counts it) instead of queuing
behind it, and never counts against ``limit``: a slow dashboard is never cut
for health events and, when it reads again, gets the newest one, not a
backlog. (Conflating as soon as anything waits, rather than only once the
buffer is full, is what keeps that newest one at most one publish old.) So
the queue holds at most one frame per latest-only type besides the bounded
ordinary ones. What cuts such a client is time: a write that takes no bytes
for ``send_timeout`` seconds (the client reads nothing at all) ends the
stream (``timed_out``).

Around connect, ``release`` drops the queued live frames the opening already
covers, so no browser sees an id twice or an event older than one it has:
after a replay, every queued frame with an id (the replay was taken from the
history after they were relayed); after snapshots, for each type, the live
copy of its snapshot and every frame of that type queued before it (older:
the snapshot read waits until this process caught up with Redis, see
``Relay._read_framed_snapshots``). Frames without an id (pings,
``health_stale``) always stay.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Generator, Sequence
from typing import Any, Protocol

from sse_gateway.framing import Frame

# An ASGI send whose calls are coroutines (true of every ASGI server and middleware in
# use here); the fast path drives them by hand.
Send = Callable[[dict[str, Any]], Coroutine[Any, Any, None]]


class DirectBody(Protocol):
    """What a server may offer beyond ASGI (see ``sse_gateway.http_protocol``)."""

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
        "closed",
        "cut",
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
        self._pending_bytes = 0
        # A list, not a deque: it is only ever appended to and drained whole, and an
        # empty deque costs ten times the memory of an empty list on every stream.
        self._pending: list[Frame] = []
        # While holding, frames queue up: the snapshot must reach the client first.
        self._holding = True
        self._flusher: asyncio.Future[None] | None = None
        self._final: bytes | None = None
        self._send_timeout = send_timeout
        self._on_conflate = on_conflate
        self.closed = False
        self.cut = False
        self.timed_out = False
        self.frames = 0

    def offer(self, frame: Frame) -> bool:
        if self.closed:
            return True
        if self._holding or self._flusher is not None:
            if frame.conflate is not None:
                self._conflate(frame.conflate)
            elif self._pending and self._over_limits(len(frame.data)):
                self.cut = True
                self.close(b"")
                return False
            self._pending.append(frame)
            self._pending_bytes += len(frame.data)
        else:
            try:
                if self._direct is None or not self._direct.write(frame):
                    self._write(frame.data, more_body=True)
            except Exception:  # the connection is gone: end this stream only
                self._broken()
                return True
        self.frames += 1
        return True

    def _conflate(self, key: str) -> None:
        """Drop the queued frame of latest-only type ``key``, if any: a newer one follows."""
        pending = self._pending
        for index in range(len(pending) - 1, -1, -1):
            if pending[index].conflate == key:
                self._pending_bytes -= len(pending[index].data)
                del pending[index]
                if self._on_conflate is not None:
                    self._on_conflate()
                return

    def _over_limits(self, size: int) -> bool:
        if self._pending_bytes + size > self._max_bytes:
            return True
        # Frames held behind the snapshot read are not the client's fault.
        return not self._holding and len(self._pending) >= self._limit

    def _broken(self) -> None:
        self.closed = True
        self._pending.clear()
        self._pending_bytes = 0
        self._final = None
        if self._direct is not None:
            self._direct.abort()

    def release(self, first: Sequence[Frame | bytes], replayed: bool = False) -> None:
        """End holding: write ``first`` (the snapshots, or a replay when ``replayed``),
        then what queued meanwhile and is newer (see the module docstring)."""
        self._holding = False
        if self.closed and self._final is None:
            return
        opening = [item if isinstance(item, bytes) else item.data for item in first]
        if replayed:
            queued = [f.data for f in self._pending if f.event_id is None]
        else:
            queued = [f.data for f in _newer_than(first, self._pending)]
        body = b"".join([*opening, *queued])
        self._pending.clear()
        self._pending_bytes = 0
        try:
            if body:
                self._write(body, more_body=True)
            if self.closed and self._final is not None and self._flusher is None:
                final, self._final = self._final, None
                self._write(final, more_body=False)
        except Exception:
            self._broken()

    def close(self, final_frame: bytes) -> None:
        """End the stream after ``final_frame``; frames still waiting are dropped."""
        if self.closed:
            return
        self.closed = True
        self._pending.clear()
        self._pending_bytes = 0
        if self._flusher is not None and self._direct is not None:
            self._direct.abort()  # the stalled write then returns: the connection is gone
        elif self._holding or self._flusher is not None:
            self._final = final_frame  # written by release() or by the flusher
        else:
            try:
                self._write(final_frame, more_body=False)
            except Exception:
                self._broken()

    def _write(self, body: bytes, more_body: bool) -> None:
        coro = self._send({"type": "http.response.body", "body": body, "more_body": more_body})
        try:
            blocker = coro.send(None)
        except StopIteration:
            return
        self._flusher = asyncio.ensure_future(self._flush(coro, blocker))

    async def _flush(self, coro: Coroutine[Any, Any, Any], blocker: Any) -> None:
        try:
            async with asyncio.timeout(self._send_timeout):
                await _Continuation(coro, blocker)
            while self._pending:
                body = b"".join([frame.data for frame in self._pending])
                self._pending.clear()
                self._pending_bytes = 0
                async with asyncio.timeout(self._send_timeout):
                    message = {"type": "http.response.body", "body": body, "more_body": True}
                    await self._send(message)
            if self._final is not None:
                final, self._final = self._final, None
                await self._send({"type": "http.response.body", "body": final, "more_body": False})
        except TimeoutError:  # the client took no bytes for send_timeout: cut it
            self.cut = self.timed_out = True
            self._broken()
        except Exception:  # the connection is gone: end this stream only
            self._broken()
        finally:
            self._flusher = None

    async def wait_flushed(self) -> None:
        """Let a write that is still under way finish (used before the handler returns)."""
        if self._flusher is not None:
            await asyncio.shield(self._flusher)


def _newer_than(snapshots: Sequence[Frame | bytes], queued: list[Frame]) -> list[Frame]:
    """``queued`` without, per type, the live copy of its snapshot and what came before it."""
    frames = [item for item in snapshots if isinstance(item, Frame) and item.event_id]
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
