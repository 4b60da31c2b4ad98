"""The scaled-out deployment end to end: 300 clients through the project's nginx, three gateways.

Real processes throughout (redis-server, two health-publishers, the demo
engine, three sse-gateways, Debian's nginx with services/nginx), and clients
that behave like browsers (see connectome_sse.localrun.browser.BrowserClient).

The tests publish their own numbered events (``bench_seq``, data
``{"seq": n}``) the proper way (snapshot + channel), so "every event exactly
once" and "no gap" are checkable per client. Before the clients connect,
seq 0 is published: a client that has received it as its snapshot is known
to be subscribed on its gateway, so nothing published afterwards can miss it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from connectome_sse.localrun.browser import describe, seq_range
from connectome_sse.localrun.gateway import GatewayProcess
from connectome_sse.localrun.seq_publisher import RedisEvents, SeqPublisher
from connectome_sse.localrun.topology import Topology
from connectome_sse.localrun.wait import async_wait_for
from tests.support.gateway_kill import (
    LiveEvents,
    assert_kept_clients_whole,
    connect_fleet,
    snapshot_delays,
)
from tests.support.nginx import NginxServer

pytestmark = pytest.mark.e2e

CLIENTS = 300
# A cut client has the current snapshot within retry + 2 s of the kill.
RECONNECT_SLACK_S = 2.0
# Deadlines for waiting only (the machine is shared): never a pass/fail criterion.
WAIT_S = 60.0

DOCKERFILE = Path(__file__).resolve().parents[2] / "services" / "Dockerfile"


@pytest.fixture
async def seq_redis(nginx_topology: Topology) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(nginx_topology.redis.url)
    yield client
    await client.aclose()


async def streams_per_gateway(topology: Topology, gateways: Sequence[GatewayProcess]) -> list[int]:
    return list(
        await asyncio.gather(*(asyncio.to_thread(topology.open_streams, g) for g in gateways))
    )


def healthcheck_command() -> list[str]:
    """The HEALTHCHECK CMD of services/Dockerfile (exec form), as the image would run it."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    match = re.search(r"^HEALTHCHECK .*?CMD (\[.*\])\s*$", text, re.M)
    assert match, "no exec-form HEALTHCHECK in services/Dockerfile"
    command = json.loads(match.group(1))
    assert command[0] == "python"
    return [sys.executable, *command[1:]]


def run_healthcheck(port: int) -> int:
    return subprocess.run(
        healthcheck_command(),
        env={**os.environ, "SSE_PORT": str(port)},
        capture_output=True,
        timeout=30,
        check=False,
    ).returncode


def test_the_rendered_configuration_passes_nginx_t() -> None:
    nginx = NginxServer(["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"])
    try:
        result = nginx.check()
    finally:
        nginx.stop()
    assert result.returncode == 0, result.stderr


async def test_300_clients_through_nginx_each_receive_every_event_exactly_once(
    nginx_topology: Topology, seq_redis: aioredis.Redis
) -> None:
    publisher = SeqPublisher(RedisEvents(seq_redis))
    fleet = await connect_fleet(nginx_topology.nginx.port, publisher, CLIENTS, WAIT_S)
    try:
        # Round robin spreads the clients over all three gateways.
        per_gateway = await streams_per_gateway(nginx_topology, nginx_topology.gateways)
        assert sum(per_gateway) == CLIENTS and min(per_gateway) > 0, per_gateway

        last = 100
        for seq in range(1, last + 1):
            await publisher.publish(seq)
            await asyncio.sleep(0.005)

        async def all_have_last() -> bool:
            return all(c.connections[-1].seqs[-1:] == [last] for c in fleet.clients)

        async def all_have_health() -> bool:
            return all(c.connections[-1].health_events > 0 for c in fleet.clients)

        await async_wait_for(all_have_last, timeout=WAIT_S, what=f"seq {last} everywhere")
        # The publishers' own events reach them too (the leader's, from the demo engine's signals).
        await async_wait_for(all_have_health, timeout=WAIT_S, what="connectome_health everywhere")
    finally:
        await fleet.stop()

    nginx_topology.check_running()
    assert fleet.failures() == []
    for client in fleet.clients:
        assert len(client.connections) == 1, describe([client])
        # 0 is the snapshot on connect; 1..last arrived live, each once, in order.
        assert client.connections[0].seqs == seq_range(0, last), describe([client])


async def test_kill_9_of_one_gateway_moves_its_clients_and_leaves_the_others_whole(
    nginx_topology: Topology, seq_redis: aioredis.Redis
) -> None:
    publisher = SeqPublisher(RedisEvents(seq_redis))
    fleet = await connect_fleet(nginx_topology.nginx.port, publisher, CLIENTS, WAIT_S)
    victim, *survivors = nginx_topology.gateways
    retry_s = int(nginx_topology.gateway_env["SSE_RETRY_MS"]) / 1000
    async with LiveEvents(fleet, publisher, WAIT_S) as events:
        per_gateway = await streams_per_gateway(nginx_topology, nginx_topology.gateways)
        assert sum(per_gateway) == CLIENTS, per_gateway
        on_victim = per_gateway[0]
        assert on_victim > 0, per_gateway
        assert {c.retry_ms for c in fleet.clients} == {int(retry_s * 1000)}

        await events.kill(lambda: asyncio.to_thread(victim.kill_group, signal.SIGKILL))
        await events.settle()
        per_gateway_after = await streams_per_gateway(nginx_topology, survivors)
        healthcheck_dead = await asyncio.to_thread(run_healthcheck, victim.port)
        healthcheck_alive = await asyncio.to_thread(run_healthcheck, survivors[0].port)

    assert fleet.failures() == []
    # Exactly the victim's clients were cut, and all of them are now on the survivors.
    assert len(events.cut) == on_victim
    assert sum(per_gateway_after) == CLIENTS
    assert_kept_clients_whole(events)
    took = snapshot_delays(events)
    bound = retry_s + RECONNECT_SLACK_S
    assert max(took) <= bound, f"snapshots {sorted(took)} s after the kill (bound: {bound}s)"
    # The image's health check tells a dead gateway from a ready one.
    assert healthcheck_dead != 0
    assert healthcheck_alive == 0
