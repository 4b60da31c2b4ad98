"""Starting and stopping what the benchmark measures: Redis, the gateway, Nchan, the naive app.

Every server is a ``connectome_sse.localrun`` process (its own session, SIGTERM
then SIGKILL of its group after a grace), its output in `bench/logs/`.
`ServerProcess.stop_all()` ends every one still running, so the command leaves
nothing behind, also on Ctrl-C.
"""

from __future__ import annotations

import os
import resource
import shutil
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Self

from bench.publisher import HttpPublisher, LoggedPublisher, Publisher, RedisPublisher
from connectome_sse.localrun.ports import free_port
from connectome_sse.localrun.processes import ManagedProcess, console_script, never
from connectome_sse.localrun.redis_server import RedisServer

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RUN_DIR = BENCH_DIR / "run"
LOG_DIR = BENCH_DIR / "logs"
CHANNEL = "sse:connectome_health"
EVENT = CHANNEL.removeprefix("sse:")
NCHAN_MODULE = Path("/usr/lib/nginx/modules/ngx_nchan_module.so")


class StartError(RuntimeError):
    """A system did not come up; the message carries the end of its log."""


def http_status(port: int, path: str, timeout: float = 1.0) -> int | None:
    """Status code of GET 127.0.0.1:port/path, or None when nothing answers."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            s.sendall(request.encode())
            line = s.recv(64).split(b"\r\n", 1)[0].split()
    except OSError:
        return None
    return int(line[1]) if len(line) >= 2 and line[1].isdigit() else None


class ServerProcess(ManagedProcess):
    """A server of the benchmark, its log ``bench/logs/<name>.log``."""

    live: ClassVar[set[ServerProcess]] = set()

    def __init__(
        self, name: str, args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> None:
        self.name = name
        super().__init__(args, LOG_DIR / f"{name}.log", env, cwd)

    def start(self) -> Self:
        super().start()
        ServerProcess.live.add(self)
        return self

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.tail(lines))

    def stop(
        self, timeout: float = 10.0, hurry: Callable[[], bool] = never, drain_group: bool = False
    ) -> None:
        super().stop(timeout, hurry, drain_group)
        ServerProcess.live.discard(self)

    @classmethod
    def stop_all(cls) -> None:
        for proc in list(cls.live):
            proc.stop(timeout=3.0)


def wait_until(check: Callable[[], bool], proc: ServerProcess, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not proc.alive():
            raise StartError(f"{proc.name} exited before {what}:\n{proc.log_tail()}")
        if check():
            return
        time.sleep(0.1)
    raise StartError(f"{proc.name}: no {what} within {timeout_s:.0f} s:\n{proc.log_tail()}")


def wait_ready(port: int, path: str, proc: ServerProcess, in_a_row: int, timeout_s: float) -> None:
    """`in_a_row` fresh connections in a row answer 200 (so every worker is likely up)."""

    def ready() -> bool:
        return all(http_status(port, path) == 200 for _ in range(in_a_row))

    wait_until(ready, proc, timeout_s, f"200 from {path}")


def bench_redis() -> RedisServer:
    """A redis-server of our own on a free port, without persistence."""
    # maxclients above the naive baseline's one connection per client (fd limit permitting)
    maxclients = max(1000, min(18000, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 64))
    port = free_port()
    return RedisServer(RUN_DIR, port, maxclients=maxclients, log_path=LOG_DIR / f"redis-{port}.log")


@dataclass
class RunningSystem:
    name: str
    port: int
    proc: ServerProcess
    publisher: Callable[[], Publisher]  # called inside the publishing event loop
    cleanup: Callable[[], None] | None = None
    headers: tuple[tuple[str, str], ...] = ()  # sent with every stream request

    @property
    def sse_path(self) -> str:
        return "/api/sse"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        self.proc.stop()
        if self.cleanup is not None:
            self.cleanup()


BEFORE_SUFFIX = "-before"
# A gateway with authentication on; every load-client stream presents a bearer token.
AUTH_SUFFIX = "-auth"


def parse_system(name: str) -> tuple[str, int]:
    """'gateway-2w' -> ('gateway', 2); 'naive' -> ('naive', 2); 'nchan' -> ('nchan', 2);
    'floor-2w' -> ('floor', 2): the least a Python server on uvloop pays (bench.floor_app);
    'granian-2w' -> ('granian', 2): the same bare stream under granian (bench.granian_floor).

    'gateway-2w-before' -> ('gateway-before', 2): the gateway of the `--before` commit.
    'gateway-2w-auth' -> ('gateway-auth', 2): authentication on, a bearer token per stream.
    """
    if name in ("nchan", "naive", "floor", "granian"):
        return name, 2
    suffix = next((x for x in (BEFORE_SUFFIX, AUTH_SUFFIX) if name.endswith(x)), "")
    kind, _, workers = name.removesuffix(suffix).partition("-")
    known = kind in ("gateway", "naive", "nchan", "floor", "granian")
    if known and workers.endswith("w") and workers[:-1].isdigit():
        if suffix:
            if kind != "gateway":
                raise ValueError(f"{name!r}: only the gateway has a {suffix} system")
            kind += suffix
        return kind, int(workers[:-1])
    raise ValueError(
        f"unknown system {name!r} (nchan, nchan-<N>w, gateway-<N>w, gateway-<N>w-before, "
        "gateway-<N>w-auth, naive, naive-<N>w, floor-<N>w, granian-<N>w)"
    )


def canonical_name(name: str) -> str:
    kind, workers = parse_system(name)
    if kind == "nchan" and workers == 2:
        return "nchan"
    base = kind.partition("-")[0]
    return f"{base}-{workers}w" + kind[len(base) :]


def gateway_available() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("sse_gateway.cli") is not None
    except ModuleNotFoundError:
        return False


def publish_path(name: str, through_log: bool) -> str:
    """How system `name` gets its events (a key of `PUBLISH_PATHS`): Nchan by HTTP, the
    others by Redis, through the event log with `through_log`."""
    if parse_system(name)[0] == "nchan":
        return "http"
    return "log" if through_log else "raw"


def redis_publisher(redis_url: str, through_log: bool) -> Callable[[], Publisher]:
    """A factory of the publisher of a Redis-fed system (called in the publishing loop)."""
    if through_log:
        return lambda: LoggedPublisher(redis_url, EVENT)
    return lambda: RedisPublisher(redis_url, CHANNEL)


def start_system(
    name: str,
    redis_server: RedisServer,
    ready_timeout_s: float = 60.0,
    before_tree: Path | None = None,
    through_log: bool = False,
) -> RunningSystem:
    """Start system `name` (a '-before' gateway: the code in `before_tree`), to be fed by
    a bare PUBLISH or, `through_log`, through the event log."""
    kind, workers = parse_system(name)
    name = canonical_name(name)
    port = free_port()
    if kind == "nchan":
        return _start_nchan(name, port, workers, ready_timeout_s)
    env = {"REDIS_URL": redis_server.url}
    headers: tuple[tuple[str, str], ...] = ()
    cwd = REPO_DIR
    if kind.startswith("gateway"):
        command = console_script("sse-gateway")
        if kind.endswith(BEFORE_SUFFIX):
            if before_tree is None:
                raise StartError(f"{name}: no --before commit given")
            # The same interpreter and libraries, the older commit's own packages first.
            command = [sys.executable, "-m", "sse_gateway.cli"]
            env["PYTHONPATH"] = str(before_tree)
            cwd = before_tree
        args = [
            *command,
            "--host", "127.0.0.1",
            "--port", str(port),
            "--workers", str(workers),
            "--max-connections", "20000",  # per process: the open-file limit binds first
            "--client-buffer", "256",
            # Every load-client stream comes from 127.0.0.x: no per-address cap.
            "--max-streams-per-client", "0",
        ]  # fmt: skip
        env["SSE_LOG_LEVEL"] = "warning"
        # Every event counts, as with Nchan: no latest-only conflation (health's default).
        env["SSE_LATEST_ONLY"] = ""
        if kind.endswith(AUTH_SUFFIX):
            env["SSE_AUTH_SECRET"], headers = _auth()
        ready_path = "/readyz"
    elif kind == "floor":
        args = [
            sys.executable, "-m", "bench.floor_app",
            "--port", str(port),
            "--workers", str(workers),
        ]  # fmt: skip
        ready_path = "/healthz"
    elif kind == "granian":
        args = [
            *console_script("granian"),
            "--interface", "rsgi",
            "--host", "127.0.0.1",
            "--port", str(port),
            "--workers", str(workers),
            "--loop", "uvloop",
            "--http", "1",
            "--backlog", "4096",
            # Its default cap on requests under way per worker is backlog / workers:
            # 2,048 streams a worker, fewer than e holds.
            "--backpressure", "20000",
            "bench.granian_floor:app",
        ]  # fmt: skip
        ready_path = "/healthz"
    else:
        args = [
            sys.executable, "-m", "uvicorn", "bench.naive_app:app",
            "--host", "127.0.0.1",
            "--port", str(port),
            "--workers", str(workers),
            "--log-level", "warning",
            "--no-access-log",
        ]  # fmt: skip
        ready_path = "/healthz"
    proc = ServerProcess(f"{name}-{port}", args, env=env, cwd=cwd).start()
    try:
        wait_ready(port, ready_path, proc, in_a_row=2 * workers, timeout_s=ready_timeout_s)
    except BaseException:
        proc.stop()
        raise
    publisher = redis_publisher(redis_server.url, through_log)
    return RunningSystem(name, port, proc, publisher, headers=headers)


def _auth() -> tuple[str, tuple[tuple[str, str], ...]]:
    """A fresh secret, and the header that presents a token of it as an application would
    mint one: an hour's life, narrowed to the measured event type (the claim is checked)."""
    import secrets

    from connectome_core.tokens import TokenVerifier

    secret = secrets.token_urlsafe(48)
    token = TokenVerifier(secret.encode()).mint(ttl=3600, sub="bench", events=[EVENT])
    return secret, (("Authorization", f"Bearer {token}"),)


