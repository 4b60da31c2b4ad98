"""Ids and resume across real gateways, reserved names, the health freshness, strict JSON.

Real ``redis-server``, real gateway processes, real HTTP clients; one of the
publishes goes through the real ``redis-cli``, as an operator would do it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from unittest.mock import ANY

import httpx
import jwt
import redis

from connectome_sse.localrun.redis_server import RedisServer, require_program
from connectome_sse.localrun.sse_clients import StreamRecorder
from connectome_sse.localrun.wait import until
from sse_gateway.history import event_id
from tests.conftest import StartGateway


@contextlib.asynccontextmanager
async def reading(
    url: str, last_id: str | None = None, headers: dict[str, str] | None = None
) -> AsyncIterator[StreamRecorder]:
    """One stream, with ``Last-Event-ID`` when ``last_id`` is given, recording every event."""
    headers = {**(headers or {}), "Last-Event-ID": last_id} if last_id else dict(headers or {})
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None)) as client:
        reader = StreamRecorder(client, url, headers)
        task = asyncio.create_task(reader.run())
        try:
            await until(lambda: reader.status is not None or task.done(), what="response")
            assert reader.status == 200
            yield reader
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def cli_publish(redis_server: RedisServer, channel: str, data: str) -> None:
    cli = require_program("redis-cli")
    port = str(redis_server.port)
    subprocess.run([cli, "-p", port, "publish", channel, data], check=True, capture_output=True)


async def test_resume_on_another_replica_gets_exactly_the_missed_events_then_live(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    a = start_gateway(redis_server.url)
    b = start_gateway(redis_server.url)
    a.wait_ready()
    b.wait_ready()
    redis = redis_server.client()
    async with reading(a.url + "/api/sse?events=seq") as first:
        await until(lambda: a.metric("sse_open_streams") == 1, what="subscribed on A")
        for n in range(5):
            redis.publish("sse:seq", f"event {n}")
        await until(lambda: len(first.real()) == 5, what="5 events on A")
    last_id = first.real()[-1].id
    assert last_id and len({e.id for e in first.real()}) == 5
    redis.publish("sse:seq", "event 5")
    cli_publish(redis_server, "sse:seq", "event 6")  # raw redis-cli: it gets an id too
    redis.publish("sse:seq", "event 7")
    await until(lambda: b.metric("sse_events_relayed_total") >= 8, what="B relayed all 8")
    async with reading(b.url + "/api/sse?events=seq", last_id) as resumed:
        await until(lambda: len(resumed.real()) == 3, what="the 3 missed events")
        redis.publish("sse:seq", "event 8")
        await until(lambda: len(resumed.real()) == 4, what="then live")
        await asyncio.sleep(0.3)  # a duplicate would arrive right behind: give it the chance
        assert [e.data for e in resumed.real()] == [f"event {n}" for n in range(5, 9)]
        assert all(e.id for e in resumed.real())
    # An id B never relayed: resync, then the snapshots, then live.
    redis.set("sse:last:seq", "snapshot")
    async with reading(b.url + "/api/sse?events=seq", "feedfacefeedface") as unknown:
        await until(lambda: len(unknown.real()) == 2, what="resync + snapshot")
        assert [(e.event, e.data) for e in unknown.real()] == [
            ("resync", '{"reason": "unknown_id"}'),
            ("seq", "snapshot"),
        ]


async def test_regression_a_raw_publish_on_a_reserved_name_reaches_no_client(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(redis_server.url).wait_ready()
    redis = redis_server.client()
    async with reading(gateway.url + "/api/sse") as client:
        await until(lambda: gateway.metric("sse_open_streams") == 1, what="subscribed")
        for name in ("ping", "resync", "health_stale", "probe"):
            cli_publish(redis_server, "sse:" + name, '{"forged": true}')
        redis.publish("sse:marker", "after")
        await until(lambda: client.of("marker") == ["after"], what="the marker")
        assert all("forged" not in e.data for e in client.events)
        assert gateway.metric('sse_events_dropped_total{reason="reserved"}') == 4


async def test_a_silent_publisher_is_announced_to_every_stream_and_a_health_ends_it(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(
        redis_server.url, env={"SSE_HEALTH_STALE_AFTER": "2", "SSE_PING_INTERVAL": "0.3"}
    ).wait_ready()
    redis = redis_server.client()
    redis.set("sse:last:connectome_health", '{"ts": 1.0}')
    url = gateway.url + "/api/sse"
    async with reading(url) as one, reading(url + "?events=other") as two:
        await until(lambda: gateway.metric("sse_open_streams") == 2, what="subscribed")
        redis.publish("sse:connectome_health", '{"ts": 2.0}')
        await until(lambda: one.of("connectome_health")[-1:] == ['{"ts": 2.0}'], what="health")
        # Pings sent before the gateway relayed its first health carry a null age.
        before = len(one.of("ping"))
        # The publisher goes quiet: within SSE_HEALTH_STALE_AFTER + 1 s, every stream knows.
        await until(lambda: one.of("health_stale") and two.of("health_stale"), timeout=3.0)
        assert json.loads(one.of("health_stale")[0])["last_ts"] == 2.0
        await until(lambda: len(one.of("ping")) >= before + 8, what="pings")
        ages = [json.loads(p)["health_age"] for p in one.of("ping")[before:]]
        assert ages[-1] > ages[0] >= 0 and ages[-1] >= 2.0
        # The gauge is set at each ping, unrounded: it passes 2.0 at the next one.
        await until(lambda: gateway.metric("sse_health_age_seconds") >= 2.0, what="age gauge")
        async with reading(url) as late:
            await until(lambda: late.of("health_stale"), what="stale after the snapshot")
            assert [e.event for e in late.real()][:2] == ["connectome_health", "health_stale"]
        redis.publish("sse:connectome_health", '{"ts": 3.0}')
        await until(lambda: one.of("connectome_health")[-1:] == ['{"ts": 3.0}'], what="health")
        pings = len(one.of("ping"))
        await until(lambda: len(one.of("ping")) >= pings + 2, what="pings after the health")
        assert json.loads(one.of("ping")[-1])["health_age"] < 2.0
        assert len(one.of("health_stale")) == 1  # one per stale spell, none to end it


def connected_to(port: int) -> int:
    """Established IPv4 TCP connections whose remote end is 127.0.0.1:``port``."""
    wanted = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as table:
        rows = [line.split() for line in table.readlines()[1:]]
    return sum(1 for row in rows if row[2] == wanted and row[3] == "01")


def publish_with_snapshot(client: redis.Redis, event: str, data: str) -> None:
    """SET the snapshot and PUBLISH, as a publisher does (one pipeline, one round trip)."""
    pipe = client.pipeline(transaction=True)
    pipe.set(f"sse:last:{event}", data)
    pipe.publish(f"sse:{event}", data)
    pipe.execute()


async def test_a_replica_behind_redis_resumes_and_opens_streams_in_order(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    """The chaos "gateway-kill" case: the replica clients move to is busy and behind Redis.

    B is frozen (SIGSTOP) while thousands of messages and then seq 5..7 are published, and
    two clients connect to it meanwhile: one resuming after seq 6 (an id it got from A),
    one new. B wakes with both requests and the backlog at once. The resuming one gets 7,
    not resync; the new one gets the snapshot 7 and nothing older after it.
    """
    a = start_gateway(redis_server.url)
    b = start_gateway(redis_server.url)
    a.wait_ready()
    b.wait_ready()
    redis = redis_server.client()
    async with reading(a.url + "/api/sse?events=seq") as on_a:
        await until(lambda: a.metric("sse_open_streams") == 1, what="subscribed on A")
        b.kill_group(signal.SIGSTOP)
        try:
            pipe = redis.pipeline(transaction=False)
            # More than the socket buffers hold (Redis keeps the rest, under the 8 MB soft
            # limit for subscribers): B reads it in turns, and serves the requests between.
            for n in range(3000):
                pipe.publish("sse:filler", f"filler {n} " + "x" * 2000)
            pipe.execute()
            for n in range(5, 8):
                publish_with_snapshot(redis, "seq", f"event {n}")
            await until(lambda: len(on_a.real()) == 3, what="5..7 on A")
            last_id = on_a.real()[1].id  # event 6
            resuming = reading(b.url + "/api/sse?events=seq", last_id)
            fresh = reading(b.url + "/api/sse?events=seq")
            opened = asyncio.gather(resuming.__aenter__(), fresh.__aenter__())
            # Both connections made: they wait in B's listen backlog (the kernel answers).
            await until(lambda: connected_to(b.port) >= 2, what="2 connections to B")
        finally:
            b.kill_group(signal.SIGCONT)
        resumed, new = await opened
        try:
            await until(lambda: len(resumed.real()) >= 1 and len(new.real()) >= 1, what="B")
            redis.publish("sse:seq", "event 8")
            await until(lambda: "event 8" in resumed.of("seq") + new.of("seq"), what="8")
            await until(lambda: "event 8" in resumed.of("seq") and "event 8" in new.of("seq"))
            assert [(e.event, e.data) for e in resumed.real()] == [
                ("seq", "event 7"),
                ("seq", "event 8"),
            ]
            assert [(e.event, e.data) for e in new.real()] == [
                ("seq", "event 7"),
                ("seq", "event 8"),
            ]
        finally:
            await resuming.__aexit__(None, None, None)
            await fresh.__aexit__(None, None, None)


def strict_json(text: str) -> object:
    """``json.loads`` that refuses NaN and Infinity, as a browser's ``JSON.parse`` does."""

    def refuse(constant: str) -> object:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


