"""Real HTTP SSE clients (httpx), each recording what it received and when."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping, Sequence

import httpx

from connectome_sse.sse_client import EventStreamParser, ServerEvent


class StreamRecorder:
    """One client: connects once and records events, their arrival (monotonic), and the end."""

    def __init__(
        self, client: httpx.AsyncClient, url: str, headers: Mapping[str, str] | None = None
    ) -> None:
        self.client = client
        self.url = url
        self.headers = dict(headers or {})
        self.events: list[ServerEvent] = []
        self.arrived: list[float] = []  # time.monotonic() of each of ``events``
        self.status: int | None = None
        self.retry_ms: int | None = None
        self.ended = False
        self.error: BaseException | None = None
        self.opened = asyncio.Event()

    def of(self, event: str) -> list[str]:
        return [e.data for e in self.events if e.event == event]

    def arrivals(self, event: str) -> list[float]:
        """When each ``event`` arrived (monotonic seconds)."""
        return [at for e, at in zip(self.events, self.arrived, strict=True) if e.event == event]

    def real(self) -> list[ServerEvent]:
        """Every event but the pings."""
        return [e for e in self.events if e.event != "ping"]

    async def run(self) -> None:
        parser = EventStreamParser()
        try:
            async with self.client.stream("GET", self.url, headers=self.headers) as response:
                self.status = response.status_code
                self.opened.set()
                async for line in response.aiter_lines():
                    event = parser.feed(line)
                    self.retry_ms = parser.retry_ms
                    if event is not None:
                        self.events.append(event)
                        self.arrived.append(time.monotonic())
        except (httpx.HTTPError, OSError) as exc:
            self.error = exc
        finally:
            self.ended = True
            self.opened.set()


@contextlib.asynccontextmanager
async def open_streams(url: str, count: int) -> AsyncIterator[list[StreamRecorder]]:
    """``count`` streams on ``url``, all with their response headers received."""
    async with open_each([url] * count) as recorders:
        yield recorders


@contextlib.asynccontextmanager
async def open_each(urls: Sequence[str]) -> AsyncIterator[list[StreamRecorder]]:
    """A stream on each of ``urls``, all with their response headers received."""
    limits = httpx.Limits(max_connections=len(urls) + 10, max_keepalive_connections=0)
    timeout = httpx.Timeout(30.0, read=None)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        recorders = [StreamRecorder(client, url) for url in urls]
        tasks = [asyncio.create_task(r.run()) for r in recorders]
        try:
            async with asyncio.timeout(60):
                await asyncio.gather(*(r.opened.wait() for r in recorders))
            yield recorders
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
