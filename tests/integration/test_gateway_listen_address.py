"""``sse-gateway`` on an address it cannot listen on: one line naming it, before anything starts."""

from __future__ import annotations

import socket
import subprocess

import pytest

from connectome_sse.localrun.processes import console_script
from connectome_sse.localrun.redis_server import RedisServer

pytestmark = pytest.mark.integration


def gateway(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        console_script("sse-gateway", *args),
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "REDIS_URL": redis_url},
    )


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_busy_port_is_one_line_naming_the_address(
    redis_server: RedisServer, workers: str
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = gateway(redis_server.url, "--port", str(port), "--workers", workers)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.strip() == (
        f"sse-gateway: cannot listen on 127.0.0.1:{port}: address already in use "
        "(choose another --port or SSE_PORT)"
    )


def test_a_host_that_does_not_resolve_is_named_as_such(redis_server: RedisServer) -> None:
    done = gateway(redis_server.url, "--host", "nosuchhost.invalid", "--port", "0")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("sse-gateway: cannot listen on nosuchhost.invalid:0: ")
    assert "does not resolve" in lines[0] and "--host or SSE_HOST" in lines[0]
