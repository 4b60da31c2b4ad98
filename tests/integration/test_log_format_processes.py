"""``LOG_FORMAT=json``: every process writes one strict JSON object per log line.

The gateway (with two workers, and one stream opened and closed), the
publisher and the demo engine, each a real process; a bad value is one line
naming the setting and exit status 2.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectome_sse.localrun.processes import ManagedProcess, console_script
from connectome_sse.localrun.redis_server import RedisServer
from connectome_sse.localrun.wait import wait_for
from tests.conftest import StartGateway

pytestmark = pytest.mark.integration

FIELDS = {"ts", "level", "logger", "message"}


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of ``text`` as a strict JSON object with the shared fields."""
    entries = []
    for line in text.splitlines():
        try:
            entry = json.loads(line, parse_constant=_no_constant)
        except ValueError as exc:
            raise AssertionError(f"not a JSON line ({exc}): {line!r}\nin:\n{text}") from None
        assert isinstance(entry, dict), line
        assert entry.keys() >= FIELDS, line
        entries.append(entry)
    assert entries, "no log line at all"
    return entries


def test_the_gateway_and_its_workers_log_json_including_a_stream(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(
        redis_server.url, env={"LOG_FORMAT": "json"}, args=("--workers", "2")
    ).wait_ready()
    with httpx.stream("GET", gateway.url + "/api/sse", timeout=10) as answer:
        assert answer.status_code == 200
        for line in answer.iter_lines():
            if line == "event: ping":
                break

    def closed() -> bool:
        return '"stream closed' in gateway.log()

    wait_for(closed, what="the stream's close line")
    gateway.stop()
    entries = json_lines(gateway.log())
    messages = [e["message"] for e in entries]
    assert any(m.startswith("stream opened") for m in messages), messages
    assert len({e["pid"] for e in entries}) >= 3, "the supervisor and both workers"
    assert {e["level"] for e in entries} <= {"debug", "info", "warning", "error"}


def test_the_publisher_logs_json(redis_server: RedisServer, tmp_path: Path) -> None:
    publisher = ManagedProcess(
        console_script("health-publisher"),
        tmp_path / "publisher.log",
        env={"REDIS_URL": redis_server.url, "LOG_FORMAT": "json"},
    ).start()
    try:
        wait_for(lambda: redis_server.client().get("sse:last:connectome_health"), what="health")
    finally:
        publisher.stop()
    entries = json_lines(publisher.log())
    assert any(e["logger"].startswith("health_publisher") for e in entries)


def test_the_demo_engine_logs_json(redis_server: RedisServer) -> None:
    done = subprocess.run(
        console_script("connectome-sse", "demo-engine", "--duration", "1", "--seed", "3"),
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "REDIS_URL": redis_server.url, "LOG_FORMAT": "json"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    json_lines(done.stderr)


@pytest.mark.parametrize(
    "argv",
    [
        ["sse-gateway"],
        ["health-publisher"],
        ["connectome-sse", "demo-engine"],
        ["connectome-sse", "up", "--no-demo"],
    ],
)
def test_a_bad_log_format_is_one_line_and_exit_2(argv: list[str]) -> None:
    done = subprocess.run(
        console_script(*argv),
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "LOG_FORMAT": "yaml"},
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "LOG_FORMAT" in lines[0] and "json" in lines[0], lines
