"""Fixtures shared by every test layer."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from connectome_sse.localrun.gateway import GatewayProcess
from connectome_sse.localrun.redis_sentinel import SentinelCluster
from connectome_sse.localrun.redis_server import RedisServer
from tests.support import docker_engine

StartGateway = Callable[..., GatewayProcess]
COMPOSE_DEPLOYMENTS = {
    Path(__file__).parent / "e2e" / name for name in ("test_compose.py", "test_compose_sentinel.py")
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The compose deployments' tests run last, and what they need (a Docker engine, a
    base image, three image builds: minutes on a new machine, mostly downloads) is made
    in the background from now on, while every other test runs. (Under pytest-xdist
    every worker collects, so every worker starts it; they take turns, see
    ``docker_engine.prepare``.)"""
    deployment = [item for item in items if item.path in COMPOSE_DEPLOYMENTS]
    if not deployment:
        return
    items[:] = [item for item in items if item.path not in COMPOSE_DEPLOYMENTS] + deployment
    if not config.option.collectonly:
        docker_engine.prepare_in_background()


@pytest.fixture(scope="session")
def redis_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session; tests that do not kill it share it."""
    server = RedisServer(tmp_path_factory.mktemp("redis-session")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_server(redis_session: RedisServer) -> RedisServer:
    """The shared real redis-server, emptied for this test."""
    redis_session.flush()
    return redis_session


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server of this test alone, so the test may kill and restart it."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[SentinelCluster]:
    """A master, a replica and three sentinels of this test alone (``redis+sentinel://``)."""
    cluster = SentinelCluster(tmp_path / "sentinel").start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[StartGateway]:
    """``start_gateway(redis_url, env={...}, args=(...))`` starts a real gateway; all stop after."""
    started: list[GatewayProcess] = []

    def start(redis_url: str, **kwargs: object) -> GatewayProcess:
        log = tmp_path / f"gateway-{len(started)}.log"
        gateway = GatewayProcess(redis_url, log, **kwargs)  # type: ignore[arg-type]
        started.append(gateway)
        gateway.start()
        return gateway

    yield start
    for gateway in started:
        gateway.stop()
