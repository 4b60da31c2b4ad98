"""The embedded Redis of `up` (fakeredis' TCP server) does what the stack needs of a Redis.

STYLE.md warns that fakeredis' TCP server was reported to deliver no pub/sub
messages: these tests prove, over real TCP sockets, that it does in the version
we ship, and that the blocking XREADGROUP the publisher relies on blocks.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from connectome_sse.publishing import publish_event
from connectome_sse.stack.embedded_redis import EmbeddedRedis
from tests.support.redis_server import RedisServer


@pytest.fixture
def embedded() -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis()
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def client(embedded: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(embedded.url, socket_timeout=10)
    yield redis
    await redis.aclose()


async def next_message(pubsub: aioredis.client.PubSub, deadline_s: float = 10.0) -> Any:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
        if message is not None:
            return message
    raise AssertionError("no pub/sub message arrived")


async def test_pattern_subscriber_gets_publish_event_and_snapshot(
    embedded: EmbeddedRedis, client: aioredis.Redis
) -> None:
    listener = aioredis.Redis.from_url(embedded.url)
    pubsub = listener.pubsub()
    await pubsub.psubscribe("sse:*")
    try:
        receivers = await publish_event(client, "connectome_health", '{"a":1}')
        message = await next_message(pubsub)
        assert receivers == 1
        assert message["channel"] == b"sse:connectome_health"
        assert message["data"] == b'{"a":1}'
        assert await client.get("sse:last:connectome_health") == b'{"a":1}'
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await listener.aclose()


async def test_redis_cli_publish_reaches_a_subscriber(
    embedded: EmbeddedRedis, client: aioredis.Redis
) -> None:
    redis_cli = shutil.which("redis-cli")
    assert redis_cli, "redis-cli is not installed: run scripts/test, which installs it"
    pubsub = client.pubsub()
    await pubsub.psubscribe("sse:*")
    try:
        out = await asyncio.to_thread(
            subprocess.run,
            [redis_cli, "-p", str(embedded.port), "publish", "sse:x", "hi"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.stdout.strip() == "1", out
        assert (await next_message(pubsub))["data"] == b"hi"
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]


async def test_xreadgroup_with_count_blocks_until_an_entry_arrives(
    client: aioredis.Redis, embedded: EmbeddedRedis
) -> None:
    """Regression: fakeredis answered XREADGROUP COUNT n BLOCK ms at once, a busy loop."""
    await client.xgroup_create("connectome:signals", "health-publisher", id="$", mkstream=True)
    started = time.monotonic()
    empty = await client.xreadgroup(
        "health-publisher", "c1", {"connectome:signals": ">"}, count=10, block=300
    )
    assert empty in ([], None, {})
    assert time.monotonic() - started >= 0.25  # it waited (noise can only make this longer)

    writer = aioredis.Redis.from_url(embedded.url)
    try:

        async def blocking_read() -> Any:
            return await client.xreadgroup(
                "health-publisher", "c1", {"connectome:signals": ">"}, count=10, block=10_000
            )

        read = asyncio.create_task(blocking_read())
        await asyncio.sleep(0.1)
        await writer.xadd("connectome:signals", {"kind": "tick", "tick": "1"})
        result = await asyncio.wait_for(read, timeout=10)
        assert result[0][1][0][1] == {b"kind": b"tick", b"tick": b"1"}
    finally:
        await writer.aclose()


async def test_lease_and_lua(client: aioredis.Redis) -> None:
    assert await client.set("connectome:publisher:leader", "a", nx=True, px=3000)
    assert not await client.set("connectome:publisher:leader", "b", nx=True, px=3000)
    script = (
        "if redis.call('get', KEYS[1]) == ARGV[1] then "
        "return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
    )
    assert await client.eval(script, 1, "connectome:publisher:leader", "a", 3000) == 1


def test_stop_releases_the_port() -> None:
    server = EmbeddedRedis()
    server.start()
    port = server.port
    server.stop()
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))


def resp(*args: str) -> bytes:
    parts = [b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in args]
    return b"*%d\r\n" % len(args) + b"".join(parts)


def exchange(port: int, commands: list[tuple[str, ...]]) -> list[bytes]:
    """Each command's reply, on ONE connection (a closed connection fails the recv)."""
    replies = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for command in commands:
            sock.sendall(resp(*command))
            reply = sock.recv(4096)
            assert reply, f"connection closed after {command}"
            replies.append(reply)
    return replies


def test_error_replies_keep_the_connection_and_match_redis_server(
    embedded: EmbeddedRedis, redis_server: RedisServer
) -> None:
    """Regression: fakeredis closed the connection after any error reply (BUSYGROUP...),
    so a publisher creating its consumer group on connect reconnected for ever."""
    commands = [
        ("XGROUP", "CREATE", "s", "g", "$", "MKSTREAM"),
        ("XGROUP", "CREATE", "s", "g", "$", "MKSTREAM"),
        ("PING",),
        ("EVALSHA", "0" * 40, "0"),
        ("SET", "k", "v"),
        ("INCR", "k"),
        ("PING",),
    ]
    embedded_replies = exchange(embedded.port, commands)
    assert embedded_replies == exchange(redis_server.port, commands)
    assert embedded_replies[1].startswith(b"-BUSYGROUP")
