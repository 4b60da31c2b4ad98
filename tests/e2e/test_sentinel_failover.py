"""A Sentinel failover under real load: nobody notices but the figures.

A master, a replica and three sentinels; two publishers and two gateways on the
``redis+sentinel://`` URL; 100 streams. After ``kill -9`` of the master every
stream stays open and has health from the new master within the bound, a publish
after it reaches every stream once, one publisher leads, and the old master comes
back as a replica unnoticed. Printed (``-s``): kill to first health per stream,
and the numbered events (20/s through the failover) lost or duplicated per stream.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis.exceptions import RedisError

from connectome_core.redis_connect import async_client
from connectome_core.redis_target import parse_redis_url
from connectome_sse.localrun.gateway import GatewayProcess, gateway_subscriptions
from connectome_sse.localrun.metrics import publisher_leaders
from connectome_sse.localrun.processes import console_script
from connectome_sse.localrun.redis_sentinel import (
    DOWN_AFTER_MS,
    FAILOVER_TIMEOUT_MS,
    SentinelCluster,
)
from connectome_sse.localrun.redis_server import RedisServer
from connectome_sse.localrun.seq_publisher import ChannelOnly, SeqPublisher
from connectome_sse.localrun.sse_clients import StreamRecorder, open_each
from connectome_sse.localrun.wait import until
from tests.support.publisher import publishers_with_metrics

pytestmark = pytest.mark.e2e

CLIENTS = 100
DEADLINE_S = DOWN_AFTER_MS / 1000 + FAILOVER_TIMEOUT_MS / 1000 + 5
SEQ_RATE = 20.0  # seq events per second through the failover
# Anything received this long after the kill left the dead master's sockets before it
# died or comes from the new master: a killed process sends nothing more.
IN_FLIGHT_S = 0.05


@dataclass
class Failover:
    """When the master was killed, the master that died and the one that took over."""

    killed_at: float
    old: RedisServer
    new: RedisServer

    def first_health_after(self, stream: StreamRecorder) -> float | None:
        after = self.killed_at + IN_FLIGHT_S
        return next((at for at in stream.arrivals("connectome_health") if at > after), None)


async def kill_the_master(cluster: SentinelCluster, streams: list[StreamRecorder]) -> Failover:
    """``kill -9`` of the master; health from the new master on every stream, both gateways
    subscribed there."""
    killed_at = time.monotonic()
    old = await asyncio.to_thread(cluster.kill_master)
    failover = Failover(killed_at, old, await asyncio.to_thread(cluster.wait_failover))
    await until(
        lambda: all(failover.first_health_after(s) is not None for s in streams),
        timeout=max(1.0, killed_at + DEADLINE_S - time.monotonic()),
        what=f"connectome_health from the new master within {DEADLINE_S:.0f}s",
    )
    with failover.new.client() as node:
        await until(
            lambda: len(gateway_subscriptions(node)) == 2,
            what="both gateways subscribed on the new master",
        )
    return failover


async def publish_everywhere(url: str, event: str, streams: list[StreamRecorder]) -> str:
    """``connectome-sse publish`` of a fresh marker as ``event``, seen by every stream."""
    marker = uuid.uuid4().hex
    done = await asyncio.to_thread(
        subprocess.run,
        console_script("connectome-sse", "publish", event, marker),
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", "REDIS_URL": url},
    )
    assert done.returncode == 0, done.stderr
    await until(lambda: all(s.of(event) for s in streams), what=f"the {event} on every stream")
    return marker


async def bring_the_old_master_back(
    cluster: SentinelCluster, failover: Failover, seq: SeqPublisher
) -> None:
    """The old master returns as a replica while numbered events flow; nobody subscribes there."""
    await asyncio.to_thread(cluster.restart_old_master)
    more = len(seq.accepted) + 20
    await until(lambda: len(seq.accepted) >= more, what="seq events after it")
    with failover.old.client() as node:
        assert gateway_subscriptions(node) == []


def lost_and_duplicated(
    streams: list[StreamRecorder], accepted: set[int]
) -> tuple[list[int], list[int]]:
    """Per stream: accepted numbered events it never got, and events it got twice."""
    lost: list[int] = []
    duplicated: list[int] = []
    for stream in streams:
        got = [int(data) for data in stream.of("seq") if data.isdigit()]
        lost.append(len(accepted - set(got)))
        duplicated.append(len(got) - len(set(got)))
    return lost, duplicated


def assert_figures_within_bounds(
    streams: list[StreamRecorder], failover: Failover, seq: SeqPublisher
) -> None:
    """Health back within the bound on every stream, no event twice; the figures printed."""
    delays = []
    for stream in streams:
        at = failover.first_health_after(stream)
        assert at is not None
        delays.append(at - failover.killed_at)
    delays.sort()
    accepted = set(seq.accepted)
    lost, duplicated = lost_and_duplicated(streams, accepted)
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


async def test_kill_9_of_the_master_under_100_streams(
    cluster: SentinelCluster, tmp_path: Path
) -> None:
    url = cluster.url
    # The seq events' own client: through the sentinels, short timeouts while no master answers.
    seq_client = async_client(parse_redis_url(url), socket_timeout=0.5, socket_connect_timeout=0.5)
    publishers, metrics_ports = publishers_with_metrics(
        url, tmp_path, {"HEALTH_INTERVAL": "0.5", "PUBLISHER_LEASE_MS": "2000"}
    )
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
                failover = await kill_the_master(cluster, streams)
                marker = await publish_everywhere(url, "failover_check", streams)
                await bring_the_old_master_back(cluster, failover, seq)
            await until(lambda: publisher_leaders(metrics_ports) == 1, what="exactly one leader")
            # Let the last seq events reach everyone: a marker published after them.
            tail = uuid.uuid4().hex
            with failover.new.client() as node:
                node.publish("sse:tail", tail)
            await until(lambda: all(s.of("tail") for s in streams), what="the tail marker")

            assert not [s for s in streams if s.ended], "a stream ended during the failover"
            for stream in streams:
                assert stream.of("failover_check") == [marker]
            assert_figures_within_bounds(streams, failover, seq)
        assert all(g.alive() for g in gateways)
        assert all(p.alive() for p in publishers)
    finally:
        await seq_client.aclose()
        for process in [*gateways, *publishers]:
            process.stop()
        # Shown by pytest with a failing test's report (captured output).
        for process in [*gateways, *publishers]:
            print(process.log()[-3000:])
