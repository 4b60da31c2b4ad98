"""Numbered events (0, 1, 2, ...) published at a pace, remembering which ones Redis accepted.

The ``sink`` decides how an event goes out: the product's way (:class:`RedisEvents`)
or a bare PUBLISH (:class:`ChannelOnly`) when no snapshot may be re-sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Protocol

import redis.asyncio as aioredis

from connectome_core.contract import channel_for
from connectome_core.publishing import publish_event
from connectome_sse.localrun.browser import SEQ_EVENT


class EventSink(Protocol):
    async def publish_event(self, event: str, data: str) -> int:
        """Publish ``data`` as ``event``; the number of subscribers that received it."""
        ...


class RedisEvents:
    """The product's way on ``client``: the snapshot key set and the channel published."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client

    async def publish_event(self, event: str, data: str) -> int:
        return await publish_event(self.client, event, data)


class ChannelOnly:
    """A PUBLISH on the event's channel alone, no snapshot."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client

    async def publish_event(self, event: str, data: str) -> int:
        return int(await self.client.publish(channel_for(event), data))


def seq_data(seq: int) -> str:
    return json.dumps({"seq": seq})


@dataclass
class SeqPublisher:
    """``event`` with data ``data(n)`` for n = 0, 1, 2, ...

    A publish that raises one of ``refused`` (or outlasts ``timeout``, with
    ``TimeoutError`` among them) is counted in ``failed`` and its number is
    not used again: nobody can expect it. ``accepted`` lists the others, ``last``
    is the newest of them.
    """

    sink: EventSink
    event: str = SEQ_EVENT
    data: Callable[[int], str] = seq_data
    refused: tuple[type[BaseException], ...] = ()
    timeout: float | None = None
    next: int = field(default=0, init=False)
    last: int = field(default=0, init=False)
    accepted: list[int] = field(default_factory=list, init=False)
    failed: int = field(default=0, init=False)

    async def publish(self, seq: int | None = None) -> int | None:
        """Publish ``seq`` (by default the number after the last one tried): the receiver
        count, or None when it was refused."""
        seq = self.next if seq is None else seq
        self.next = seq + 1
        try:
            async with asyncio.timeout(self.timeout):
                receivers = await self.sink.publish_event(self.event, self.data(seq))
        except self.refused:
            self.failed += 1
            return None
        self.accepted.append(seq)
        self.last = seq
        return receivers

    async def run(self, interval: float, stop: asyncio.Event) -> None:
        """The next number every ``interval`` seconds until ``stop`` is set."""
        while not stop.is_set():
            await self.publish()
            await asyncio.sleep(interval)

    @contextlib.asynccontextmanager
    async def running(self, interval: float) -> AsyncIterator[SeqPublisher]:
        """``run`` in a task for the duration of the block."""
        stop = asyncio.Event()
        task = asyncio.create_task(self.run(interval, stop))
        try:
            yield self
        finally:
            stop.set()
            await task
