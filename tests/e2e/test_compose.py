"""`docker-compose --profile demo up` for real: the deployment users run, end to end.

The module's fixture provisions a Docker engine (scripts/docker-engine: Debian's
dockerd, compose and a debootstrap base image, all cached on the machine),
builds the compose file's images on that base (layers cached): both in the
background from the start of the session, as this module runs last (see
tests/conftest.py); then it starts the
deployment under a project name of its own with nginx published on a free
loopback port. Then, only through nginx and ``docker`` itself: the dashboard,
real health events of the demo engine, a ``redis-cli publish`` from inside the
Redis container, the loss of a gateway, a scale-out to five gateways, the loss of
the leading publisher, and last, with one gateway holding one stream per
client address, a client that invents its X-Forwarded-For. ``down`` must
leave nothing of the project behind.

Bounds asserted (the issue's; measured figures are printed at the end):
  - a killed gateway's clients have their snapshot within retry + 2 s;
  - health resumes from the standby within lease + interval + 2 s.
The deployment runs with the settings' defaults, as users get it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import ssl
import statistics
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml
from httpx_sse import aconnect_sse

from connectome_core.contract import LEADER_KEY
from connectome_core.payload import parse_health_payload
from connectome_sse.localrun.browser import (
    HEALTH_EVENT,
    SEQ_EVENT,
    BrowserClient,
    ClientFleet,
    describe,
    seq_range,
)
from connectome_sse.localrun.metrics import open_streams
from connectome_sse.localrun.ports import free_port
from connectome_sse.localrun.seq_publisher import SeqPublisher
from connectome_sse.localrun.wait import async_wait_for, wait_for
from health_publisher.settings import PublisherSettings
from sse_gateway.settings import GatewaySettings
from tests.support.compose import (
    ComposeProject,
    Container,
    RedisCliPipe,
    prepared,
)
from tests.support.raw_stream import RawStream

# Building on a cold machine (debootstrap, apt, pip) takes minutes, not seconds.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

STREAM_PATH = f"/api/sse?events={HEALTH_EVENT},{SEQ_EVENT}"
GATEWAYS = 3  # the compose file's replicas
SLACK_S = 2.0
RETRY_S = GatewaySettings().retry_ms / 1000
LEASE_S = PublisherSettings().lease_seconds
INTERVAL_S = PublisherSettings().health_interval
# Deadlines for waiting only (the machine is shared): never a pass/fail criterion.
WAIT_S = 90.0

# Figures measured by the tests, printed when the module's deployment goes down.
FIGURES: dict[str, str] = {}


@dataclass
class Deployment:
    project: ComposeProject
    port: int
    tls_port: int
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def redis(self) -> Container:
        [redis] = self.project.containers("redis")
        return redis


@pytest.fixture(scope="module")
def deployment(request: pytest.FixtureRequest) -> Iterator[Deployment]:
    started = time.monotonic()
    ready = prepared()  # usually made in the background meanwhile (tests/conftest.py)
    base_image, built = ready.base_image, ready.built
    built_at = time.monotonic()
    port, tls_port = free_port(), free_port()
    project = ComposeProject(
        {
            "BASE_IMAGE": base_image,
            "NGINX_ADDRESS": "127.0.0.1",
            "NGINX_PORT": str(port),
            "NGINX_TLS_PORT": str(tls_port),
        },
        profiles=["demo"],
    )
    deployment = Deployment(project, port, tls_port)
    try:
        project.up()
        project.wait_healthy("gateway", GATEWAYS, timeout=WAIT_S)
        project.wait_healthy("nginx", 1, timeout=WAIT_S)
        up_at = time.monotonic()
        deployment.timings = {
            "engine (in the background)": ready.engine_s,
            "build (in the background)": sum(built.values()),
            "waited for engine and build": built_at - started,
            "up until healthy": up_at - built_at,
        }
        yield deployment
    finally:
        logs = project.logs()
        project.down()
        leftovers = project.leftovers()
        total = time.monotonic() - started
        report(request, deployment, built, total)
        if any(leftovers.values()):
            print(logs)
        assert leftovers == {"containers": [], "networks": [], "volumes": []}, leftovers


def report(
    request: pytest.FixtureRequest, deployment: Deployment, built: dict[str, float], total: float
) -> None:
    """The figures, on the terminal even when output is captured."""
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    lines = [f"compose test: {total:.1f}s in all"]
    lines += [f"  {name}: {seconds:.1f}s" for name, seconds in deployment.timings.items()]
    lines += [f"  build {tag}: {seconds:.1f}s" for tag, seconds in built.items()]
    lines += [f"  {name}: {value}" for name, value in FIGURES.items()]
    if capture is None:
        print("\n".join(lines))
        return
    with capture.global_and_fixture_disabled():
        print("\n" + "\n".join(lines))


@pytest.fixture
async def redis_cli(deployment: Deployment) -> AsyncIterator[RedisCliPipe]:
    pipe = await RedisCliPipe(deployment.redis().name).start()
    yield pipe
    await pipe.close()


async def connect_clients(deployment: Deployment, publisher: SeqPublisher, n: int) -> ClientFleet:
    """n browser-like clients through nginx, each subscribed (it has seq 0 as snapshot)."""
    await publisher.publish(0)
    fleet = ClientFleet("127.0.0.1", deployment.port, STREAM_PATH, n)
    fleet.start()
    try:
        await async_wait_for(
            lambda: _all(fleet, lambda c: c.last is not None and c.last.seqs[:1] == [0]),
            timeout=WAIT_S,
            what=f"{n} streams open",
        )
    except AssertionError:
        await fleet.stop()
        raise AssertionError(f"{describe(fleet.clients)}\n{fleet.failures()[:5]}") from None
    return fleet


async def _all(fleet: ClientFleet, predicate: Callable[[BrowserClient], bool]) -> bool:
    assert not fleet.crashed(), fleet.crashed()
    return all(predicate(c) for c in fleet.clients)


async def _all_clients(
    clients: list[BrowserClient], predicate: Callable[[BrowserClient], bool]
) -> bool:
    return all(predicate(c) for c in clients)


def gateway_streams(project: ComposeProject, gateway: Container) -> int:
    """``sse_open_streams`` of one gateway, asked inside its container (it publishes no port)."""
    metrics = project.exec(
        gateway.name,
        "python",
        "-c",
        "import urllib.request as u; "
        "print(u.urlopen('http://127.0.0.1:8000/metrics', timeout=5).read().decode())",
    )
    return open_streams(metrics)


async def streams_by_gateway(deployment: Deployment) -> dict[str, int]:
    gateways = [g for g in deployment.project.containers("gateway") if g.running]
    counts = await asyncio.gather(
        *(asyncio.to_thread(gateway_streams, deployment.project, g) for g in gateways)
    )
    return {g.id: n for g, n in zip(gateways, counts, strict=True)}


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
    project = deployment.project
    publisher = SeqPublisher(redis_cli)
    fleet = await connect_clients(deployment, publisher, 30)
    stop_publishing = asyncio.Event()
    publishing = asyncio.create_task(publisher.run(0.05, stop_publishing))
    try:
        await async_wait_for(
            lambda: _all(fleet, lambda c: (c.last.seqs[-1] if c.last else 0) >= 5),
            timeout=WAIT_S,
            what="live events flowing to every client",
        )
        before = await streams_by_gateway(deployment)
        assert sum(before.values()) == len(fleet.clients), before
        victim = max(before, key=lambda gateway_id: before[gateway_id])
        on_victim = before[victim]
        assert {c.retry_ms for c in fleet.clients} == {int(RETRY_S * 1000)}

        await asyncio.to_thread(project.run_docker, "kill", victim)
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

        await async_wait_for(
            lambda: _all(fleet, lambda c: not was_cut(c) or back_with_snapshot(c)),
            timeout=WAIT_S,
            what="cut clients back with their snapshot",
        )
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
        after = await streams_by_gateway(deployment)
    finally:
        stop_publishing.set()
        await asyncio.gather(publishing, return_exceptions=True)
        await fleet.stop()

    assert fleet.failures() == []
    cut = [c for c in fleet.clients if was_cut(c)]
    kept = [c for c in fleet.clients if not was_cut(c)]
    assert len(cut) == on_victim
    assert victim not in after and sum(after.values()) == len(fleet.clients), after
    for client in kept:
        # No gap, no duplicate, no reconnect.
        assert len(client.connections) == 1, describe([client])
        seqs = client.connections[0].seqs
        assert seqs == seq_range(0, last), (
            f"missing {sorted(set(seq_range(0, last)) - set(seqs))[:10]},"
            f" repeated {sorted({s for s in seqs if seqs.count(s) > 1})[:10]},"
            f" out of order {[b for a, b in itertools.pairwise(seqs) if b < a][:10]}\n"
            + describe([client])
        )
    took = []
    for client in cut:
        before_conn, after_conn = client.connections[0], client.connections[-1]
        assert before_conn.seqs == seq_range(0, before_conn.seqs[-1]), describe([client])
        assert after_conn.first_seq_at is not None and after_conn.first_health_at is not None
        took.append(max(after_conn.first_seq_at, after_conn.first_health_at) - killed_at)
        snapshot = after_conn.seqs[0]
        assert snapshot >= published_before_kill, (snapshot, published_before_kill)
        assert set(seq_range(snapshot, last)) <= set(after_conn.seqs), describe([client])
    FIGURES["gateway kill: clients moved"] = (
        f"{len(cut)} of {len(fleet.clients)}; streams per gateway before"
        f" {sorted(before.values())}, after {sorted(after.values())}"
    )
    FIGURES["gateway kill: snapshot after (median / max)"] = (
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
        await async_wait_for(
            lambda: _all_clients(clients, lambda c: c.last is not None and c.last.seqs[:1] == [0]),
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
    FIGURES["scale to 5: streams per gateway"] = str(sorted(streams.values()))


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
    FIGURES["publisher kill: health resumed after"] = (
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
    FIGURES["invented X-Forwarded-For"] = f"refused as {seen}, the address nginx saw"