SECRET = "resume-test-secret-0123456789abcdef"


def bearer(**claims: object) -> dict[str, str]:
    token = jwt.encode({"exp": time.time() + 120, **claims}, SECRET, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


async def test_regression_a_resume_never_reveals_an_event_outside_the_token_s_events(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(redis_server.url, env={"SSE_AUTH_SECRET": SECRET}).wait_ready()
    redis = redis_server.client()
    redis.set("sse:last:public", "public snapshot")
    redis.publish("sse:public", "p0")
    redis.publish("sse:secret_ops", "launch codes")
    redis.publish("sse:public", "p1")
    await until(lambda: gateway.metric("sse_events_relayed_total") >= 3, what="3 relayed")
    url = gateway.url + "/api/sse"
    public_only = bearer(events=["public"])

    async def answer(last_id: str, headers: dict[str, str]) -> list[tuple[str, str]]:
        async with reading(url, last_id, headers) as stream:
            await until(lambda: stream.of("public"), what="the opening")
            redis.publish("sse:public", "marker")
            await until(lambda: "marker" in stream.of("public"), what="a live event")
            return [(e.event, e.data) for e in stream.real()]

    # The right guess of a secret payload is answered as a wrong guess is.
    right = await answer(event_id("secret_ops", b"launch codes"), public_only)
    wrong = await answer(event_id("secret_ops", b"a wrong guess"), public_only)
    assert (
        right
        == wrong
        == [
            ("resync", '{"reason": "unknown_id"}'),
            ("public", "public snapshot"),
            ("public", "marker"),
        ]
    )
    # The gateway does know the id: a token allowed everything resumes from it.
    allowed = await answer(event_id("secret_ops", b"launch codes"), bearer())
    assert allowed[0] == ("public", "p1")


async def test_regression_a_type_evicted_whole_forces_a_resync_not_a_silent_gap(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    env = {"SSE_CLIENT_BUFFER_BYTES": str(64 << 20), "SSE_CLIENT_BUFFER": "1000"}
    gateway = start_gateway(redis_server.url, env=env).wait_ready()
    redis = redis_server.client()
    redis.publish("sse:connectome_health", '{"ts": 1}')
    redis.publish("sse:x", "x" * 1_000_000)
    redis.publish("sse:connectome_health", '{"ts": 2}')
    for n in range(33):  # 33 MB more: the history's 32 MiB cap pushes x out
        redis.publish("sse:z", f"{n:02d}" + "z" * 1_000_000)
    await until(lambda: gateway.metric("sse_events_relayed_total") >= 36, what="all relayed")
    async with reading(gateway.url + "/api/sse", event_id("connectome_health", b'{"ts": 1}')) as s:
        redis.publish("sse:marker", "live")
        await until(lambda: s.of("marker"), timeout=30, what="a live event")
        received = [e.event for e in s.real()]
    # Either everything after the id, x included, or a resync: never the rest without x.
    assert received[0] == "resync" or "x" in received, received[:5]


async def test_regression_a_health_with_an_unusable_ts_has_one_fate_and_strict_json(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    env = {"SSE_HEALTH_STALE_AFTER": "1", "SSE_PING_INTERVAL": "0.2"}
    gateway = start_gateway(redis_server.url, env=env).wait_ready()
    redis = redis_server.client()
    first = '{"ts": 1.5}'
    url = gateway.url + "/api/sse"
    async with reading(url) as live:
        await until(lambda: gateway.metric("sse_open_streams") == 1, what="subscribed")
        redis.publish("sse:connectome_health", first)
        await until(lambda: live.of("connectome_health") == [first], what="the first health")
        huge = '{"ts": 1' + "0" * 400 + "}"
        for n, payload in enumerate((huge, '{"ts": NaN}')):
            before = live.real()[-1].id
            redis.publish("sse:connectome_health", payload)
            redis.publish("sse:marker", f"after {n}")  # once it is here, so is the health
            await until(lambda n=n: f"after {n}" in live.of("marker"), what="the marker")
            async with reading(url, before) as resumed:
                await until(lambda n=n: f"after {n}" in resumed.of("marker"), what="the replay")
                replayed = resumed.of("connectome_health")
            # One fate: the live client and the resuming one both got it.
            assert live.of("connectome_health")[-1:] == [payload]
            assert replayed == [payload]
        await until(lambda: live.of("health_stale"), timeout=5, what="health_stale")
    assert strict_json(live.of("health_stale")[0]) == {"age": ANY, "last_ts": None}
    made = [e.data for e in live.events if e.event in ("ping", "resync", "health_stale")]
    for data in made:
        strict_json(data)
