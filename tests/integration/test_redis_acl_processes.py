"""Every process as exactly its minimal ACL user (tests/support/redis_acl.py), end to end.

demo-engine -> signals -> health-publisher -> sse:connectome_health -> sse-gateway ->
a real SSE client; ``connectome-sse publish`` (one event, and ``--lines``) and
``redis-cli FCALL sse_publish`` -> the same client, each through the event log. Each process
logs in as its own user with the README's rule and nothing more. A gateway with
authentication on, as its own rule, mints and redeems tickets and reads snapshots.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

import httpx
import jwt
import pytest
import redis

from connectome_sse.localrun.gateway import GatewayProcess
from connectome_sse.localrun.processes import ManagedProcess, console_script
from connectome_sse.localrun.redis_server import RedisServer
from connectome_sse.localrun.sse_clients import open_streams
from connectome_sse.localrun.wait import until
from tests.support.publisher import publisher_process
from tests.support.raw_stream import RawStream
from tests.support.redis_acl import RULES, acl_line, make_user

KEY_PATTERNS = {
    "sse:last:*",
    "sse:log",
    "sse:log:last",
    "sse:ticket:*",
    "connectome:signals",
    "connectome:publisher:*",
}


def user_url(server: RedisServer, user: str) -> str:
    return f"redis://{user}:pw-{user}@127.0.0.1:{server.port}/0"


async def test_every_process_runs_as_its_minimal_acl_user(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    with redis_server.client() as admin:
        for name in ("gateway", "publisher", "demo_engine", "cli_publish", "fcall_publish"):
            make_user(admin, f"acl-{name}", f"pw-acl-{name}", name)
    gateway = GatewayProcess(user_url(redis_server, "acl-gateway"), tmp_path / "gateway.log")
    publisher = publisher_process(
        redis_server,
        tmp_path / "publisher.log",
        env={"REDIS_URL": user_url(redis_server, "acl-publisher"), "HEALTH_INTERVAL": "0.5"},
    )
    engine = ManagedProcess(
        console_script("connectome-sse", "demo-engine", "--tick-rate", "5"),
        tmp_path / "engine.log",
        env={"REDIS_URL": user_url(redis_server, "acl-demo_engine")},
    ).start()
    try:
        gateway.start()
        gateway.wait_ready()
        async with open_streams(gateway.url + "/api/sse", 1) as (client,):
            await until(
                lambda: any(
                    json.loads(d).get("runner", {}).get("tick", 0) > 0
                    for d in client.of("connectome_health")
                ),
                timeout=30,
                what="health computed from the engine's signals, through the gateway",
            )
            done = await asyncio.to_thread(
                subprocess.run,
                console_script("connectome-sse", "publish", "acl_check", "as-cli-user"),
                capture_output=True,
                text=True,
                timeout=60,
                env={
                    "PATH": "/usr/bin:/bin",
                    "REDIS_URL": user_url(redis_server, "acl-cli_publish"),
                },
            )
            assert done.returncode == 0, done.stderr
            await until(lambda: client.of("acl_check") == ["as-cli-user"], what="the CLI event")
            await publish_lines_and_fcall(redis_server)
            await until(lambda: client.of("acl_lines") == ["a", "b"], what="the CLI's lines")
            await until(lambda: client.of("acl_fcall") == ["via FCALL"], what="the FCALL event")
        with redis_server.client() as admin:
            # Every event went through the log, each writer as its own user; the
            # publisher (as its user) loaded the function the FCALL user called.
            logged = {f[b"event"] for _, f in admin.xrange("sse:log")}
            assert {b"connectome_health", b"acl_check", b"acl_lines", b"acl_fcall"} <= logged
            assert admin.function_list(library="connectome_sse")
        for process in (gateway, publisher, engine):
            assert process.alive(), process.log()
            assert "NOPERM" not in process.log() and "no permissions" not in process.log()
        assert "could not load the function library" not in publisher.log()
    finally:
        for process in (engine, publisher, gateway):
            process.stop()


async def publish_lines_and_fcall(server: RedisServer) -> None:
    """``publish --lines`` as the CLI's user, and ``FCALL sse_publish`` as another program's."""
    lines = await asyncio.to_thread(
        subprocess.run,
        console_script("connectome-sse", "publish", "--lines", "acl_lines"),
        input="a\nb\n",
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "REDIS_URL": user_url(server, "acl-cli_publish")},
    )
    assert lines.returncode == 0, lines.stderr
    as_user = ["redis-cli", "-u", user_url(server, "acl-fcall_publish"), "--no-auth-warning"]
    fcall = await asyncio.to_thread(
        subprocess.run,
        [*as_user, "FCALL", "sse_publish", "0", "acl_fcall", "via FCALL"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert fcall.returncode == 0 and "ERR" not in fcall.stdout, fcall.stdout + fcall.stderr


def test_a_gateway_with_auth_on_runs_as_its_minimal_acl_user(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    secret = "acl-auth-secret-0123456789abcdef-0123"
    with redis_server.client() as admin:
        make_user(admin, "acl-gateway_auth", "pw-acl-gateway_auth", "gateway_auth")
        admin.set("sse:last:acl_snapshot", "from-before")
    gateway = GatewayProcess(
        user_url(redis_server, "acl-gateway_auth"),
        tmp_path / "gateway.log",
        env={"SSE_AUTH_SECRET": secret},
    )
    try:
        gateway.start()
        gateway.wait_ready()
        bearer = jwt.encode({"exp": time.time() + 60}, secret, algorithm="HS256")
        minted = httpx.post(
            gateway.url + "/api/sse/ticket", headers={"Authorization": f"Bearer {bearer}"}
        )
        assert minted.status_code == 201, minted.text
        ticket = minted.json()["ticket"]
        head = httpx.head(f"{gateway.url}/api/sse?ticket={ticket}")  # reads, leaves it
        assert head.status_code == 200, head.text
        stream = RawStream(gateway.port, f"/api/sse?events=acl_snapshot&ticket={ticket}")
        assert stream.status == 200
        stream.read_until(lambda s: b"data: from-before" in s.body, what="the snapshot")
        stream.close()
        replay = RawStream(gateway.port, f"/api/sse?ticket={ticket}")
        assert replay.status == 401  # GETDEL took it
        replay.close()
        assert gateway.alive(), gateway.log()
        assert "NOPERM" not in gateway.log() and "no permissions" not in gateway.log()
    finally:
        gateway.stop()
    # Writing is for tickets only: the snapshots stay read only for this user.
    user = redis.Redis(
        port=redis_server.port, username="acl-gateway_auth", password="pw-acl-gateway_auth"
    )
    with user, pytest.raises(redis.exceptions.NoPermissionError):
        user.set("sse:last:acl_snapshot", "forged")


def test_rules_read_as_acl_setuser_lines() -> None:
    line = acl_line("cli_publish", "secret")
    assert (
        line == "on >secret resetkeys resetchannels -@all +eval +xrange +xrevrange +xadd +xtrim "
        "+time +hset +set "
        "+publish ~sse:log ~sse:log:last ~sse:last:* &sse:*"
    )


def test_no_rule_names_a_channel_as_a_key() -> None:
    # Scripts take channels as ARGV: a key rule on sse:<event> would let a writer touch a
    # key nobody owns.
    for rule in RULES.values():
        keys = [t for t in rule if t.startswith(("~", "%"))]
        assert all(k.split("~", 1)[1] in KEY_PATTERNS for k in keys), keys