def _start_nchan(name: str, port: int, workers: int, ready_timeout_s: float) -> RunningSystem:
    prefix = RUN_DIR / f"nchan-{port}"
    for sub in ("tmp", "logs"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(prefix / "tmp", 0o777)  # nginx workers run as an unprivileged user
    nofile = str(min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 65536))
    conf = (BENCH_DIR / "nchan.conf.in").read_text()
    proc = ServerProcess(f"{name}-{port}", [])
    error_log = str(proc.log_path.with_suffix(".error.log"))
    conf = conf.replace("@PORT@", str(port)).replace("@NOFILE@", nofile)
    conf = conf.replace("@WORKERS@", str(workers))
    # With more workers than the standard 2 (scenario f: 12,500 streams a worker under a
    # 20,000-file limit), one socket per worker, shared out by the kernel: on one shared
    # socket the busiest worker took over 20,000 and the rest were refused.
    conf = conf.replace("@LISTEN_OPTIONS@", " reuseport" if workers > 2 else "")
    (prefix / "nginx.conf").write_text(conf.replace("@ERROR_LOG@", error_log))
    proc.args = ["nginx", "-p", f"{prefix}/", "-c", "nginx.conf", "-e", error_log]
    proc.start()
    try:
        wait_ready(port, "/healthz", proc, in_a_row=2 * workers, timeout_s=ready_timeout_s)
    except BaseException:
        proc.stop()
        shutil.rmtree(prefix, ignore_errors=True)
        raise
    return RunningSystem(
        name,
        port,
        proc,
        lambda: HttpPublisher(f"http://127.0.0.1:{port}/pub"),
        cleanup=lambda: shutil.rmtree(prefix, ignore_errors=True),
    )
