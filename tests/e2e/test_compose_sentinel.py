"""`docker-compose.sentinel.yml` for real: the compose stack on a master, a replica and
three sentinels, and a failover under open streams.

The same engine, images and helpers as tests/e2e/test_compose.py (this module also
runs at the end of the session, see tests/conftest.py). Through nginx only: a
stream gets demo health; ``docker kill`` of the master; the sentinels promote the
replica; the same stream, never reopened, gets fresh health from the new master
within 5 s of the switch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest
from httpx_sse import aconnect_sse

from connectome_core.payload import parse_health_payload
from connectome_sse.localrun.browser import HEALTH_EVENT
from connectome_sse.localrun.ports import free_port
from connectome_sse.localrun.wait import async_wait_for
from tests.support.compose import SENTINEL_COMPOSE_FILE, ComposeProject
from tests.support.docker_engine import COMPOSE_FILE, prepared

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

MASTER_NAME = "connectome"  # docker-compose.sentinel.yml's `sentinel monitor` name
SWITCH_SLACK_S = 5.0  # health again within 5 s of the sentinels' switch
WAIT_S = 90.0  # deadlines for waiting only, never a pass/fail criterion


@pytest.fixture(scope="module")
def project() -> Iterator[tuple[ComposeProject, int]]:
    ready = prepared()  # usually made in the background meanwhile (tests/conftest.py)
    port = free_port()
    project = ComposeProject(
        {
            "BASE_IMAGE": ready.base_image,
            "NGINX_ADDRESS": "127.0.0.1",
            "NGINX_PORT": str(port),
            "NGINX_TLS_PORT": str(free_port()),
        },
        profiles=["demo"],
        files=[COMPOSE_FILE, SENTINEL_COMPOSE_FILE],
    )
    try:
        project.up()
        project.wait_healthy("gateway", 3, timeout=WAIT_S)
        project.wait_healthy("nginx", 1, timeout=WAIT_S)
        yield project, port
    finally:
        logs = project.logs()
        project.down()
        leftovers = project.leftovers()
        if any(leftovers.values()):
            print(logs)
        assert leftovers == {"containers": [], "networks": [], "volumes": []}, leftovers


def master_named_by_sentinels(project: ComposeProject) -> str:
    [sentinel] = project.containers("sentinel-1")
    reply = project.exec(
        sentinel.name,
        "redis-cli", "-p", "26379", "sentinel", "get-master-addr-by-name", MASTER_NAME,
    )  # fmt: skip
    return reply.split()[0] if reply.split() else ""


async def test_a_master_killed_under_open_streams_fails_over_and_health_flows_on(
    project: tuple[ComposeProject, int],
) -> None:
    compose, port = project
    assert await asyncio.to_thread(master_named_by_sentinels, compose) == "redis"
    [master] = compose.containers("redis")
    timeout = httpx.Timeout(10, read=30)
    async with (
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=timeout) as client,
        aconnect_sse(client, "GET", f"/api/sse?events={HEALTH_EVENT}") as source,
    ):
        events = source.aiter_sse()

        async def next_health_ts() -> float:
            event = await anext(events)
            while event.event != HEALTH_EVENT:
                event = await anext(events)
            return parse_health_payload(event.data).ts

        async with asyncio.timeout(WAIT_S):
            await next_health_ts()  # the snapshot
            await next_health_ts()  # a live one, through the first master
            killed_wall = time.time()
            await asyncio.to_thread(compose.run_docker, "kill", master.id)
            killed_at = time.monotonic()

            switched_at: list[float] = []

            async def switched() -> bool:
                named = await asyncio.to_thread(master_named_by_sentinels, compose)
                if named not in ("redis", "") and not switched_at:
                    switched_at.append(time.monotonic())
                return bool(switched_at)

            watch = asyncio.create_task(
                async_wait_for(switched, timeout=WAIT_S, interval=0.25, what="the failover")
            )
            # Anything published before the kill may still be in flight.
            while await next_health_ts() <= killed_wall:
                pass
            fresh_at = time.monotonic()
            await watch
    new_master = await asyncio.to_thread(master_named_by_sentinels, compose)
    assert new_master == "redis-replica", new_master
    # The same stream, never reopened: every gateway followed the sentinels.
    print(
        f"compose sentinel: switch {switched_at[0] - killed_at:.2f}s, "
        f"fresh health {fresh_at - killed_at:.2f}s after the kill"
    )
    assert fresh_at <= switched_at[0] + SWITCH_SLACK_S
