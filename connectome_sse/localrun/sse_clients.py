"""Many concurrent real HTTP SSE clients (httpx), each recording what it received."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx

from connectome_sse.sse_client import EventStreamParser, ServerEvent


class StreamRecorder:
    """One client: connects once and records events (and whether the stream ended)."""

    def __init__(self, client: httpx.AsyncClient, url: str) -> None:
        self.client = client
        self.url = url
        self.events: list[ServerEvent] = []
        self.status: int | None = None
        self.retry_ms: int | None = None
        self.ended = False
        self.error: BaseException | None = None
        self.opened = asyncio.Event()

    def of(self, event: str) -> list[str]:
        return [e.data for e in self.events if e.event == event]

    async def run(self) -> None:
        parser = EventStreamParser()
        try:
            async with self.client.stream("GET", self.url) as response:
                self.status = response.status_code
                self.opened.set()
                async for line in response.aiter_lines():
                    event = parser.feed(line)
                    self.retry_ms = parser.retry_ms
                    if event is not None:
                        self.events.append(event)
        except (httpx.HTTPError, OSError) as exc:
            self.error = exc
        finally:
            self.ended = True
            self.opened.set()


@contextlib.asynccontextmanager
async def open_streams(url: str, count: int) -> AsyncIterator[list[StreamRecorder]]:
    """``count`` streams on ``url``, all with their response headers received."""
    limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=0)
    timeout = httpx.Timeout(30.0, read=None)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        recorders = [StreamRecorder(client, url) for _ in range(count)]
        tasks = [asyncio.create_task(r.run()) for r in recorders]
        try:
            async with asyncio.timeout(60):
                await asyncio.gather(*(r.opened.wait() for r in recorders))
            yield recorders
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def until(predicate: object, timeout: float = 15.0, what: str = "") -> None:
    """Poll a plain callable until truthy, failing at the deadline."""
    assert callable(predicate)
    try:
        async with asyncio.timeout(timeout):
            while not predicate():  # noqa: ASYNC110 (a plain callable, polled on purpose)
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None
