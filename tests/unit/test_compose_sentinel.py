"""docker-compose.sentinel.yml on top of docker-compose.yml: valid, and every process on Sentinel.

``docker-compose config`` merges and validates the two files (no engine needed; a
machine without docker-compose gets it from scripts/docker-engine, never a skip);
the merged model must hold a master, a replica of it and three sentinels with a
quorum of two, and every process of the project on the sentinels' URL, each
waiting for the sentinels to be healthy. Every URL must parse as a Sentinel target.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from connectome_core.redis_target import parse_redis_url
from tests.support.compose import compose_command
from tests.support.docker_engine import provision_engine

ROOT = Path(__file__).resolve().parents[2]
SENTINELS = ("sentinel-1", "sentinel-2", "sentinel-3")


@pytest.fixture(scope="module")
def merged() -> dict[str, Any]:
    if shutil.which("docker-compose") is None:
        # Installs it (scripts/docker-engine, as the compose e2e test does) or fails loudly.
        provision_engine()
    done = subprocess.run(
        [
            *compose_command(),
            "-f",
            str(ROOT / "docker-compose.yml"),
            "-f",
            str(ROOT / "docker-compose.sentinel.yml"),
            "--profile",
            "demo",
            "config",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    model: dict[str, Any] = yaml.safe_load(done.stdout)
    return model


def test_master_replica_and_three_sentinels(merged: dict[str, Any]) -> None:
    services = merged["services"]
    replica = services["redis-replica"]["command"]
    assert replica[replica.index("--replicaof") + 1 :][:2] == ["redis", "6379"]
    for name in ("redis", "redis-replica"):
        command = services[name]["command"]
        assert command[command.index("--replica-announce-ip") + 1] == name
        assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    for name in SENTINELS:
        sentinel = services[name]
        script = "\n".join(sentinel["command"])
        assert "sentinel monitor connectome redis 6379 2" in script
        assert "--sentinel" in script
        assert sentinel["environment"]["SENTINEL_NAME"] == name


def test_every_process_is_on_the_sentinel_url(merged: dict[str, Any]) -> None:
    services = merged["services"]
    for name in ("publisher", "gateway", "demo-engine"):
        service = services[name]
        target = parse_redis_url(service["environment"]["REDIS_URL"])
        assert target.is_sentinel and target.master_name == "connectome"
        assert {f"{host}" for host, _port in target.addresses} == set(SENTINELS)
        for sentinel in SENTINELS:
            assert service["depends_on"][sentinel]["condition"] == "service_healthy"
