"""Fixtures of the end-to-end layer: the scaled-out topology behind the project's nginx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from connectome_sse.localrun.redis_server import RedisServer
from connectome_sse.localrun.topology import Topology
from tests.support.topologies import running

# Short enough that a reconnect (retry) and a stale stream (ping) show within a test.
NGINX_TOPOLOGY_GATEWAY_ENV = {
    "SSE_RETRY_MS": "1000",
    "SSE_PING_INTERVAL": "5",
    "SSE_SHUTDOWN_GRACE": "2",
}
NGINX_TOPOLOGY_PUBLISHER_ENV = {"HEALTH_INTERVAL": "0.5", "PUBLISHER_LEASE_MS": "2000"}


@pytest.fixture
def nginx_topology(tmp_path: Path, redis_server: RedisServer) -> Iterator[Topology]:
    """Redis, two publishers, the demo engine, three gateways and nginx, all real processes."""
    topology = Topology(
        tmp_path / "topology",
        redis_server,
        gateways=3,
        publishers=2,
        engine=True,
        gateway_env=NGINX_TOPOLOGY_GATEWAY_ENV,
        publisher_env=NGINX_TOPOLOGY_PUBLISHER_ENV,
    )
    with running(topology):
        yield topology
