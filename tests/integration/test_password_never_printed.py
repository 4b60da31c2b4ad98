"""No process prints any piece of a password in a URL, whatever characters the password holds.

Every console script that reads ``REDIS_URL`` runs as a real process with
passwords holding ``/``, ``?``, ``#`` and ``@`` (which end ``urlsplit``'s
authority early): malformed URLs (one line, exit 2), the right password against
a real redis-server that needs it (the process works; its whole output, logs
included, is clean), and a wrong one (one line, non-zero exit). ``listen`` and
``doctor`` take a gateway URL, which may carry a proxy's Basic credentials: the
same holds for them. "Any piece" is any three characters in a row.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from connectome_core.contract import SIGNALS_STREAM, snapshot_key
from connectome_sse.localrun.gateway import GatewayProcess
from connectome_sse.localrun.ports import free_port
from connectome_sse.localrun.processes import ManagedProcess, console_script
from connectome_sse.localrun.redis_server import RedisServer
from connectome_sse.localrun.wait import wait_for
from tests.support.up_process import UpProcess

pytestmark = pytest.mark.integration

PASSWORD = "Zq7/Vx9?Wk#Jy@Qp+w0"  # what the test's redis-server asks for
WRONG = "Kd4/Pm8?Tn#Rb@Xc+v5"  # a password it refuses

# Console scripts that read REDIS_URL, run so that they stop by themselves when they can.
SCRIPTS = {
    "sse-gateway": ("sse-gateway", "--port", "0"),
    "health-publisher": ("health-publisher",),
    "up": ("connectome-sse", "up", "--port", "0", "--no-demo"),
    "publish": ("connectome-sse", "publish", "note", "hello"),
    "demo-engine": ("connectome-sse", "demo-engine", "--duration", "1"),
}

MALFORMED = {
    "slash-bad-port": (f"redis://default:{WRONG}@127.0.0.1:99999/0", WRONG),
    "bad-db": (f"redis://default:{WRONG}@127.0.0.1:6399/x", WRONG),
    "sentinel-no-master": (f"rediss+sentinel://u:{WRONG}@127.0.0.1:1", WRONG),
    "unix-relative": (f"unix://:{WRONG}@relative.sock", WRONG),
    "no-host": ("redis://default:pa/ss+w0rd", "pa/ss+w0rd"),
    "query-hash": ("redis://default:pa?ss#w0rd@127.0.0.1:6399/0?x=1", "pa?ss#w0rd"),
}


def fragments(password: str) -> set[str]:
    return {password[i : i + 3] for i in range(len(password) - 2)}


def assert_clean(text: str, *passwords: str) -> None:
    for password in passwords:
        leaked = sorted(piece for piece in fragments(password) if piece in text)
        assert not leaked, f"{leaked} of {password!r} printed:\n{text}"
    assert "Traceback" not in text, text


def environ(**settings: str) -> dict[str, str]:
    """This environment without any setting of ours, plus ``settings``."""
    ours = ("REDIS_", "SSE_", "HEALTH_", "PUBLISHER_")
    return {**{k: v for k, v in os.environ.items() if not k.startswith(ours)}, **settings}


def run(argv: tuple[str, ...], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        console_script(*argv), capture_output=True, text=True, timeout=120, env=env
    )


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, done.stdout + done.stderr
    return lines[0]


@pytest.fixture(scope="module")
def locked_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server whose default user needs PASSWORD."""
    server = RedisServer(
        tmp_path_factory.mktemp("locked-redis"), extra_args=("--requirepass", PASSWORD)
    ).start()
    yield server
    server.stop()


def admin(server: RedisServer) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=server.port, password=PASSWORD, socket_timeout=5)


def url(server: RedisServer, password: str = PASSWORD) -> str:
    return f"redis://default:{password}@127.0.0.1:{server.port}/0"


@pytest.mark.parametrize("case", sorted(MALFORMED))
@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_a_malformed_url_is_one_line_without_its_password(script: str, case: str) -> None:
    redis_url, password = MALFORMED[case]
    done = run(SCRIPTS[script], environ(REDIS_URL=redis_url))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "REDIS_URL" in one_line(done)
    assert_clean(done.stdout + done.stderr, password)


