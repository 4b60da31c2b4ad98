"""Lines of stdin as they arrive, in batches of what is already there (``publish --lines``).

A daemon thread reads the file descriptor (pipes, terminals and regular files alike) and
hands chunks to the event loop; :class:`LineSplitter` cuts them into numbered lines, so
every complete line is available at once, and several lines that came together come out
together. A line over ``max_bytes`` is never held whole: it is reported as too long.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass

CHUNK = 65536
QUEUED_CHUNKS = 64  # the reader waits when this many are not yet taken


@dataclass(frozen=True)
class Line:
    """Line ``number`` (from 1) without its line break; ``data`` None when it was too long."""

    number: int
    data: bytes | None
    size: int


class LineSplitter:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.buffer = bytearray()
        self.number = 0
        self.overflow = 0  # bytes of a too-long line dropped so far

    def feed(self, chunk: bytes) -> list[Line]:
        lines = []
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            lines.append(self._complete(chunk[start:end]))
            start = end + 1
        self._hold(chunk[start:])
        return lines

    def end(self) -> list[Line]:
        """The last line when it had no line break."""
        if self.buffer or self.overflow:
            return [self._complete(b"")]
        return []

    def _hold(self, part: bytes) -> None:
        if self.overflow:
            self.overflow += len(part)
        elif len(self.buffer) + len(part) > self.max_bytes + 1:  # + 1: a CR before the LF
            self.overflow = len(self.buffer) + len(part)
            self.buffer.clear()
        else:
            self.buffer += part

    def _complete(self, tail: bytes) -> Line:
        self.number += 1
        if self.overflow or len(self.buffer) + len(tail) > self.max_bytes + 1:
            size = self.overflow + len(self.buffer) + len(tail)
            self.overflow = 0
            self.buffer.clear()
            return Line(self.number, None, size)
        data = bytes(self.buffer) + tail
        self.buffer.clear()
        if data.endswith(b"\r"):
            data = data[:-1]
        if len(data) > self.max_bytes:
            return Line(self.number, None, len(data))
        return Line(self.number, data, len(data))


def _read_into(fd: int, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[bytes]) -> None:
    while True:
        try:
            chunk = os.read(fd, CHUNK)
        except OSError:
            chunk = b""
        put = queue.put(chunk)
        try:
            handed = asyncio.run_coroutine_threadsafe(put, loop)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            put.close()
            return
        handed.result()
        if not chunk:
            return


async def line_batches(fd: int, max_bytes: int) -> AsyncIterator[list[Line]]:
    """Batches of lines from ``fd`` until its end: each batch is every complete line
    that had arrived when the previous batch was taken."""
    queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUED_CHUNKS)
    reader = threading.Thread(
        target=_read_into,
        args=(fd, asyncio.get_running_loop(), queue),
        name="stdin-lines",
        daemon=True,  # a read blocked on a terminal never holds up the exit
    )
    reader.start()
    splitter = LineSplitter(max_bytes)
    ended = False
    while not ended:
        chunks = [await queue.get()]
        while not queue.empty() and chunks[-1]:
            chunks.append(queue.get_nowait())
        batch: list[Line] = []
        for chunk in chunks:
            if not chunk:
                ended = True
                batch.extend(splitter.end())
                break
            batch.extend(splitter.feed(chunk))
        if batch:
            yield batch
