"""The gateway and the publisher on every REDIS_URL form, as real processes.

A Redis they cannot use until a setting changes (a CA that does not sign the
server's certificate, a refused password, an ACL user lacking a permission, a
Sentinel master name nobody knows) stops each at start with one line naming the
setting, no password and no traceback, exit status non-zero: not a retry loop.
A Redis that is only unreachable is retried. Over ``rediss://`` with the
fixture's CA both work end to end.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectome_sse.localrun.gateway import GatewayProcess
from connectome_sse.localrun.ports import free_port
from connectome_sse.localrun.processes import ManagedProcess, console_script
from connectome_sse.localrun.redis_sentinel import SentinelCluster
from connectome_sse.localrun.redis_server import RedisServer
from connectome_sse.localrun.sse_clients import open_streams
from connectome_sse.localrun.wait import until, wait_for
from tests.support.redis_acl import RULES, make_user
from tests.support.redis_tls import TlsRedisServer

SECRET = "s3cret-pw"


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedisServer]:
    server = TlsRedisServer(tmp_path_factory.mktemp("tls-redis")).start()
    yield server
    server.stop()


def gateway(env: dict[str, str], log: Path) -> ManagedProcess:
    return ManagedProcess(
        console_script("sse-gateway", "--port", str(free_port())), log, env=env
    ).start()


def publisher(env: dict[str, str], log: Path) -> ManagedProcess:
    return ManagedProcess(console_script("health-publisher"), log, env=env).start()


def stopped_with_one_line(process: ManagedProcess, *expected: str) -> str:
    """The process exits non-zero by itself; its one error line names the setting."""
    code = process.wait(timeout=30)
    assert code != 0, process.log()
    text = process.log()
    errors = [line for line in text.splitlines() if "cannot start" in line]
    assert len(errors) == 1, text
    for part in expected:
        assert part in errors[0], text
    assert "Traceback" not in text and SECRET not in text, text
    return errors[0]


@pytest.mark.parametrize("start", [gateway, publisher], ids=["gateway", "publisher"])
def test_wrong_ca_stops_at_start(tls_redis: TlsRedisServer, tmp_path: Path, start: object) -> None:
    assert callable(start)
    process = start(tls_redis.env(ca=tls_redis.files.other_ca), tmp_path / "p.log")
    stopped_with_one_line(process, "REDIS_TLS_CA_FILE", "does not verify")


@pytest.mark.parametrize("start", [gateway, publisher], ids=["gateway", "publisher"])
def test_refused_password_stops_at_start(
    redis_server: RedisServer, tmp_path: Path, start: object
) -> None:
    assert callable(start)
    with redis_server.client() as admin:
        make_user(admin, "someone", "right-password", "gateway")
    url = f"redis://someone:{SECRET}@127.0.0.1:{redis_server.port}/0"
    process = start({"REDIS_URL": url}, tmp_path / "p.log")
    stopped_with_one_line(process, "REDIS_URL", "refused the user or password")


@pytest.mark.parametrize("start", [gateway, publisher], ids=["gateway", "publisher"])
def test_acl_user_without_ping_stops_at_start(
    redis_server: RedisServer, tmp_path: Path, start: object
) -> None:
    assert callable(start)
    with redis_server.client() as admin:
        make_user(admin, "noping", SECRET, tuple(r for r in RULES["publisher"] if r != "+ping"))
    url = f"redis://noping:{SECRET}@127.0.0.1:{redis_server.port}/0"
    process = start({"REDIS_URL": url}, tmp_path / "p.log")
    stopped_with_one_line(process, "REDIS_URL", "'noping' lacks a permission", "ping")


def test_publisher_lacking_a_scripting_permission_stops_with_one_line(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    # PING passes, the first lease script does not: still before any step worked.
    rule = tuple(r for r in RULES["publisher"] if r not in ("+eval", "+evalsha"))
    with redis_server.client() as admin:
        make_user(admin, "noeval", SECRET, rule)
    url = f"redis://noeval:{SECRET}@127.0.0.1:{redis_server.port}/0"
    process = publisher({"REDIS_URL": url}, tmp_path / "p.log")
    stopped_with_one_line(process, "REDIS_URL", "'noeval' lacks a permission")


@pytest.mark.parametrize("start", [gateway, publisher], ids=["gateway", "publisher"])
def test_unknown_sentinel_master_stops_at_start(tmp_path: Path, start: object) -> None:
    assert callable(start)
    cluster = SentinelCluster(tmp_path / "sentinel").start()
    try:
        process = start({"REDIS_URL": cluster.url_for("nosuchmaster")}, tmp_path / "p.log")
        stopped_with_one_line(process, "REDIS_URL", "know no master named 'nosuchmaster'")
    finally:
        cluster.stop()


@pytest.mark.parametrize("start", [gateway, publisher], ids=["gateway", "publisher"])
def test_an_unreachable_redis_is_retried_not_fatal(tmp_path: Path, start: object) -> None:
    assert callable(start)
    url = f"redis://127.0.0.1:{free_port()}/0"
    process = start({"REDIS_URL": url}, tmp_path / "p.log")
    try:
        wait_for(
            lambda: (
                re.search(r"redis (lost|unavailable)|cannot reach Redis yet", process.log())
                is not None
            ),
            timeout=20,
            what="a retry line",
        )
        assert process.alive(), process.log()
        assert "cannot start" not in process.log()
    finally:
        process.stop()


async def test_gateway_and_publisher_over_rediss(tls_redis: TlsRedisServer, tmp_path: Path) -> None:
    env = tls_redis.env()
    pub = publisher({**env, "HEALTH_INTERVAL": "0.5"}, tmp_path / "publisher.log")
    gw = GatewayProcess(env["REDIS_URL"], tmp_path / "gateway.log", env=env)
    try:
        gw.start()
        gw.wait_ready()
        async with open_streams(gw.url + "/api/sse", 1) as (client,):
            await until(
                lambda: any(
                    json.loads(d).get("status", {}).get("state")
                    for d in client.of("connectome_health")
                ),
                timeout=20,
                what="health over rediss://",
            )
        assert "rediss://" in gw.log() and "rediss://" in pub.log()
    finally:
        gw.stop()
        pub.stop()
