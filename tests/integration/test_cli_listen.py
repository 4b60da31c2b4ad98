"""`connectome-sse listen` against a real gateway and Redis: lines, filter, reconnect, errors."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from connectome_core.payload import example_health_payload
from connectome_core.publishing import publish_event
from connectome_sse.localrun.gateway import GatewayProcess
from connectome_sse.localrun.ports import free_port
from connectome_sse.localrun.processes import ManagedProcess, console_script
from connectome_sse.localrun.redis_server import RedisServer
from connectome_sse.localrun.wait import wait_for
from tests.support.listen import listen, stopped_at_exit

RED_ERROR = "\x1b[1m\x1b[31mERROR"


@pytest.fixture
def gateway(tmp_path: Path, redis_server: RedisServer) -> Iterator[GatewayProcess]:
    gateway = GatewayProcess(
        redis_server.url,
        tmp_path / "gateway.log",
        args=("--ping-interval", "1", "--retry-ms", "300"),
    )
    gateway.start()
    gateway.wait_ready()
    yield gateway
    gateway.stop()


@pytest.fixture
def listeners() -> Iterator[list[ManagedProcess]]:
    with stopped_at_exit() as started:
        yield started


def publish(redis_url: str, event: str, data: str) -> None:
    async def go() -> None:
        client = aioredis.Redis.from_url(redis_url)
        try:
            await publish_event(client, event, data)
        finally:
            await client.aclose()

    asyncio.run(go())


def health(state: str, note: str) -> str:
    payload = json.loads(example_health_payload(ts=1.0, state="OK").to_json())
    payload["status"] = {"state": state, "score": 0.0, "notes": [note]}
    return json.dumps(payload)


def test_snapshot_then_live_events_one_readable_line_each(
    tmp_path: Path,
    redis_server: RedisServer,
    gateway: GatewayProcess,
    listeners: list[ManagedProcess],
) -> None:
    publish(redis_server.url, "connectome_health", health("ERROR", "snapshot note"))
    proc = listen(tmp_path, listeners, gateway.url, "--color", "always")
    wait_for(lambda: "snapshot note" in proc.log(), timeout=30, what="the snapshot line")
    publish(redis_server.url, "connectome_health", health("OK", "live note"))
    publish(redis_server.url, "other", '{ "k" : 1 }')
    wait_for(lambda: '{"k":1}' in proc.log(), timeout=30, what="the other event")
    lines = proc.log().splitlines()
    snapshot = next(line for line in lines if "snapshot note" in line)
    assert RED_ERROR in snapshot and "connectome_health" in snapshot and "score=0.00" in snapshot
    assert any("live note" in line and "\x1b[32mOK" in line for line in lines)
    wait_for(lambda: " ping " in proc.log(), timeout=30, what="a ping line")
    assert any(" ping " in line and "redis=" in line for line in proc.log().splitlines())


def test_events_filter_and_json_lines(
    tmp_path: Path,
    redis_server: RedisServer,
    gateway: GatewayProcess,
    listeners: list[ManagedProcess],
) -> None:
    proc = listen(tmp_path, listeners, gateway.url, "--events", "other", "--json")
    publish(redis_server.url, "connectome_health", health("WARN", "filtered out"))
    publish(redis_server.url, "other", "a\u2028b")
    publish(redis_server.url, "other", "last")
    wait_for(lambda: '"last"' in proc.log(), timeout=30, what="the last event")
    records = [json.loads(line) for line in proc.log().split("\n") if line.startswith("{")]
    others = [r["data"] for r in records if r["event"] == "other"]
    assert others == ["a\u2028b", "last"]
    assert all(r["event"] in ("other", "ping") for r in records)
    assert "filtered out" not in proc.log()


def test_reconnects_after_the_gateway_restarts(
    tmp_path: Path,
    redis_server: RedisServer,
    gateway: GatewayProcess,
    listeners: list[ManagedProcess],
) -> None:
    proc = listen(tmp_path, listeners, gateway.url, "--events", "other", "--json")
    gateway.stop()
    wait_for(lambda: "reconnecting in" in proc.log(), timeout=30, what="listen to notice")
    replacement = GatewayProcess(redis_server.url, tmp_path / "gateway-2.log", port=gateway.port)
    try:
        replacement.start()
        replacement.wait_ready()
        wait_for(
            lambda: proc.log().count("connected to") >= 2, timeout=60, what="listen to reconnect"
        )
        publish(redis_server.url, "other", "after restart")
        wait_for(lambda: "after restart" in proc.log(), timeout=30, what="an event after restart")
        assert proc.alive()
    finally:
        replacement.stop()


def run_listen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        console_script("connectome-sse", "listen", *args),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_unreachable_gateway_is_one_line_exit_1() -> None:
    done = run_listen(f"http://127.0.0.1:{free_port()}")
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("connectome-sse listen: cannot read http://127.0.0.1:")
    assert "cannot connect" in done.stderr


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/api/sse?events=bad%20name", "answered 400: "),
        ("/healthz", "is not an event stream"),
    ],
)
def test_refused_streams_are_one_line_exit_1(
    gateway: GatewayProcess, path: str, message: str
) -> None:
    done = run_listen(gateway.url + path)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr


def test_ctrl_c_ends_listen(
    tmp_path: Path, gateway: GatewayProcess, listeners: list[ManagedProcess]
) -> None:
    proc = listen(tmp_path, listeners, gateway.url)
    proc.signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    assert "Traceback" not in proc.log()
