"""`connectome-sse publish` over ``rediss://`` (real TLS redis-server) and as minimal ACL users."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from connectome_sse.localrun.processes import console_script
from connectome_sse.localrun.redis_server import RedisServer
from tests.support.redis_acl import RULES, make_user
from tests.support.redis_tls import TlsRedisServer


def publish(
    env: dict[str, str], event: str = "tls_check", data: str = "hello"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        console_script("connectome-sse", "publish", event, data),
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **env},
    )


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedisServer]:
    server = TlsRedisServer(tmp_path_factory.mktemp("tls-redis")).start()
    yield server
    server.stop()


def test_publish_over_rediss_with_the_fixture_ca_and_client_cert(tls_redis: TlsRedisServer) -> None:
    done = publish(tls_redis.env())
    assert done.returncode == 0, done.stderr
    assert "0 subscribers on sse:tls_check" in done.stdout
    with tls_redis.admin_client() as admin:
        assert admin.get("sse:last:tls_check") == b"hello"


def test_wrong_ca_stops_at_start_with_one_line(tls_redis: TlsRedisServer) -> None:
    done = publish(tls_redis.env(ca=tls_redis.files.other_ca))
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    line = done.stderr.strip()
    assert line.startswith("connectome-sse publish: REDIS_TLS_CA_FILE: the TLS certificate of")
    assert "does not verify" in line and "Traceback" not in line


def test_system_ca_store_does_not_trust_the_fixture_ca(tls_redis: TlsRedisServer) -> None:
    env = tls_redis.env()
    del env["REDIS_TLS_CA_FILE"]
    done = publish(env)
    assert done.returncode == 1
    assert "does not verify" in done.stderr and "system's CA store" in done.stderr


def test_missing_client_certificate_is_one_line(tls_redis: TlsRedisServer) -> None:
    done = publish(tls_redis.env(client_cert=False))
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    assert "connectome-sse publish: " in done.stderr and "Traceback" not in done.stderr


def test_unreadable_ca_file_is_a_bad_setting(tls_redis: TlsRedisServer, tmp_path: Path) -> None:
    done = publish(tls_redis.env(ca=tmp_path / "missing.pem"))
    assert done.returncode == 2
    assert done.stderr.startswith("connectome-sse publish: REDIS_TLS_CA_FILE: ")


def test_publish_as_its_minimal_acl_user(redis_server: RedisServer) -> None:
    with redis_server.client() as admin:
        make_user(admin, "cli-pub", "s3cret-pw", "cli_publish")
    url = f"redis://cli-pub:s3cret-pw@127.0.0.1:{redis_server.port}/0"
    done = publish({"REDIS_URL": url})
    assert done.returncode == 0, done.stderr
    with redis_server.client() as admin:
        assert admin.get("sse:last:tls_check") == b"hello"


def test_acl_user_lacking_publish_gets_one_line_and_nothing_is_written(
    redis_server: RedisServer,
) -> None:
    rule = tuple(t for t in RULES["cli_publish"] if t != "+publish")
    with redis_server.client() as admin:
        make_user(admin, "no-pub", "s3cret-pw", rule)
    url = f"redis://no-pub:s3cret-pw@127.0.0.1:{redis_server.port}/0"
    done = publish({"REDIS_URL": url})
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    line = done.stderr.strip()
    assert "the ACL user 'no-pub' lacks a permission" in line
    assert "publish" in line and "s3cret-pw" not in line and "Traceback" not in line
    with redis_server.client() as admin:
        # The script checks every permission before its first write: nothing half-done.
        assert admin.keys("*") == []


def test_wrong_password_is_one_line_without_it(redis_server: RedisServer) -> None:
    with redis_server.client() as admin:
        make_user(admin, "cli-pub", "s3cret-pw", "cli_publish")
    url = f"redis://cli-pub:not-it@127.0.0.1:{redis_server.port}/0"
    done = publish({"REDIS_URL": url})
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    assert "refused the user or password" in done.stderr and "not-it" not in done.stderr


def test_publish_over_a_unix_socket_with_the_password_as_a_query(tmp_path: Path) -> None:
    sock = tmp_path / "redis.sock"
    server = RedisServer(
        tmp_path / "unix-redis",
        extra_args=("--unixsocket", str(sock), "--unixsocketperm", "700", "--requirepass", "pw1"),
    ).start()
    try:
        done = publish({"REDIS_URL": f"unix://{sock}?db=2&password=pw1"})
        assert done.returncode == 0, done.stderr
        with redis.Redis(unix_socket_path=str(sock), password="pw1", db=2) as client:
            assert client.get("sse:last:tls_check") == b"hello"
        wrong = publish({"REDIS_URL": f"unix://{sock}?password=nope"})
        assert wrong.returncode == 1 and "refused the user or password" in wrong.stderr
        assert "nope" not in wrong.stderr
    finally:
        server.stop()
