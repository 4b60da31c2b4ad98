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

Bounds: at most ``limit`` frames wait behind a stalled write; one more and
the client is cut (its stream ends, its browser reconnects and gets the
snapshot). A stream closed while a write is stalled is aborted when the
server offers a way (``DirectBody.abort``): waiting for a client that stopped reading
to take a goodbye would hold its connection for ever. Frames are shared
``bytes`` objects, so a waiting frame costs a reference, not a copy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Generator
from typing import Any, Protocol

from sse_gateway.framing import Frame

# An ASGI send whose calls are coroutines (true of every ASGI server and middleware in
# use here); the fast path drives them by hand.
Send = Callable[[dict[str, Any]], Coroutine[Any, Any, None]]


class DirectBody(Protocol):
    """What a server may offer beyond ASGI (see ``sse_gateway.http_protocol``)."""

    def write(self, chunk: bytes) -> bool:
        """Write chunk-framed body bytes now, or return False when that is not possible."""

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
        "_direct",
        "_final",
        "_flusher",
        "_holding",
        "_limit",
        "_pending",
        "_send",
        "closed",
        "cut",
        "frames",
    )

    def __init__(self, send: Send, limit: int, direct: DirectBody | None = None) -> None:
        self._send = send
        self._direct = direct
        self._limit = limit
        # A list, not a deque: it is only ever appended to and drained whole, and an
        # empty deque costs ten times the memory of an empty list on every stream.
        self._pending: list[bytes] = []
        # While holding, frames queue up: the snapshot must reach the client first.
        self._holding = True
        self._flusher: asyncio.Future[None] | None = None
        self._final: bytes | None = None
        self.closed = False
        self.cut = False
        self.frames = 0

    def offer(self, frame: Frame) -> bool:
        if self.closed:
            return True
        if self._holding or self._flusher is not None:
            if len(self._pending) >= self._limit:
                self.cut = True
                self.close(b"")
                return False
            self._pending.append(frame.data)
        elif self._direct is None or not self._direct.write(frame.chunk):
            self._write(frame.data, more_body=True)
        self.frames += 1
        return True

    def release(self, first: list[bytes]) -> None:
        """End holding: write ``first`` (the snapshots), then what queued meanwhile."""
        self._holding = False
        if self.closed and self._final is None:
            return
        body = b"".join([*first, *self._pending])
        self._pending.clear()
        if body:
            self._write(body, more_body=True)
        if self.closed and self._final is not None and self._flusher is None:
            final, self._final = self._final, None
            self._write(final, more_body=False)

    def close(self, final_frame: bytes) -> None:
        """End the stream after ``final_frame``; frames still waiting are dropped."""
        if self.closed:
            return
        self.closed = True
        self._pending.clear()
        if self._flusher is not None and self._direct is not None:
            self._direct.abort()  # the stalled write then returns: the connection is gone
        elif self._holding or self._flusher is not None:
            self._final = final_frame  # written by release() or by the flusher
        else:
            self._write(final_frame, more_body=False)

    def _write(self, body: bytes, more_body: bool) -> None:
        coro = self._send({"type": "http.response.body", "body": body, "more_body": more_body})
        try:
            blocker = coro.send(None)
        except StopIteration:
            return
        self._flusher = asyncio.ensure_future(self._flush(coro, blocker))

    async def _flush(self, coro: Coroutine[Any, Any, Any], blocker: Any) -> None:
        try:
            await _Continuation(coro, blocker)
            while self._pending:
                body = b"".join(self._pending)
                self._pending.clear()
                await self._send({"type": "http.response.body", "body": body, "more_body": True})
            if self._final is not None:
                final, self._final = self._final, None
                await self._send({"type": "http.response.body", "body": final, "more_body": False})
        finally:
            self._flusher = None

    async def wait_flushed(self) -> None:
        """Let a write that is still under way finish (used before the handler returns)."""
        if self._flusher is not None:
            await asyncio.shield(self._flusher)
