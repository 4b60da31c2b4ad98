"""What a process prints about a bad setting, as a newcomer sees it: real processes.

A flag is named as the flag, ``nan`` is "not a number", pydantic's ``Value
error,`` never shows, and a Redis that needs a password says so in one line
instead of quoting the server's HELLO text.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from connectome_sse.localrun.ports import free_port
from connectome_sse.localrun.processes import console_script
from connectome_sse.localrun.redis_server import RedisServer

pytestmark = pytest.mark.integration


def environ(**settings: str) -> dict[str, str]:
    ours = ("REDIS_", "SSE_", "HEALTH_", "PUBLISHER_")
    return {**{k: v for k, v in os.environ.items() if not k.startswith(ours)}, **settings}


def run(argv: tuple[str, ...], env: dict[str, str]) -> tuple[int, str]:
    done = subprocess.run(
        console_script(*argv), capture_output=True, text=True, timeout=60, env=env
    )
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, done.stdout + done.stderr
    return done.returncode, lines[0]


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (("sse-gateway", "--port", "99999"), {}, "sse-gateway: bad setting: --port (SSE_PORT): "),
        (("sse-gateway",), {"SSE_PORT": "99999"}, "sse-gateway: bad setting: SSE_PORT: "),
        (("sse-gateway",), {"SSE_PING_INTERVAL": "nan"}, "SSE_PING_INTERVAL: not a number"),
        (("sse-gateway", "--ping-interval", "inf"), {}, "--ping-interval (SSE_PING_INTERVAL): "),
        (("health-publisher",), {"HEALTH_WINDOW": "inf"}, "HEALTH_WINDOW: must be a finite"),
        (("sse-gateway",), {"SSE_AUTH_SECRET": "short"}, "SSE_AUTH_SECRET: the secret must"),
        (("connectome-sse", "up", "--workers", "0"), {}, "--workers (SSE_WORKERS): "),
        (("sse-gateway",), {"SSE_HISTORY": "0"}, "SSE_HISTORY: "),
        (("sse-gateway",), {"SSE_CORS_ORIGINS": "https://a.example/"}, "trailing slash"),
        (("sse-gateway",), {"SSE_CORS_ORIGINS": "https://a.example/app"}, "has a path"),
    ],
)
def test_one_plain_line_naming_what_was_given(
    argv: tuple[str, ...], env: dict[str, str], expected: str
) -> None:
    # A Redis nobody listens on: a setting wrongly accepted must not reach the host's own.
    code, line = run(argv, environ(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", **env))
    assert code == 2
    assert expected in line and "Value error" not in line, line


@pytest.fixture(scope="module")
def locked_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(
        tmp_path_factory.mktemp("locked"), extra_args=("--requirepass", "Hq3-Mz8-Vd4")
    ).start()
    yield server
    server.stop()


@pytest.mark.parametrize(
    "argv",
    [
        ("sse-gateway", "--port", "0"),
        ("health-publisher",),
        ("connectome-sse", "publish", "a", "b"),
        ("connectome-sse", "up", "--port", "0", "--no-demo"),
    ],
    ids=["gateway", "publisher", "publish", "up"],
)
def test_a_redis_that_needs_a_password_says_so(
    locked_redis: RedisServer, argv: tuple[str, ...]
) -> None:
    done = subprocess.run(
        console_script(*argv),
        capture_output=True,
        text=True,
        timeout=120,
        env=environ(REDIS_URL=f"redis://127.0.0.1:{locked_redis.port}/0"),
    )
    text = done.stdout + done.stderr
    assert done.returncode != 0, text
    errors = [line for line in text.splitlines() if "needs a password" in line]
    assert len(errors) == 1, text
    assert "(set it in REDIS_URL or REDIS_PASSWORD_FILE)" in errors[0]
    assert "HELLO" not in text, text
