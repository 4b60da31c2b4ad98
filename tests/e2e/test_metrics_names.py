"""What ``/metrics`` looks like to a Prometheus user, with one worker and with several."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from prometheus_client import generate_latest

from connectome_sse.localrun.redis_server import RedisServer
from connectome_sse.localrun.wait import wait_for
from health_publisher.metrics import PublisherMetrics
from tests.conftest import StartGateway
from tests.support.gateway_workers import two_workers


def metric_names(text: str) -> set[str]:
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}


def helps(text: str) -> dict[str, str]:
    found = re.findall(r"^# HELP (\S+) (.*)$", text, flags=re.MULTILINE)
    return dict(found)


def test_one_worker_has_process_metrics_no_created_series_and_says_how_workers_combine(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(redis_server.url).wait_ready()
    text = httpx.get(gateway.url + "/metrics", timeout=5).text
    names = metric_names(text)
    assert "process_open_fds" in names and "process_resident_memory_bytes" in names
    assert not [n for n in names if n.endswith("_created")], names
    own = {n for n in names if not n.startswith("process_")}
    assert own and all(n.startswith("sse_") for n in own), own
    described = helps(text)
    assert "each message N times" in described["sse_events_relayed_total"]
    assert "summed" in described["sse_open_streams"]


def test_several_workers_give_the_same_series_and_process_metrics_per_worker(
    redis_server: RedisServer, start_gateway: StartGateway, tmp_path: Path
) -> None:
    gateway = two_workers(start_gateway, redis_server.url, tmp_path)

    def worker_pids() -> set[str]:
        text = httpx.get(gateway.url + "/metrics", timeout=5).text
        return set(re.findall(r'^process_open_fds\{pid="(\d+)"\}', text, flags=re.MULTILINE))

    wait_for(lambda: len(worker_pids()) == 2, what="process_open_fds of both workers")
    text = httpx.get(gateway.url + "/metrics", timeout=5).text
    names = metric_names(text)
    assert not [n for n in names if n.endswith("_created")], names


def test_publisher_metrics_share_one_prefix_and_include_process_metrics() -> None:
    text = generate_latest(PublisherMetrics().registry).decode()
    names = metric_names(text)
    assert "process_open_fds" in names
    assert not [n for n in names if n.endswith("_created")], names
    own = {n for n in names if not n.startswith("process_")}
    assert own and all(n.startswith("health_publisher_") for n in own), own
