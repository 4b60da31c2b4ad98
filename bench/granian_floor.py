"""BASELINE ONLY, NOT PART OF THE PRODUCT: ``bench.floor_app``'s bare stream under granian.

Granian (Rust: accept, HTTP parsing, writes) calls this RSGI app once per request: a
fixed event-stream head, ``retry:``, then every message of one Redis channel. As bare as
``floor_app``: no checks, limits, snapshots, metrics or logs. It answers whether a server
whose accept-and-parse path is not Python opens a stream for less CPU.

    REDIS_URL=redis://127.0.0.1:6379/0 granian --interface rsgi --workers 2 \\
        --loop uvloop --port 8000 bench.granian_floor:app
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from bench.floor_app import DEFAULT_REDIS_URL, channel_frames

HEADERS = [("content-type", "text/event-stream"), ("cache-control", "no-cache")]


class FloorApp:
    def __init__(self) -> None:
        self.streams: set[Any] = set()
        self.relaying: asyncio.Task[None] | None = None

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.relaying = loop.create_task(self.relay())

    async def relay(self) -> None:
        async for frame in channel_frames(os.environ.get("REDIS_URL", DEFAULT_REDIS_URL)):
            for transport in list(self.streams):
                try:
                    await transport.send_bytes(frame)
                except Exception:
                    self.streams.discard(transport)

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        if scope.path == "/healthz":
            proto.response_str(200, [("content-type", "text/plain")], "ok")
            return
        if scope.path != "/api/sse":
            proto.response_empty(404, [])
            return
        transport = proto.response_stream(200, HEADERS)
        await transport.send_bytes(b"retry: 1000\n\n")
        self.streams.add(transport)
        try:
            await proto.client_disconnect()
        finally:
            self.streams.discard(transport)


app = FloorApp()
