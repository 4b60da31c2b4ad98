"""One read shared by every caller who asked meanwhile: snapshots, and the catch-up barrier.

A caller may only use a read that started after it asked (after its stream subscribed):
callers join the next batch, which starts once the previous read is done. A reconnect
storm of thousands of streams costs a handful of Redis reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from sse_gateway.framing import Frame

Snapshots = dict[str, Frame]  # event name -> its framed snapshot
T = TypeVar("T")


class SharedCall(Generic[T]):
    def __init__(self, read: Callable[[], Awaitable[T]]) -> None:
        self._read = read
        self._one_at_a_time = asyncio.Lock()
        self._batch: asyncio.Future[T] | None = None  # not started yet: open to join
        self._tasks: set[asyncio.Task[None]] = set()

    async def read(self) -> T:
        """The result of a call that began after this one did; raises what it raised."""
        batch = self._batch
        if batch is None:
            batch = self._batch = asyncio.get_running_loop().create_future()
            task = asyncio.create_task(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(batch)

    async def _run(self, batch: asyncio.Future[T]) -> None:
        async with self._one_at_a_time:
            self._batch = None  # the read starts now: later callers need the next batch
            try:
                result = await self._read()
            except Exception as exc:
                batch.set_exception(exc)
                batch.exception()  # marked as retrieved even if every caller has gone
            else:
                batch.set_result(result)


SnapshotReader = SharedCall[Snapshots]
