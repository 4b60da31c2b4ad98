"""What our Redis clients send when they connect, recorded on the wire to a real redis-server.

redis-py 8 asks every new connection for maintenance notifications
(``CLIENT MAINT_NOTIFICATIONS``), which an open-source Redis refuses: one wasted
round trip and one debug line per connection. Our clients turn it off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import pytest

from connectome_core.redis_connect import async_client, sync_client
from connectome_core.redis_target import parse_redis_url
from connectome_sse.localrun.redis_server import RedisServer

pytestmark = pytest.mark.integration


class RecordingProxy:
    """Forwards loopback TCP to Redis and keeps every byte the clients sent."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.sent = bytearray()
        self.port = 0

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, record: bool
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if record:
                    self.sent += data
                writer.write(data)
                await writer.drain()
        writer.close()

    async def accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        await asyncio.gather(
            self._pipe(reader, up_writer, record=True), self._pipe(up_reader, writer, record=False)
        )


@pytest.fixture
async def proxy(redis_server: RedisServer) -> AsyncIterator[RecordingProxy]:
    recorder = RecordingProxy(redis_server.port)
    server = await asyncio.start_server(recorder.accept, "127.0.0.1", 0)
    recorder.port = server.sockets[0].getsockname()[1]
    async with server:
        yield recorder
        server.close()


async def test_our_clients_never_ask_for_maintenance_notifications(
    proxy: RecordingProxy, caplog: pytest.LogCaptureFixture
) -> None:
    target = parse_redis_url(f"redis://127.0.0.1:{proxy.port}/0")
    caplog.set_level(logging.DEBUG, logger="redis")
    client = async_client(target)
    try:
        assert await client.ping()
    finally:
        await client.aclose()

    def sync_round_trip() -> None:
        sync = sync_client(target)
        try:
            assert sync.echo("sync") == b"sync"
        finally:
            sync.close()

    await asyncio.to_thread(sync_round_trip)
    sent = bytes(proxy.sent)
    assert b"PING" in sent and b"ECHO" in sent  # the recorder saw both connections
    assert b"MAINT_NOTIFICATIONS" not in sent
    assert not [r for r in caplog.records if "maintenance" in r.getMessage()]


async def test_a_plain_redis_py_client_does_ask_so_the_recorder_can_see_it(
    proxy: RecordingProxy,
) -> None:
    """The control: redis-py's default connection does send it, through the same recorder."""
    import redis.asyncio as aioredis

    client = aioredis.Redis(port=proxy.port, socket_timeout=5)
    try:
        await client.ping()
    finally:
        await client.aclose()
    assert b"MAINT_NOTIFICATIONS" in bytes(proxy.sent)
