"""A Sentinel failover under real load (issue 10): nobody notices but the figures.

One master, one replica and three sentinels (``tests/support/redis_sentinel.py``),
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
import contextlib
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from redis.exceptions import RedisError

from connectome_sse.redis_connect import sync_client
from connectome_sse.redis_target import parse_redis_url
from connectome_sse.sse_client import EventStreamParser
from tests.support.gateway import GatewayProcess, gateway_subscriptions
from tests.support.ports import free_port
from tests.support.processes import ManagedProcess, console_script
from tests.support.redis_sentinel import DOWN_AFTER_MS, FAILOVER_TIMEOUT_MS, SentinelCluster
from tests.support.sse_clients import until

pytestmark = pytest.mark.e2e

CLIENTS = 100
DEADLINE_S = DOWN_AFTER_MS / 1000 + FAILOVER_TIMEOUT_MS / 1000 + 5
SEQ_RATE = 20.0  # seq events per second through the failover
# Anything received this long after the kill left the dead master's sockets before it
# died or comes from the new master: a killed process sends nothing more.
IN_FLIGHT_S = 0.05


@dataclass
class Received:
    event: str
    data: str
    at: float  # time.monotonic() on arrival


@dataclass
class TimedStream:
    """One strict SSE client (the project's parser) that timestamps every event."""

    url: str
    events: list[Received] = field(default_factory=list)
    status: int | None = None
    ended: bool = False
    error: BaseException | None = None
    opened: asyncio.Event = field(default_factory=asyncio.Event)

    def of(self, event: str) -> list[Received]:
        return [e for e in self.events if e.event == event]

    async def run(self, client: httpx.AsyncClient) -> None:
        parser = EventStreamParser()
        try:
            async with client.stream("GET", self.url) as response:
                self.status = response.status_code
                self.opened.set()
                async for line in response.aiter_lines():
                    event = parser.feed(line)
                    if event is not None:
                        self.events.append(Received(event.event, event.data, time.monotonic()))
        except (httpx.HTTPError, OSError) as exc:
            self.error = exc
        finally:
            self.ended = True
            self.opened.set()


@contextlib.asynccontextmanager
async def timed_streams(urls: list[str]) -> AsyncIterator[list[TimedStream]]:
    limits = httpx.Limits(max_connections=len(urls) + 10, max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(30.0, read=None)) as client:
        streams = [TimedStream(url) for url in urls]
        tasks = [asyncio.create_task(s.run(client)) for s in streams]
        try:
            async with asyncio.timeout(60):
                await asyncio.gather(*(s.opened.wait() for s in streams))
            yield streams
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


class SeqPublisher:
    """PUBLISH ``sse:seq`` 0, 1, 2… at SEQ_RATE through a Sentinel client; records which
    publishes Redis accepted (a PUBLISH to a dead or demoted master fails and is retried
    with the next number: nobody can expect it)."""

    def __init__(self, url: str) -> None:
        self.client = sync_client(
            parse_redis_url(url), socket_timeout=0.5, socket_connect_timeout=0.5
        )
        self.accepted: list[int] = []
        self.failed = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        seq = 0
        while not self.stop.wait(1 / SEQ_RATE):
            try:
                self.client.publish("sse:seq", str(seq))
                self.accepted.append(seq)
            except (RedisError, OSError):
                self.failed += 1
            seq += 1

    def __enter__(self) -> SeqPublisher:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)
        self.client.close()


def leaders(metrics_ports: list[int]) -> int:
    total = 0
    for port in metrics_ports:
        with contextlib.suppress(httpx.HTTPError):
            for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text.splitlines():
                if line.startswith("health_publisher_leader "):
                    total += int(float(line.split()[1]))
    return total


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[SentinelCluster]:
    cluster = SentinelCluster(tmp_path / "sentinel").start()
    try:
        yield cluster
    finally:
        cluster.stop()


async def test_kill_9_of_the_master_under_100_streams(
    cluster: SentinelCluster, tmp_path: Path
) -> None:
    url = cluster.url
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
        async with timed_streams(urls) as streams:
            assert all(s.status == 200 for s in streams)
            await until(
                lambda: all(s.of("connectome_health") for s in streams),
                timeout=20,
                what="a first connectome_health on every stream",
            )
            with SeqPublisher(url) as seq:
                await until(lambda: len(seq.accepted) >= 10, what="seq events flowing")

                killed_at = time.monotonic()
                old = await asyncio.to_thread(cluster.kill_master)
                new = await asyncio.to_thread(cluster.wait_failover)
                after = killed_at + IN_FLIGHT_S

                def first_health_after(stream: TimedStream) -> float | None:
                    return next(
                        (e.at for e in stream.of("connectome_health") if e.at > after), None
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
            await until(lambda: leaders(metrics_ports) == 1, what="exactly one leader")
            # Let the last seq events reach everyone: a marker published after them.
            tail = uuid.uuid4().hex
            with new.client() as node:
                node.publish("sse:tail", tail)
            await until(lambda: all(s.of("tail") for s in streams), what="the tail marker")

            assert not [s for s in streams if s.ended], "a stream ended during the failover"
            for stream in streams:
                assert [e.data for e in stream.of("failover_check")] == [marker]

            delays = sorted(first_health_after(s) - killed_at for s in streams)  # type: ignore[operator]
            accepted = set(seq.accepted)
            lost: list[int] = []
            duplicated: list[int] = []
            for stream in streams:
                got = [int(e.data) for e in stream.of("seq") if e.data.isdigit()]
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
        for process in [*gateways, *publishers]:
            process.stop()
        # Shown by pytest with a failing test's report (captured output).
        for process in [*gateways, *publishers]:
            print(process.log()[-3000:])
