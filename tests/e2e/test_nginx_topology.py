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
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from connectome_sse.localrun.browser import (
    HEALTH_EVENT,
    SEQ_EVENT,
    BrowserClient,
    ClientFleet,
    describe,
    seq_range,
)
from connectome_sse.localrun.gateway import GatewayProcess
from connectome_sse.localrun.seq_publisher import RedisEvents, SeqPublisher
from connectome_sse.localrun.topology import Topology
from connectome_sse.localrun.wait import async_wait_for
from tests.support.nginx import NginxServer

pytestmark = pytest.mark.e2e

CLIENTS = 300
STREAM_PATH = f"/api/sse?events={HEALTH_EVENT},{SEQ_EVENT}"
# The bound: a cut client has the current snapshot within retry + 2 s of the kill.
RECONNECT_SLACK_S = 2.0
# Deadlines for waiting only (the machine is shared): never a pass/fail criterion.
WAIT_S = 60.0

DOCKERFILE = Path(__file__).resolve().parents[2] / "services" / "Dockerfile"


@pytest.fixture
async def seq_redis(nginx_topology: Topology) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(nginx_topology.redis.url)
    yield client
    await client.aclose()


async def connect_clients(topology: Topology, publisher: SeqPublisher) -> ClientFleet:
    """CLIENTS browser-like clients through nginx, each subscribed (it has seq 0 as snapshot)."""
    await publisher.publish(0)
    fleet = ClientFleet("127.0.0.1", topology.nginx.port, STREAM_PATH, CLIENTS)
    fleet.start()

    async def all_subscribed() -> bool:
        assert not fleet.crashed(), fleet.crashed()
        return all(c.last is not None and c.last.seqs[:1] == [0] for c in fleet.clients)

    try:
        await async_wait_for(all_subscribed, timeout=WAIT_S, what=f"{CLIENTS} streams open")
    except AssertionError:
        await fleet.stop()
        raise AssertionError(
            f"{describe(fleet.clients)}\nfailures: {fleet.failures()[:5]}"
        ) from None
    return fleet


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
    fleet = await connect_clients(nginx_topology, publisher)
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
    fleet = await connect_clients(nginx_topology, publisher)
    stop_publishing = asyncio.Event()
    publishing = asyncio.create_task(publisher.run(0.05, stop_publishing))
    victim, *survivors = nginx_topology.gateways
    try:
        await async_wait_for(
            lambda: _all(fleet, lambda c: (c.last.seqs[-1] if c.last else 0) >= 5),
            timeout=WAIT_S,
            what="live events flowing to every client",
        )
        per_gateway = await streams_per_gateway(nginx_topology, nginx_topology.gateways)
        assert sum(per_gateway) == CLIENTS, per_gateway
        on_victim = per_gateway[0]
        assert on_victim > 0, per_gateway

        retry_s = int(nginx_topology.gateway_env["SSE_RETRY_MS"]) / 1000
        assert {c.retry_ms for c in fleet.clients} == {int(retry_s * 1000)}
        victim.kill_group(signal.SIGKILL)
        killed_at = time.monotonic()
        published_before_kill = publisher.last

        def was_cut(client: BrowserClient) -> bool:
            return client.connections[0].ended_at is not None

        def back_with_snapshot(client: BrowserClient) -> bool:
            return (
                len(client.connections) > 1
                and client.connections[-1].first_seq_at is not None
                and client.connections[-1].first_health_at is not None
            )

        # Waiting is generous; the bound is asserted on the recorded times below.
        await async_wait_for(
            lambda: _all(fleet, lambda c: not was_cut(c) or back_with_snapshot(c)),
            timeout=WAIT_S,
            what="cut clients back with their snapshot",
        )
        # Live events after the reconnects, for the gap check: a few more than were
        # published by the time the last client came back must reach everyone.
        back_by = publisher.last + 5
        await async_wait_for(
            lambda: _all(fleet, lambda c: c.connections[-1].seqs[-1:] >= [back_by]),
            timeout=WAIT_S,
            what=f"live events up to seq {back_by} after the reconnects",
        )
        stop_publishing.set()
        await publishing
        last = publisher.last
        await async_wait_for(
            lambda: _all(fleet, lambda c: c.connections[-1].seqs[-1:] == [last]),
            timeout=WAIT_S,
            what=f"seq {last} everywhere",
        )
        per_gateway_after = await streams_per_gateway(nginx_topology, survivors)
        healthcheck_dead = await asyncio.to_thread(run_healthcheck, victim.port)
        healthcheck_alive = await asyncio.to_thread(run_healthcheck, survivors[0].port)
    finally:
        stop_publishing.set()
        await asyncio.gather(publishing, return_exceptions=True)
        await fleet.stop()

    assert fleet.failures() == []
    cut = [c for c in fleet.clients if was_cut(c)]
    kept = [c for c in fleet.clients if not was_cut(c)]
    # Exactly the victim's clients were cut, and all of them are now on the survivors.
    assert len(cut) == on_victim
    assert sum(per_gateway_after) == CLIENTS

    for client in kept:
        # No gap, no duplicate, no reconnect: every event published around the kill arrived.
        assert len(client.connections) == 1, describe([client])
        assert client.connections[0].seqs == seq_range(0, last), describe([client])

    for client in cut:
        before, after = client.connections[0], client.connections[-1]
        assert before.seqs == seq_range(0, before.seqs[-1]), describe([client])
        assert after.first_seq_at is not None and after.first_health_at is not None
        took = max(after.first_seq_at, after.first_health_at) - killed_at
        assert took <= retry_s + RECONNECT_SLACK_S, (
            f"snapshot {took:.2f}s after the kill (bound: retry {retry_s}s + {RECONNECT_SLACK_S}s)"
        )
        # The snapshot is current: it has everything published before the kill.
        snapshot = after.seqs[0]
        assert snapshot >= published_before_kill, (snapshot, published_before_kill)
        # And from there on nothing is missing. (Events published while the snapshot was
        # being read may come once more after it: at-least-once across a reconnect.)
        assert set(seq_range(snapshot, last)) <= set(after.seqs), describe([client])

    # The image's health check tells a dead gateway from a ready one.
    assert healthcheck_dead != 0
    assert healthcheck_alive == 0


async def _all(fleet: ClientFleet, predicate: Callable[[BrowserClient], bool]) -> bool:
    assert not fleet.crashed(), fleet.crashed()
    return all(predicate(c) for c in fleet.clients)
