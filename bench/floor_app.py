"""BASELINE ONLY, NOT PART OF THE PRODUCT: the least a Python asyncio server pays per stream.

A bare uvloop protocol: it answers any ``GET /api/sse`` with a fixed event-stream head
(no parsing beyond the request line, no checks, no limits, no snapshots, no metrics) and
relays one Redis channel to every open stream. Nothing a production server needs is
here; it exists so the bench can show how much of the gateway's CPU per opened stream
is the gateway's own code and how much any Python server on uvloop pays (accept,
protocol object, one read, one write, close), beside Nchan's C.

    REDIS_URL=redis://127.0.0.1:6379/0 python -m bench.floor_app --port 8000 --workers 2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from typing import cast

import redis.asyncio as aioredis
import uvloop

CHANNEL = "sse:connectome_health"
EVENT = CHANNEL.removeprefix("sse:").encode()
HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"connection: close\r\n\r\nretry: 1000\n\n"
)
HEALTHZ = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
MAX_HEAD = 8192
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class FloorConnection(asyncio.Protocol):
    """One connection: the request head read, then a stream or a one-off answer."""

    __slots__ = ("buf", "streams", "transport")

    def __init__(self, streams: set[asyncio.Transport]) -> None:
        self.streams = streams
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's: no subclass

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport in self.streams:
            return  # bytes after the request: ignored
        self.buf += data
        if b"\r\n\r\n" not in self.buf:
            if len(self.buf) > MAX_HEAD:
                transport.close()
            return
        line = self.buf.split(b"\r\n", 1)[0]
        self.buf = b""
        if line.startswith(b"GET /api/sse"):
            transport.write(HEAD)
            self.streams.add(transport)
        else:
            transport.write(HEALTHZ if line.startswith(b"GET /healthz") else NOT_FOUND)
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.streams.discard(self.transport)
            self.transport = None


async def channel_frames(redis_url: str) -> AsyncIterator[bytes]:
    """Every message on the channel, framed once (also ``bench.granian_floor``'s)."""
    client = aioredis.from_url(redis_url)
    pubsub = client.pubsub()
    await pubsub.subscribe(CHANNEL)
    async for message in pubsub.listen():
        if message["type"] == "message":
            yield b"event: %s\ndata: %s\n\n" % (EVENT, message["data"])


async def relay(redis_url: str, streams: set[asyncio.Transport]) -> None:
    """Every frame written to every open stream."""
    async for frame in channel_frames(redis_url):
        for transport in streams:
            transport.write(frame)


async def serve(sock: socket.socket, redis_url: str) -> None:
    loop = asyncio.get_running_loop()
    streams: set[asyncio.Transport] = set()
    server = await loop.create_server(lambda: FloorConnection(streams), sock=sock, backlog=4096)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    relaying = asyncio.create_task(relay(redis_url, streams))
    await stop.wait()
    relaying.cancel()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    redis_url = os.environ.get("REDIS_URL", DEFAULT_REDIS_URL)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(4096)
    sock.setblocking(False)
    children = []
    for _ in range(args.workers):
        pid = os.fork()
        if pid == 0:
            uvloop.run(serve(sock, redis_url))
            os._exit(0)
        children.append(pid)
    # The parent only waits: a SIGTERM to it is passed on, its children end with it.

    def pass_on(*_: object) -> None:
        for child in children:
            os.kill(child, signal.SIGTERM)

    signal.signal(signal.SIGTERM, pass_on)
    for pid in children:
        while True:
            try:
                os.waitpid(pid, 0)
                break
            except ChildProcessError:
                break
            except InterruptedError:
                continue
    sys.exit(0)


if __name__ == "__main__":
    main()
