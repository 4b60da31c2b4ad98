"""The Redis source on a real redis-server: a half-open subscription is rebuilt, a pause kept."""

from __future__ import annotations

import asyncio

from connectome_sse.localrun.redis_server import RedisServer
from connectome_sse.localrun.wait import until
from sse_gateway.redis_source import RedisSource
from tests.support.freezing_proxy import FreezingProxy
from tests.support.subscribers import Listener


async def test_a_half_open_subscription_is_drained_and_rebuilt(redis_server: RedisServer) -> None:
    # The proxy stops forwarding on the subscription's connection without closing it: a
    # half-open socket, which never raises by itself, while Redis answers new connections.
    async with FreezingProxy(redis_server.port) as proxy:
        source = RedisSource(proxy.url, ping_after=0.3, ping_timeout=0.5, command_timeout=1)
        listener = Listener()
        task = asyncio.create_task(source.run(listener))
        try:
            await until(lambda: listener.log == ["connected"], what="first subscription")
            proxy.freeze()
            await until(lambda: "disconnected" in listener.log, timeout=10, what="silence check")
            await until(lambda: listener.log[-1] == "connected", timeout=15, what="resubscribed")
            redis_server.client().publish("sse:after", "freeze")
            await until(lambda: ("sse:after", b"freeze") in listener.messages, what="live again")
            assert await source.read_snapshots() == {}
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await source.aclose()


async def test_a_paused_redis_keeps_its_subscription(redis_server: RedisServer) -> None:
    # CLIENT PAUSE holds every command, other connections' included: Redis answers
    # nobody, so a new connection would not help. The subscription is kept (reported
    # down meanwhile) and what was published during the pause arrives on it.
    source = RedisSource(redis_server.url, ping_after=0.3, ping_timeout=0.3, command_timeout=0.5)
    listener = Listener()
    task = asyncio.create_task(source.run(listener))
    try:
        await until(lambda: listener.log == ["connected"], what="first subscription")
        with redis_server.client() as admin:
            admin.client_pause(3000, all=True)
        await until(lambda: "disconnected" in listener.log, timeout=10, what="reported down")
        with redis_server.client() as publisher:  # waits out the pause
            publisher.publish("sse:during", "pause")
        await until(lambda: ("sse:during", b"pause") in listener.messages, what="delivered")
        await until(lambda: listener.log[-1] == "resumed", what="reported up again")
        assert listener.log == ["connected", "disconnected", "resumed"]
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


async def test_a_user_made_before_the_event_log_still_reads_snapshots(
    redis_server: RedisServer,
) -> None:
    # No MULTI, EXEC or HMGET: the snapshots come with content ids instead of failing.
    with redis_server.client() as admin:
        admin.set("sse:last:a", "1")
        admin.hset("sse:log:last", "a", "5-0")
        admin.execute_command(
            "ACL", "SETUSER", "old", "on", ">pw", "resetkeys", "resetchannels", "-@all",
            "+scan", "+mget", "+get", "+client|setname", "%R~sse:last:*",
        )  # fmt: skip
    host, port = "127.0.0.1", redis_server.port
    old = RedisSource(f"redis://old:pw@{host}:{port}/0")
    current = RedisSource(redis_server.url)
    try:
        assert await old.read_snapshots() == {"a": (b"1", None)}
        assert await current.read_snapshots() == {"a": (b"1", "5-0")}
    finally:
        await old.aclose()
        await current.aclose()
