"""A Sentinel failover under real load (issue 10): nobody notices but the figures.

One master, one replica and three sentinels (``connectome_sse.localrun.redis_sentinel``),
two ``health-publisher`` and two ``sse-gateway`` processes on the
``redis+sentinel://`` URL, 100 streaming clients (50 per gateway). Then
``kill -9`` of the master:

- every client stays connected and gets a ``connectome_health`` event from the
  new master within down-after-milliseconds + failover timeout + 5 s;
- a ``connectome-sse publish`` after the failover reaches every client exactly once;
- one publisher leads;
- the old master comes back as a replica and the clients notice nothing (no stream
  ends, no event is repeated).

Printed (``pytest -s``): kill to first ``connectome_health`` after the kill, per
client, p50 and max; and for a ``seq`` stream published at 20/s through the
failover by a Sentinel client, the events whose PUBLISH succeeded but that a
client never got (lost) or got twice (duplicated). Pub/sub keeps nothing for a
subscriber that is not there yet, so "lost" is the window between the new master
taking writes and both gateways subscribing to it.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from redis.exceptions import RedisError

from connectome_core.redis_connect import async_client
from connectome_core.redis_target import parse_redis_url
from connectome_sse.localrun.gateway import GatewayProcess, gateway_subscriptions
from connectome_sse.localrun.metrics import publisher_leaders
from connectome_sse.localrun.ports import free_port
from connectome_sse.localrun.processes import ManagedProcess, console_script
from connectome_sse.localrun.redis_sentinel import (
    DOWN_AFTER_MS,
    FAILOVER_TIMEOUT_MS,
    SentinelCluster,
)
from connectome_sse.localrun.seq_publisher import ChannelOnly, SeqPublisher
from connectome_sse.localrun.sse_clients import StreamRecorder, open_each
from connectome_sse.localrun.wait import until

pytestmark = pytest.mark.e2e

CLIENTS = 100
DEADLINE_S = DOWN_AFTER_MS / 1000 + FAILOVER_TIMEOUT_MS / 1000 + 5
SEQ_RATE = 20.0  # seq events per second through the failover
# Anything received this long after the kill left the dead master's sockets before it
# died or comes from the new master: a killed process sends nothing more.
IN_FLIGHT_S = 0.05


async def test_kill_9_of_the_master_under_100_streams(
    cluster: SentinelCluster, tmp_path: Path
) -> None:
    url = cluster.url
    # The seq events' own client: through the sentinels, short timeouts while no master answers.
    seq_client = async_client(parse_redis_url(url), socket_timeout=0.5, socket_connect_timeout=0.5)
    metrics_ports = [free_port(), free_port()]
    publishers = [
        ManagedProcess(
            console_script("health-publisher"),
            tmp_path / f"publisher-{i}.log",
            env={
                "REDIS_URL": url,
                "HEALTH_INTERVAL": "0.5",
                "PUBLISHER_LEASE_MS": "2000",
                "PUBLISHER_METRICS_PORT": str(port),
            },
        ).start()
        for i, port in enumerate(metrics_ports)
    ]
    gateways = [
        GatewayProcess(url, tmp_path / f"gateway-{i}.log", env={"SSE_PING_INTERVAL": "1"})
        for i in range(2)
    ]
    try:
        for gateway in gateways:
            gateway.start()
        for gateway in gateways:
            gateway.wait_ready()
        urls = [gateways[i % 2].url + "/api/sse" for i in range(CLIENTS)]
        async with open_each(urls) as streams:
            assert all(s.status == 200 for s in streams)
            await until(
                lambda: all(s.of("connectome_health") for s in streams),
                timeout=20,
                what="a first connectome_health on every stream",
            )
            # A bare PUBLISH through a Sentinel client: a refused one (no master) is not retried
            # with the same number, and no snapshot is re-sent to look like a duplicate.
            seq = SeqPublisher(ChannelOnly(seq_client), "seq", str, refused=(RedisError, OSError))
            async with seq.running(1 / SEQ_RATE):
                await until(lambda: len(seq.accepted) >= 10, what="seq events flowing")

                killed_at = time.monotonic()
                old = await asyncio.to_thread(cluster.kill_master)
                new = await asyncio.to_thread(cluster.wait_failover)
                after = killed_at + IN_FLIGHT_S

                def first_health_after(stream: StreamRecorder) -> float | None:
                    return next(
                        (at for at in stream.arrivals("connectome_health") if at > after), None
                    )

                await until(
                    lambda: all(first_health_after(s) is not None for s in streams),
                    timeout=max(1.0, killed_at + DEADLINE_S - time.monotonic()),
                    what=f"connectome_health from the new master within {DEADLINE_S:.0f}s",
                )
                with new.client() as node:
                    await until(
                        lambda: len(gateway_subscriptions(node)) == 2,
                        what="both gateways subscribed on the new master",
                    )

                # A publish after the failover: every client, exactly once.
                marker = uuid.uuid4().hex
                done = await asyncio.to_thread(
                    subprocess.run,
                    console_script("connectome-sse", "publish", "failover_check", marker),
                    capture_output=True,
                    text=True,
                    timeout=30,
                    env={"PATH": "/usr/bin:/bin", "REDIS_URL": url},
                )
                assert done.returncode == 0, done.stderr
                await until(
                    lambda: all(s.of("failover_check") for s in streams),
                    what="the post-failover publish on every stream",
                )

                # The old master comes back, as a replica; nobody notices.
                await asyncio.to_thread(cluster.restart_old_master)
                more = len(seq.accepted) + 20
                await until(lambda: len(seq.accepted) >= more, what="seq events after it")
                with old.client() as node:
                    assert gateway_subscriptions(node) == []
            await until(lambda: publisher_leaders(metrics_ports) == 1, what="exactly one leader")
            # Let the last seq events reach everyone: a marker published after them.
            tail = uuid.uuid4().hex
            with new.client() as node:
                node.publish("sse:tail", tail)
            await until(lambda: all(s.of("tail") for s in streams), what="the tail marker")

            assert not [s for s in streams if s.ended], "a stream ended during the failover"
            for stream in streams:
                assert stream.of("failover_check") == [marker]

            delays = sorted(first_health_after(s) - killed_at for s in streams)  # type: ignore[operator]
            accepted = set(seq.accepted)
            lost: list[int] = []
            duplicated: list[int] = []
            for stream in streams:
                got = [int(data) for data in stream.of("seq") if data.isdigit()]
                lost.append(len(accepted - set(got)))
                duplicated.append(len(got) - len(set(got)))
            print(
                f"\nfailover (kill -9 of the master, {CLIENTS} streams, 2 gateways, "
                f"down-after {DOWN_AFTER_MS} ms): kill -> first connectome_health after it, "
                f"per client: p50 {statistics.median(delays):.2f}s, max {delays[-1]:.2f}s; "
                f"seq at {SEQ_RATE:.0f}/s: {len(accepted)} accepted, {seq.failed} refused "
                f"while no master; lost per client: max {max(lost)}, mean "
                f"{statistics.mean(lost):.1f}; duplicated: {sum(duplicated)}"
            )
            assert delays[-1] <= DEADLINE_S
            assert sum(duplicated) == 0
        assert all(g.alive() for g in gateways)
        assert all(p.alive() for p in publishers)
    finally:
        await seq_client.aclose()
        for process in [*gateways, *publishers]:
            process.stop()
        # Shown by pytest with a failing test's report (captured output).
        for process in [*gateways, *publishers]:
            print(process.log()[-3000:])
