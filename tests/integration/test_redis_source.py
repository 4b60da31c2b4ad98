"""The Redis source against a real redis-server: a connection that goes silent is rebuilt."""

from __future__ import annotations

import asyncio

from sse_gateway.redis_source import RedisSource
from tests.support.redis_server import RedisServer
from tests.support.sse_clients import until


class Listener:
    def __init__(self) -> None:
        self.log: list[str] = []
        self.messages: list[tuple[str, bytes]] = []

    def on_message(self, channel: str, data: bytes) -> None:
        self.messages.append((channel, data))

    def on_connected(self) -> None:
        self.log.append("connected")

    def on_disconnected(self) -> None:
        self.log.append("disconnected")


async def test_a_subscription_that_stops_answering_is_rebuilt(redis_server: RedisServer) -> None:
    # CLIENT PAUSE makes Redis hold every command, PINGs included: to the gateway this
    # looks like a half-open connection, which never raises by itself.
    source = RedisSource(redis_server.url, probe_interval=0.3, probe_timeout=0.5, command_timeout=1)
    listener = Listener()
    task = asyncio.create_task(source.run(listener))
    try:
        await until(lambda: listener.log == ["connected"], what="first subscription")
        redis = redis_server.client()
        redis.client_pause(2500, all=True)
        await until(lambda: "disconnected" in listener.log, timeout=10, what="watchdog")
        await until(lambda: listener.log[-1] == "connected", timeout=15, what="resubscribed")
        redis.publish("sse:after", "pause")
        await until(lambda: (("sse:after", b"pause")) in listener.messages, what="live again")
        snapshots = await source.read_snapshots()
        assert snapshots == {}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await source.aclose()


async def test_regression_cancel_landing_during_connect_is_not_swallowed(
    redis_server: RedisServer,
) -> None:
    # redis-py swallowed a cancellation that arrived while it connected: the source
    # ran on and a gateway whose startup failed (port in use) never exited.
    for attempt in range(24):
        source = RedisSource(redis_server.url)
        task = asyncio.create_task(source.run(Listener()))
        await asyncio.sleep(0.0005 * (attempt % 8))
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=5)
        await source.aclose()
        assert done, f"cancellation swallowed (attempt {attempt})"
