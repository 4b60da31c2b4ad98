"""``sse-gateway --workers 2`` after one worker is killed outright."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

from connectome_sse.localrun.gateway import gateway_subscriptions
from connectome_sse.localrun.redis_server import RedisServer
from connectome_sse.localrun.sse_clients import open_streams
from connectome_sse.localrun.wait import until
from tests.conftest import StartGateway
from tests.support.gateway_workers import two_workers


async def test_regression_a_killed_workers_gauges_leave_the_sum(
    redis_server: RedisServer, start_gateway: StartGateway, tmp_path: Path
) -> None:
    gateway = two_workers(start_gateway, redis_server.url, tmp_path, {"SSE_LOG_LEVEL": "debug"})
    redis = redis_server.client()
    await until(lambda: len(gateway_subscriptions(redis)) == 2, what="both workers subscribed")
    async with open_streams(gateway.url + "/api/sse?events=w", 40) as clients:
        await until(lambda: gateway.metric("sse_open_streams") == 40, what="streams open")
        opened = re.findall(r"\[(\d+)\] sse_gateway\.stream: stream opened", gateway.log())
        per_worker = {pid: opened.count(pid) for pid in set(opened)}
        assert len(per_worker) == 2, per_worker  # both workers hold streams
        victim = max(per_worker, key=lambda pid: per_worker[pid])
        os.kill(int(victim), signal.SIGKILL)
        await until(
            lambda: sum(c.ended for c in clients) == per_worker[victim],
            what="the killed worker's clients see their streams end",
        )
        survivors = 40 - per_worker[victim]
        await until(
            lambda: gateway.metric("sse_open_streams") == survivors,
            what=f"sse_open_streams back to the {survivors} streams still open",
        )
    await until(lambda: gateway.metric("sse_open_streams") == 0, what="every client gone: 0")
    # The supervisor replaces the worker; the gateway still relays through both.
    await until(lambda: len(gateway_subscriptions(redis)) == 2, what="replacement subscribed")
    assert gateway.metric("sse_redis_up") == 1
