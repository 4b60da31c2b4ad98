"""The real ``sse-gateway`` process: shutdown, hostile requests, slow clients, secrets, workers."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

from connectome_sse.localrun.gateway import gateway_subscriptions
from connectome_sse.localrun.processes import console_script
from connectome_sse.localrun.redis_server import RedisServer
from connectome_sse.localrun.sse_clients import open_streams
from connectome_sse.localrun.wait import until, wait_for
from tests.conftest import StartGateway
from tests.support.gateway_workers import two_workers
from tests.support.up_process import alive, cmdline, descendants


async def test_sigterm_ends_open_streams_and_exits_within_grace(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    grace = 5.0
    gateway = start_gateway(
        redis_server.url, env={"SSE_SHUTDOWN_GRACE": str(grace), "SSE_PING_INTERVAL": "60"}
    ).wait_ready()
    async with open_streams(gateway.url + "/api/sse", 20) as clients:
        await until(lambda: gateway.metric("sse_open_streams") == 20, what="streams open")
        sent = time.monotonic()
        gateway.signal(signal.SIGTERM)
        await until(lambda: all(c.ended for c in clients), timeout=grace, what="streams ended")
        code = await asyncio.to_thread(gateway.wait, grace)
        elapsed = time.monotonic() - sent
    assert elapsed < grace
    assert code in (0, -signal.SIGTERM)
    # Each stream was told a jittered retry around SSE_RETRY_MS before it ended.
    retries = {c.retry_ms for c in clients}
    assert all(r is not None and 1500 <= r <= 4500 for r in retries)
    assert len(retries) > 1
    assert "draining: ended 20 open streams" in gateway.log()


def test_bad_setting_stops_the_process_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        console_script("sse-gateway"),
        env={"PATH": "/usr/bin:/bin", "SSE_MAX_CONNECTIONS": "lots"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "SSE_MAX_CONNECTIONS" in lines[0]


def _raw_request(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        chunks = []
        while chunk := sock.recv(65536):  # the server closes the connection
            chunks.append(chunk)
        return b"".join(chunks)


def test_garbage_and_oversized_requests_get_4xx_and_the_gateway_serves_on(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(redis_server.url).wait_ready()
    garbage = _raw_request(gateway.port, b"\x16\x03\x01 NOT HTTP AT ALL\r\n\r\n")
    assert garbage.startswith(b"HTTP/1.1 400 ")
    assert b'"error"' in garbage
    big = b"GET /api/sse HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n"
    oversized = _raw_request(gateway.port, big)
    assert oversized.startswith(b"HTTP/1.1 431 ")
    # `Connection: close`, or the read would last until uvicorn's keep-alive timeout.
    just_under = (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Ok: "
        + b"a" * 8_000
        + b"\r\n\r\n"
    )
    assert _raw_request(gateway.port, just_under).startswith(b"HTTP/1.1 200 ")
    assert gateway.status("/healthz") == 200
    assert gateway.alive()


async def test_a_client_that_stops_reading_is_cut_and_others_get_everything(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(redis_server.url, env={"SSE_CLIENT_BUFFER": "8"}).wait_ready()
    stuck = socket.create_connection(("127.0.0.1", gateway.port))
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.sendall(b"GET /api/sse?events=big HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        async with open_streams(gateway.url + "/api/sse?events=big", 1) as (reader,):
            await until(lambda: gateway.metric("sse_open_streams") == 2, what="both streams open")
            redis = redis_server.client()
            payload = "x" * 65536
            for seq in range(200):
                redis.publish("sse:big", f"{seq} {payload}")
                if seq % 20 == 0:
                    await asyncio.sleep(0.01)
            await until(lambda: len(reader.of("big")) == 200, timeout=30, what="all 200 at reader")
            assert [int(d.split(" ", 1)[0]) for d in reader.of("big")] == list(range(200))
            assert gateway.metric("sse_slow_clients_cut_total") == 1
            await until(lambda: gateway.metric("sse_open_streams") == 1, what="stuck one closed")
    finally:
        stuck.close()
    assert "reason=cut" in gateway.log()


def test_redis_password_never_appears_in_logs(tmp_path: Path, start_gateway: StartGateway) -> None:
    secret = "s3cret-Pa55"
    redis_server = RedisServer(tmp_path / "redis", extra_args=("--requirepass", secret)).start()
    try:
        url = f"redis://:{secret}@127.0.0.1:{redis_server.port}/0"
        good = start_gateway(url).wait_ready()
        # A refused password is a setting to fix: the gateway stops at start with one
        # line, the password masked, rather than retrying for ever.
        bad = start_gateway(url.replace(secret, secret + "-wrong"))
        assert bad.wait(timeout=20) != 0
        assert "cannot start: REDIS_URL: redis://:***@" in bad.log()
        assert "refused the user or password" in bad.log()
        assert good.status("/readyz") == 200
        for gateway in (good, bad):
            gateway.stop()
            assert secret not in gateway.log()
            assert "***" in gateway.log()
    finally:
        redis_server.stop()


async def test_two_workers_share_the_port_each_with_one_subscription(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    # At debug every stream line goes out (none held back by the budget): this test
    # reads them.
    gateway = start_gateway(
        redis_server.url, args=("--workers", "2"), env={"SSE_LOG_LEVEL": "debug"}
    ).wait_ready()
    redis = redis_server.client()
    await until(lambda: len(gateway_subscriptions(redis)) == 2, what="one subscription per worker")
    async with open_streams(gateway.url + "/api/sse?events=w", 40) as clients:
        await until(lambda: gateway.metric("sse_open_streams") == 40, what="metrics add up")
        redis.publish("sse:w", "to-all")
        await until(lambda: all(c.of("w") == ["to-all"] for c in clients), what="delivery")
        pids = set(re.findall(r"\[(\d+)\] sse_gateway\.stream: stream opened", gateway.log()))
        assert len(pids) == 2, pids
    assert len(gateway_subscriptions(redis)) == 2
    assert gateway.status("/healthz") == 200


async def test_workers_drain_and_exit_when_their_supervisor_is_killed(
    redis_server: RedisServer, start_gateway: StartGateway, tmp_path: Path
) -> None:
    """kill -9 of the parent runs none of uvicorn's code: the kernel's parent-death signal does."""
    gateway = two_workers(start_gateway, redis_server.url, tmp_path)
    tree = descendants(gateway.pid)  # the two workers and multiprocessing's resource tracker
    assert len([pid for pid in tree if "spawn_main" in cmdline(pid)]) == 2, tree
    # Ready means one worker serves; both must be running before the supervisor dies.
    redis = redis_server.client()
    await until(lambda: len(gateway_subscriptions(redis)) == 2, what="both workers subscribed")
    async with open_streams(gateway.url + "/api/sse?events=w", 10) as clients:
        await until(lambda: gateway.metric("sse_open_streams") == 10, what="streams open")
        os.kill(gateway.pid, signal.SIGKILL)
        await until(lambda: all(c.ended for c in clients), timeout=15, what="streams drained")
    wait_for(lambda: not any(alive(pid) for pid in tree), timeout=15, what="workers gone")
    assert gateway.log().count("draining: ended") == 2, gateway.log()[-2000:]


def test_regression_a_port_in_use_ends_the_process(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        gateway = start_gateway(redis_server.url, port=holder.getsockname()[1])
        code = gateway.wait(timeout=20)
    assert code != 0
    assert "address already in use" in gateway.log()