@pytest.mark.parametrize("script", ["sse-gateway", "health-publisher", "up", "publish"])
def test_a_refused_password_is_one_line_without_it(locked_redis: RedisServer, script: str) -> None:
    done = run(SCRIPTS[script], environ(REDIS_URL=url(locked_redis, WRONG)))
    assert done.returncode != 0, done.stdout + done.stderr
    assert_clean(done.stdout + done.stderr, WRONG, PASSWORD)
    assert "refused" in done.stdout + done.stderr


def test_publish_and_demo_engine_work_and_print_none_of_it(locked_redis: RedisServer) -> None:
    env = environ(REDIS_URL=url(locked_redis))
    published = run(SCRIPTS["publish"], env)
    assert published.returncode == 0, published.stderr
    engine = run(("connectome-sse", "demo-engine", "--duration", "1", "--tick-rate", "20"), env)
    assert engine.returncode == 0, engine.stderr
    with admin(locked_redis) as client:
        assert client.get(snapshot_key("note")) == b"hello"
        assert client.xlen(SIGNALS_STREAM) > 0
    for done in (published, engine):
        assert_clean(done.stdout + done.stderr, PASSWORD)


def test_gateway_and_publisher_work_and_log_none_of_it(
    locked_redis: RedisServer, tmp_path: Path
) -> None:
    gateway = GatewayProcess(url(locked_redis), tmp_path / "gateway.log")
    gateway.env = {**environ(), **{k: v for k, v in gateway.env.items() if k.startswith("SSE_")}}
    gateway.env["REDIS_URL"] = url(locked_redis)
    publisher = ManagedProcess(
        console_script("health-publisher"),
        tmp_path / "publisher.log",
        env=environ(REDIS_URL=url(locked_redis), PUBLISHER_LOG_LEVEL="DEBUG"),
    )
    try:
        gateway.start()
        gateway.wait_ready()
        publisher.start()
        with admin(locked_redis) as client:
            wait_for(
                lambda: client.exists(snapshot_key("connectome_health")),
                timeout=30,
                what="the publisher's first health event",
            )
    finally:
        gateway.stop()
        publisher.stop()
    for process in (gateway, publisher):
        assert_clean(process.log(), PASSWORD)
    assert "redis://default:***@" in gateway.log()


def test_up_works_and_neither_it_nor_its_children_print_any_of_it(
    locked_redis: RedisServer, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    up = UpProcess(
        tmp_path,
        "--port",
        "0",
        "--no-demo",
        "--log-dir",
        str(logs),
        env={**environ(), "REDIS_URL": url(locked_redis)},
    )
    try:
        up.start()
        banner = up.banner()
        assert "***" in banner.redis
    finally:
        up.kill_everything()
    assert_clean(up.log(), PASSWORD)
    children = sorted(logs.glob("*.log"))
    assert len(children) >= 2
    for log in children:
        assert_clean(log.read_text(errors="replace"), PASSWORD)


@pytest.mark.parametrize(
    "argv",
    [
        ("connectome-sse", "listen", "http://u:{}@127.0.0.1:{}/"),
        ("connectome-sse", "listen", "ftp://u:{}@127.0.0.1:{}/"),
        ("connectome-sse", "doctor", "--idle", "0", "http://u:{}@127.0.0.1:{}/"),
        ("connectome-sse", "doctor", "--idle", "0", "gopher://u:{}@127.0.0.1:{}/"),
    ],
    ids=["listen", "listen-scheme", "doctor", "doctor-scheme"],
)
def test_listen_and_doctor_never_print_a_gateway_password(argv: tuple[str, ...]) -> None:
    closed = free_port()
    *head, target = argv
    done = run((*head, target.format(WRONG, closed)), environ())
    assert done.returncode in (1, 2), done.stdout + done.stderr
    assert_clean(done.stdout + done.stderr, WRONG)


@pytest.mark.parametrize(
    "argv",
    [
        ("sse-gateway", f"redis://default:{WRONG}@127.0.0.1:6399/0"),
        ("connectome-sse", "publish", "a", "b", f"redis://default:{WRONG} @127.0.0.1:6399/0"),
        ("connectome-sse", "up", f"--redis=redis://default:{WRONG}@h"),
    ],
    ids=["gateway", "publish", "up"],
)
def test_a_stray_url_argument_is_not_echoed(argv: tuple[str, ...]) -> None:
    done = run(argv, environ())
    assert done.returncode == 2, done.stdout + done.stderr
    assert_clean(done.stdout + done.stderr, WRONG)
