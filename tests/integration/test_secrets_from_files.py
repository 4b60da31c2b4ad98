"""Secrets reach every process from files or the environment, and no command line holds one.

``SSE_AUTH_SECRET_FILE`` and ``REDIS_PASSWORD_FILE`` against a real redis-server
that needs a password: the gateway (its workers re-read the files), the
publisher, ``publish`` and ``up`` (which hands them to its children through the
environment) all work, and neither the secret nor the password is in any of
their command lines (``/proc/<pid>/cmdline``, what ``ps`` shows every user) or
environments. A secret given as a flag is refused in one line, exit 2.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from connectome_core.contract import snapshot_key
from connectome_core.tokens import TokenVerifier
from connectome_sse.localrun.gateway import GatewayProcess
from connectome_sse.localrun.processes import ManagedProcess, console_script
from connectome_sse.localrun.redis_server import RedisServer
from connectome_sse.localrun.wait import wait_for
from tests.support.up_process import UpProcess, descendants

pytestmark = pytest.mark.integration

REDIS_PASSWORD = "Rp4/Hx8?Lm#Tq@Zw+k2"
AUTH_SECRET = "auth-secret-Nv6Qe3Yb9Wc2Xr5Tz8-0123456789"


@pytest.fixture(scope="module")
def locked_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(
        tmp_path_factory.mktemp("locked-redis"), extra_args=("--requirepass", REDIS_PASSWORD)
    ).start()
    yield server
    server.stop()


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    """The two secret files, as ``echo secret > file`` writes them."""
    auth, password = tmp_path / "auth-secret", tmp_path / "redis-password"
    auth.write_text(AUTH_SECRET + "\n")
    password.write_text(REDIS_PASSWORD + "\n")
    return {"SSE_AUTH_SECRET_FILE": str(auth), "REDIS_PASSWORD_FILE": str(password)}


def environ(**settings: str) -> dict[str, str]:
    ours = ("REDIS_", "SSE_", "HEALTH_", "PUBLISHER_")
    return {**{k: v for k, v in os.environ.items() if not k.startswith(ours)}, **settings}


def plain_url(server: RedisServer) -> str:
    return f"redis://127.0.0.1:{server.port}/0"  # no password: it comes from the file


def admin(server: RedisServer) -> redis.Redis:
    return redis.Redis(port=server.port, password=REDIS_PASSWORD, socket_timeout=5)


def proc_text(pid: int, name: str) -> str:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def assert_nowhere_in(pids: list[int]) -> None:
    """Neither secret in the command line or environment of any of ``pids``."""
    assert pids
    for pid in pids:
        for name in ("cmdline", "environ"):
            text = proc_text(pid, name)
            assert AUTH_SECRET not in text and REDIS_PASSWORD not in text, (pid, name, text)


def stream_status(base: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.stream("GET", f"{base}/api/sse", headers=headers, timeout=10) as response:
        return response.status_code


def test_gateway_workers_read_both_files(
    locked_redis: RedisServer, files: dict[str, str], tmp_path: Path
) -> None:
    gateway = GatewayProcess(plain_url(locked_redis), tmp_path / "gw.log", args=("--workers", "2"))
    gateway.env = {**environ(**files), "REDIS_URL": plain_url(locked_redis)}
    try:
        gateway.start()
        gateway.wait_ready(timeout=40)
        token = TokenVerifier(AUTH_SECRET.encode()).mint(ttl=60)
        # Fresh connections land on either worker: each must hold the secret.
        assert {stream_status(gateway.url, None) for _ in range(8)} == {401}
        assert {stream_status(gateway.url, token) for _ in range(8)} == {200}
        pids = [gateway.pid, *descendants(gateway.pid)]
        assert len(pids) >= 3, pids  # the supervisor and its two workers
        assert_nowhere_in(pids)
    finally:
        gateway.stop()
    assert AUTH_SECRET not in gateway.log() and "Rp4/" not in gateway.log()


def test_publisher_and_publish_read_the_password_file(
    locked_redis: RedisServer, files: dict[str, str], tmp_path: Path
) -> None:
    env = environ(REDIS_URL=plain_url(locked_redis), **files)
    done = subprocess.run(
        console_script("connectome-sse", "publish", "note", "from-a-file"),
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    publisher = ManagedProcess(console_script("health-publisher"), tmp_path / "pub.log", env=env)
    try:
        publisher.start()
        with admin(locked_redis) as client:
            assert client.get(snapshot_key("note")) == b"from-a-file"
            wait_for(
                lambda: client.exists(snapshot_key("connectome_health")),
                timeout=30,
                what="a health event from the publisher",
            )
        assert_nowhere_in([publisher.pid])
    finally:
        publisher.stop()


def test_up_hands_the_files_to_its_children_never_the_secrets(
    locked_redis: RedisServer, files: dict[str, str], tmp_path: Path
) -> None:
    # The password file as up's flag: it must still reach the children, by environment.
    up = UpProcess(
        tmp_path,
        "--port",
        "0",
        "--redis-password-file",
        files["REDIS_PASSWORD_FILE"],
        env={
            **environ(),
            "REDIS_URL": plain_url(locked_redis),
            "SSE_AUTH_SECRET_FILE": files["SSE_AUTH_SECRET_FILE"],
        },
    )
    try:
        up.start()
        banner = up.banner()
        assert stream_status(banner.url, None) == 401
        token = TokenVerifier(AUTH_SECRET.encode()).mint(ttl=60)
        assert stream_status(banner.url, token) == 200
        # The banner says auth is on, and where the token command reads the secret.
        assert "needs SSE_AUTH_SECRET_FILE in that shell" in up.log()
        tree = up.tree()
        assert len(tree) >= 3, tree  # gateway, publisher, demo engine
        assert_nowhere_in([up.pid, *tree])
    finally:
        up.kill_everything()


def test_up_with_its_own_redis_ignores_a_password_file(
    files: dict[str, str], tmp_path: Path
) -> None:
    up = UpProcess(tmp_path, "--port", "0", "--no-demo", env={**environ(), **files})
    try:
        up.start()
        banner = up.banner()
        assert stream_status(banner.url, None) == 401
        assert "ignoring REDIS_PASSWORD_FILE" in up.log()
        # The tools would send the file's password to a Redis that has none: the export clears it.
        assert banner.shell[0] == (
            f"export REDIS_URL=redis://127.0.0.1:{banner.redis_port}/0 REDIS_PASSWORD_FILE=''"
        )
    finally:
        up.kill_everything()


@pytest.mark.parametrize(
    "argv",
    [
        ("sse-gateway", "--auth-secret", AUTH_SECRET),
        ("sse-gateway", "--redis-sentinel-password", AUTH_SECRET),
        ("sse-gateway", "--redis-url", f"redis://:{AUTH_SECRET}@127.0.0.1:6399/0"),
        ("health-publisher", "--redis-url", f"redis://app:{AUTH_SECRET}@127.0.0.1:6399/0"),
        ("connectome-sse", "publish", "a", "b", "--redis-sentinel-password", AUTH_SECRET),
        ("connectome-sse", "up", "--redis-url", f"redis://:{AUTH_SECRET}@127.0.0.1:6399/0"),
        ("connectome-sse", "demo-engine", "--redis-url", f"redis://:{AUTH_SECRET}@h:1/0"),
    ],
    ids=["gateway-auth", "gateway-sentinel", "gateway-url", "publisher", "publish", "up", "demo"],
)
def test_a_secret_as_a_flag_is_refused_in_one_line(argv: tuple[str, ...]) -> None:
    done = subprocess.run(
        console_script(*argv), capture_output=True, text=True, timeout=60, env=environ()
    )
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "command line" in lines[0]
    assert AUTH_SECRET[:12] not in lines[0] and "Nv6" not in lines[0]
