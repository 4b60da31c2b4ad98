"""`docker-compose --profile demo up` for real: the deployment users run, end to end.

The module's deployment (tests/support/compose_deployment.py) runs with the
settings' defaults; the tests reach it only through nginx and ``docker``: the
dashboard, demo health events, a ``redis-cli publish``, the loss of a gateway,
a scale-out, the loss of the leading publisher, and an invented X-Forwarded-For.
Bounds asserted: a killed gateway's clients have their snapshot within retry +
2 s; health resumes from the standby within lease + interval + 2 s.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from httpx_sse import aconnect_sse

from connectome_core.contract import LEADER_KEY
from connectome_core.payload import parse_health_payload
from connectome_sse.localrun.browser import HEALTH_EVENT, SEQ_EVENT, BrowserClient
from connectome_sse.localrun.seq_publisher import SeqPublisher
from connectome_sse.localrun.wait import until, wait_for
from health_publisher.settings import PublisherSettings
from sse_gateway.settings import GatewaySettings
from tests.support.compose import RedisCliPipe
from tests.support.compose_deployment import GATEWAYS, Deployment, deployed, streams_by_gateway
from tests.support.gateway_kill import (
    STREAM_PATH,
    LiveEvents,
    assert_kept_clients_whole,
    connect_fleet,
    snapshot_delays,
)
from tests.support.raw_stream import RawStream

# Building on a cold machine (debootstrap, apt, pip) takes minutes, not seconds.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

SLACK_S = 2.0
RETRY_S = GatewaySettings().retry_ms / 1000
LEASE_S = PublisherSettings().lease_seconds
INTERVAL_S = PublisherSettings().health_interval
# Deadlines for waiting only (the machine is shared): never a pass/fail criterion.
WAIT_S = 90.0


@pytest.fixture(scope="module")
def deployment(request: pytest.FixtureRequest) -> Iterator[Deployment]:
    with deployed(request, WAIT_S) as deployment:
        yield deployment


@pytest.fixture
async def redis_cli(deployment: Deployment) -> AsyncIterator[RedisCliPipe]:
    pipe = await RedisCliPipe(deployment.redis().name).start()
    yield pipe
    await pipe.close()


def test_the_dashboard_and_readiness_answer_through_nginx(deployment: Deployment) -> None:
    with httpx.Client(base_url=deployment.url, timeout=10) as client:
        page = client.get("/")
        ready = client.get("/readyz")
        metrics = client.get("/metrics")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    # The page streams through the gateway's browser client, which it loads from the gateway.
    assert 'import { ConnectomeStream } from "/client.js"' in page.text
    assert 'new ConnectomeStream("/api/sse"' in page.text
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    # Per-process numbers are not served through the balancer.
    assert metrics.status_code == 404


def test_only_nginx_is_published_on_loopback_and_nothing_runs_as_root(
    deployment: Deployment,
) -> None:
    project = deployment.project
    published: dict[str, dict[str, str]] = {}
    for service in ("redis", "publisher", "demo-engine", "gateway", "nginx"):
        for container in project.containers(service):
            lines = project.run_docker("port", container.id).splitlines()
            published[container.name] = dict(line.split(" -> ") for line in lines)
    nginx = project.containers("nginx")[0].name
    # nginx on loopback only (HTTP and HTTPS), and nothing else at all.
    assert published.pop(nginx) == {
        "8080/tcp": f"127.0.0.1:{deployment.port}",
        "8443/tcp": f"127.0.0.1:{deployment.tls_port}",
    }
    assert all(ports == {} for ports in published.values()), published
    for service in ("publisher", "demo-engine", "gateway"):
        container = project.containers(service)[0]
        assert project.exec(container.name, "id", "-u").strip() == "10001", service
    assert project.exec(deployment.redis().name, "id", "-un").strip() == "redis"


def test_redis_evicts_nothing_keeps_nothing_and_says_protected_mode_no(
    deployment: Deployment,
) -> None:
    redis = deployment.redis().name
    reply = deployment.project.exec(
        redis,
        "redis-cli", "config", "get", "*",
    ).splitlines()  # fmt: skip
    config = dict(zip(reply[::2], reply[1::2], strict=True))
    # Never drop the signal stream, the lease or the checkpoint: refuse writes instead.
    assert config["maxmemory-policy"] == "noeviction"
    assert int(config["maxmemory"]) > 0
    assert config["save"] == "" and config["appendonly"] == "no"
    # Explicit, not a build default: Debian's redis-server would refuse the other containers.
    assert config["protected-mode"] == "no"


def test_https_with_http2_and_a_self_signed_certificate_when_none_is_mounted(
    deployment: Deployment, tmp_path: Path
) -> None:
    nginx = deployment.project.containers("nginx")[0].name
    ca = tmp_path / "self-signed.crt"
    ca.write_text(deployment.project.exec(nginx, "cat", "/etc/nginx/tls/tls.crt"))
    context = ssl.create_default_context(cafile=str(ca))
    # The pair the image made is valid for 127.0.0.1, and HTTP/2 is offered.
    context.set_alpn_protocols(["h2", "http/1.1"])
    with (
        socket.create_connection(("127.0.0.1", deployment.tls_port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.selected_alpn_protocol() == "h2"
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
    plain = ssl.create_default_context(cafile=str(ca))
    with httpx.Client(verify=plain, timeout=10) as client:
        ready = client.get(f"https://127.0.0.1:{deployment.tls_port}/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


async def test_demo_health_events_and_a_redis_cli_publish_reach_a_client(
    deployment: Deployment,
) -> None:
    health_ts: list[float] = []
    seqs: list[int] = []
    timeout = httpx.Timeout(10, read=30)
    async with (
        httpx.AsyncClient(base_url=deployment.url, timeout=timeout) as client,
        aconnect_sse(client, "GET", STREAM_PATH) as source,
    ):
        assert source.response.status_code == 200
        assert source.response.headers["content-type"].startswith("text/event-stream")
        events = source.aiter_sse()
        async with asyncio.timeout(WAIT_S):
            # Two distinct health events: the snapshot, then a live one of the demo engine's.
            while len(set(health_ts)) < 2:
                event = await anext(events)
                if event.event == HEALTH_EVENT:
                    payload = parse_health_payload(event.data)
                    assert payload.playthrough_id and payload.place_id
                    health_ts.append(payload.ts)
            receivers = await asyncio.to_thread(
                deployment.project.exec,
                deployment.redis().name,
                "redis-cli", "publish", f"sse:{SEQ_EVENT}", json.dumps({"seq": 42}),
            )  # fmt: skip
            while 42 not in seqs:
                event = await anext(events)
                if event.event == SEQ_EVENT:
                    seqs.append(json.loads(event.data)["seq"])
    # Every gateway is subscribed to the channel, each relays to its own clients.
    assert int(receivers) == GATEWAYS
    assert health_ts == sorted(health_ts)


async def test_docker_kill_of_a_gateway_moves_its_clients_and_leaves_the_others_whole(
    deployment: Deployment, redis_cli: RedisCliPipe
) -> None:
    publisher = SeqPublisher(redis_cli)
    fleet = await connect_fleet(deployment.port, publisher, 30, WAIT_S)
    async with LiveEvents(fleet, publisher, WAIT_S) as events:
        before = await streams_by_gateway(deployment)
        assert sum(before.values()) == len(fleet.clients), before
        victim = max(before, key=lambda gateway_id: before[gateway_id])
        assert {c.retry_ms for c in fleet.clients} == {int(RETRY_S * 1000)}

        await events.kill(lambda: asyncio.to_thread(deployment.project.run_docker, "kill", victim))
        await events.settle()
        after = await streams_by_gateway(deployment)

    assert fleet.failures() == []
    assert len(events.cut) == before[victim]
    assert victim not in after and sum(after.values()) == len(fleet.clients), after
    assert_kept_clients_whole(events)
    took = snapshot_delays(events)
    deployment.figures["gateway kill: clients moved"] = (
        f"{len(events.cut)} of {len(fleet.clients)}; streams per gateway before"
        f" {sorted(before.values())}, after {sorted(after.values())}"
    )
    deployment.figures["gateway kill: snapshot after (median / max)"] = (
        f"{statistics.median(took):.2f}s / {max(took):.2f}s"
        f" (bound: retry {RETRY_S:g}s + {SLACK_S:g}s)"
    )
    assert max(took) <= RETRY_S + SLACK_S, sorted(took)


async def test_scale_to_five_gateways_new_ones_take_streams_with_nginx_untouched(
    deployment: Deployment, redis_cli: RedisCliPipe
) -> None:
    project = deployment.project
    [nginx_before] = project.containers("nginx")
    existing = {g.id for g in project.containers("gateway")}

    await asyncio.to_thread(project.up, "--scale", "gateway=5")
    gateways = await asyncio.to_thread(project.wait_healthy, "gateway", 5, WAIT_S)
    new = {g.id for g in gateways} - existing
    assert len(new) >= 2, (existing, gateways)
    [nginx_after] = project.containers("nginx")
    assert (nginx_after.id, nginx_after.started_at) == (nginx_before.id, nginx_before.started_at)

    publisher = SeqPublisher(redis_cli)
    await publisher.publish(0)
    # Clients arriving one by one, as users do. (A burst that reaches nginx while a
    # worker re-asks Docker's DNS goes to one address: nginx hands the fresh answer
    # to every waiting request in the same order. The README says so.)
    clients = [BrowserClient("127.0.0.1", deployment.port, STREAM_PATH) for _ in range(40)]
    tasks = []
    try:
        for client in clients:
            tasks.append(asyncio.create_task(client.run()))
            await asyncio.sleep(0.05)
        await until(
            lambda: all(c.last is not None and c.last.seqs[:1] == [0] for c in clients),
            timeout=WAIT_S,
            what="40 streams open",
        )
        streams = await streams_by_gateway(deployment)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert sum(streams.values()) == 40, streams
    # Random rotation over five addresses: each new gateway gets some of 40 streams.
    assert all(streams[gateway_id] > 0 for gateway_id in new), streams
    deployment.figures["scale to 5: streams per gateway"] = str(sorted(streams.values()))


async def test_docker_kill_of_the_leading_publisher_hands_health_to_the_standby(
    deployment: Deployment,
) -> None:
    project = deployment.project
    redis = deployment.redis().name

    def leader_host() -> str:
        # The lease holds "<hostname>-<pid>:<token>"; a container's hostname is its id's start.
        return project.exec(redis, "redis-cli", "get", LEADER_KEY).strip().split("-")[0]

    publishers = project.containers("publisher")
    assert len(publishers) == 2
    host = await asyncio.to_thread(leader_host)
    [leader] = [p for p in publishers if host and p.id.startswith(host)]
    [standby] = [p for p in publishers if p is not leader]

    arrivals: list[tuple[float, float]] = []  # (arrival, the event's own ts)
    timeout = httpx.Timeout(10, read=30)
    async with (
        httpx.AsyncClient(base_url=deployment.url, timeout=timeout) as client,
        aconnect_sse(client, "GET", f"/api/sse?events={HEALTH_EVENT}") as source,
    ):
        events = source.aiter_sse()

        async def next_health() -> tuple[float, float]:
            event = await anext(events)
            while event.event != HEALTH_EVENT:  # the stream's `retry:` comes on its own
                event = await anext(events)
            arrival = (time.monotonic(), parse_health_payload(event.data).ts)
            arrivals.append(arrival)
            return arrival

        async with asyncio.timeout(WAIT_S):
            await next_health()  # the snapshot
            await next_health()  # a live one, from the leader
            killed_wall = time.time()
            await asyncio.to_thread(project.run_docker, "kill", leader.id)
            killed_at = time.monotonic()
            # Anything the leader published before it died may still be in flight.
            while (arrival := await next_health())[1] <= killed_wall:
                pass
    resumed_after = arrival[0] - killed_at
    new_host = await asyncio.to_thread(leader_host)
    assert standby.id.startswith(new_host), (new_host, standby.id)
    bound = LEASE_S + INTERVAL_S + SLACK_S
    deployment.figures["publisher kill: health resumed after"] = (
        f"{resumed_after:.2f}s"
        f" (bound: lease {LEASE_S:g}s + interval {INTERVAL_S:g}s + {SLACK_S:g}s)"
    )
    assert resumed_after <= bound


# Last: it leaves the deployment with one gateway and a limit of one stream per address.
def test_an_invented_x_forwarded_for_does_not_escape_the_per_client_limit(
    deployment: Deployment, tmp_path: Path
) -> None:
    project = deployment.project
    limit = tmp_path / "one-stream-per-client.yml"
    limit.write_text(
        yaml.safe_dump(
            {"services": {"gateway": {"environment": {"SSE_MAX_STREAMS_PER_CLIENT": "1"}}}}
        )
    )
    project.files.append(limit)
    # One gateway, so every request meets the same count.
    project.up("--scale", "gateway=1")
    project.wait_healthy("gateway", 1, timeout=WAIT_S)
    project.wait_healthy("nginx", 1, timeout=WAIT_S)
    invented = "203.0.113.7"
    streams: list[RawStream] = []

    def stream(*headers: tuple[str, str]) -> RawStream:
        opened = RawStream(deployment.port, headers=headers)
        streams.append(opened)
        return opened

    def flowing() -> RawStream | None:
        opened = stream()
        return opened if opened.status == 200 else None

    def error(refused: RawStream) -> str:
        body = refused.json()
        assert isinstance(body, dict), body
        return str(body["error"])

    try:
        # nginx's DNS answer may still name a gateway of before the scale-down for 1 s.
        first = wait_for(flowing, timeout=WAIT_S, what="a stream through nginx")
        assert first is not None
        first.read_until(lambda s: b"retry:" in s.body, what="the stream to flow")
        second = stream()
        assert second.status == 429, second.data[:300]
        spoofed = stream(("X-Forwarded-For", invented))
        assert spoofed.status == 429, spoofed.data[:300]
        # Both counted as the address nginx saw (Docker's side of the published port).
        seen = error(second).split(" from ", 1)[1].split(" ", 1)[0]
        assert error(spoofed) == error(second), (error(spoofed), error(second))
        logs = project.compose("logs", "--no-color", "gateway").stdout
    finally:
        for opened in streams:
            opened.close()
    assert invented not in logs
    assert f"stream refused 429 for {seen}: " in logs, logs[-2000:]
    deployment.figures["invented X-Forwarded-For"] = f"refused as {seen}, the address nginx saw"
