"""Redis killed, restarted or paused under open streams: streams survive, then catch up."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import pytest

from connectome_sse.localrun.ports import free_port
from connectome_sse.localrun.redis_server import RedisServer
from connectome_sse.localrun.sse_clients import open_streams
from connectome_sse.localrun.wait import until, wait_for
from tests.conftest import StartGateway
from tests.integration.test_redis_reader_faults import publish_blocked


async def test_streams_survive_a_redis_restart_and_get_snapshot_and_new_events(
    tmp_path: Path, start_gateway: StartGateway
) -> None:
    # Append-only with fsync on every write: the snapshot survives the kill -9,
    # as it would on a production Redis with persistence.
    redis_server = RedisServer(
        tmp_path / "redis", extra_args=("--appendonly", "yes", "--appendfsync", "always")
    ).start()
    try:
        gateway = start_gateway(redis_server.url, env={"SSE_PING_INTERVAL": "0.2"}).wait_ready()
        redis_server.client().set("sse:last:h", "snapshot-1")
        async with open_streams(gateway.url + "/api/sse", 5) as clients:
            await until(lambda: all(c.of("h") == ["snapshot-1"] for c in clients), what="snapshot")

            redis_server.kill()
            await until(lambda: gateway.status("/readyz") == 503, what="readyz 503")
            down_pings = lambda: all(  # noqa: E731
                any(json.loads(p)["redis"] == "down" for p in c.of("ping")) for c in clients
            )
            await until(down_pings, what="pings saying redis is down")
            pings_during_outage = [len(c.of("ping")) for c in clients]
            pinging = list(zip(clients, pings_during_outage, strict=True))
            await until(
                lambda: all(len(c.of("ping")) >= n + 3 for c, n in pinging),
                what="pings continuing during the outage",
            )
            assert not any(c.ended for c in clients)

            redis_server.start()
            await until(lambda: gateway.status("/readyz") == 200, timeout=20, what="readyz 200")
            # The snapshot is re-sent after resubscribing, then live events flow again.
            resent = ["snapshot-1"] * 2
            await until(lambda: all(c.of("h") == resent for c in clients), what="resend")
            redis_server.client().publish("sse:h", "live-after-restart")
            await until(
                lambda: all(c.of("h")[-1:] == ["live-after-restart"] for c in clients), what="live"
            )
            assert not any(c.ended for c in clients)
        assert gateway.metric("sse_redis_reconnects_total") >= 1
    finally:
        redis_server.stop()


@pytest.mark.parametrize("pause_ms", [10_000, 15_000])
async def test_regression_client_pause_loses_nothing_with_the_default_silence_check(
    own_redis: RedisServer, start_gateway: StartGateway, pause_ms: int
) -> None:
    # At full scale: the silence check (5 s silence + 5 s for its PING) once
    # dropped the connection into which Redis had just delivered what it held; with a
    # 10 s pause 100 of 100 were lost, with 15 s half. Redis that recovers costs nothing.
    gateway = start_gateway(own_redis.url).wait_ready()
    async with open_streams(gateway.url + "/api/sse?events=seq", 3) as clients:
        await until(lambda: gateway.metric("sse_open_streams") == 3, what="subscribed")
        with own_redis.client() as admin:
            admin.client_pause(pause_ms, all=True)
        publisher = await asyncio.to_thread(publish_blocked, own_redis, 100)
        await until(
            lambda: all(len(c.of("seq")) == 100 for c in clients), timeout=40, what="all 100"
        )
        await asyncio.to_thread(publisher.join, 30)
        for client in clients:
            assert client.of("seq") == [str(n) for n in range(100)]
        await until(lambda: gateway.status("/readyz") == 200, what="ready again")
        assert gateway.metric("sse_redis_reconnects_total") == 0
        assert not any(c.ended for c in clients)


class Feed:
    """In a thread: PUBLISH ``sse:seq`` 0, 1, 2… at ``rate`` per second for ``seconds``,
    while ``CLIENT KILL TYPE pubsub`` cuts every subscription each ``kill_every`` seconds."""

    def __init__(self, server: RedisServer, rate: int, seconds: float, kill_every: float) -> None:
        self.server = server
        self.count = int(rate * seconds)
        self.rate = rate
        self.kill_every = kill_every
        self.kills = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.server.client() as publisher, self.server.client() as killer:
            start = time.monotonic()
            next_kill = start + self.kill_every
            for n in range(self.count):
                due = start + n / self.rate  # paced: a load generator, not a wait
                while (now := time.monotonic()) < due:
                    time.sleep(min(due - now, 0.002))
                if now >= next_kill:
                    self.kills += int(killer.execute_command("CLIENT", "KILL", "TYPE", "pubsub"))
                    next_kill += self.kill_every
                publisher.publish("sse:seq", str(n))


async def test_regression_repeated_subscription_cuts_do_not_make_the_gateway_deaf(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    # A healthy Redis that cuts the subscription (CLIENT KILL, an output-buffer limit)
    # is resubscribed to at once: only what is published in that instant is lost.
    gateway = start_gateway(redis_server.url).wait_ready()
    async with open_streams(gateway.url + "/api/sse?events=seq,done", 3) as clients:
        await until(lambda: gateway.metric("sse_open_streams") == 3, what="subscribed")
        feed = Feed(redis_server, rate=100, seconds=3, kill_every=0.5)
        feed.thread.start()
        await asyncio.to_thread(feed.thread.join, 60)
        assert feed.kills >= 5
        await until(lambda: gateway.status("/readyz") == 200, what="subscribed again")
        with redis_server.client() as redis:
            redis.publish("sse:done", "1")
        await until(lambda: all(c.of("done") for c in clients), what="the last event")
        received = [len(c.of("seq")) for c in clients]
    assert all(n >= 0.9 * feed.count for n in received), (received, feed.count)


def test_regression_a_gateway_started_before_redis_says_it_cannot_reach_it_yet(
    tmp_path: Path, start_gateway: StartGateway
) -> None:
    # Nothing listens on the port yet: the gateway has never been connected, so it has
    # lost nothing. It says so, then subscribes once a redis-server comes up there.
    port = free_port()
    gateway = start_gateway(f"redis://127.0.0.1:{port}/0")
    wait_for(lambda: "cannot reach Redis yet" in gateway.log(), what="the first line")
    assert gateway.status("/readyz") == 503
    redis_server = RedisServer(tmp_path / "redis", port=port).start()
    try:
        gateway.wait_ready()
        log = gateway.log()
        assert "redis connected: subscribed" in log
        assert "redis lost" not in log and "reconnected" not in log
        line = next(line for line in log.splitlines() if "cannot reach Redis yet" in line)
        assert f"127.0.0.1:{port}" in line and "Connection refused" in line
    finally:
        redis_server.stop()
