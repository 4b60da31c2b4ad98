"""A real ``redis-server`` (or a compatible binary) on a free loopback port, nothing persisted.

The one Redis runner of ``up`` (through ``stack.local_redis``), ``chaos``, the
bench and the tests. The port stays the same across restarts so clients
configured with its URL reconnect to the new process, as they would after a
production Redis restart.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

import redis

from connectome_sse.localrun.ports import free_port
from connectome_sse.localrun.processes import ManagedProcess
from connectome_sse.localrun.wait import wait_for

MAXCLIENTS = 10_000


def require_program(name: str) -> str:
    """The path of ``name``; a missing program fails loudly (a test never skips for it)."""
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(
            f"{name} is not installed (not on PATH): install it, e.g. with the README's "
            "test command (scripts/test), which installs it"
        )
    return path


def answers_ping(port: int) -> bool:
    """True when a server on 127.0.0.1:``port`` answers PING (or asks for a password)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


def wait_answers(process: ManagedProcess, port: int, name: str, timeout: float = 10.0) -> None:
    """Until ``process`` answers PING on ``port``; its log in the error when it exited."""

    def answers() -> bool:
        if process.exit_code() is not None:
            raise RuntimeError(f"{name} exited: {process.log()}")
        return answers_ping(port)

    wait_for(answers, timeout=timeout, what=f"{name} on port {port}")


def redis_server_version(binary: str) -> str:
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    # "Redis server v=7.0.15 sha=..." / "Valkey server v=8.1.8 ..." -> the version
    for word in out.split():
        if word.startswith("v="):
            return word[2:]
    return "?"


class RedisServer(ManagedProcess):
    """``binary`` (``redis-server`` from PATH by default) serving in ``workdir``.

    ``extra_args`` go to the server, e.g. ``("--appendonly", "yes")`` to survive
    kills; ``maxclients`` None leaves the server's own limit. The log is
    ``workdir/redis.log`` unless ``log_path`` says otherwise; ``env`` and the
    rest are :class:`ManagedProcess`'s.
    """

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        extra_args: tuple[str, ...] = (),
        *,
        binary: str | None = None,
        maxclients: int | None = MAXCLIENTS,
        log_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        inherit_env: bool = True,
        exit_with_parent: bool = False,
    ) -> None:
        self.workdir = workdir
        self.extra_args = extra_args
        self.binary = binary
        self.maxclients = maxclients
        self.port = port or free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__(
            [],
            log_path or workdir / "redis.log",
            env,
            inherit_env=inherit_env,
            exit_with_parent=exit_with_parent,
        )

    @property
    def name(self) -> str:
        return Path(self.binary or "redis-server").name

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def command(self) -> list[str]:
        limit = [] if self.maxclients is None else ["--maxclients", str(self.maxclients)]
        return [
            self.binary or require_program("redis-server"),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            *limit,
            *self.extra_args,
        ]  # fmt: skip

    def spawn(self) -> None:
        """Start the server without waiting for it to answer."""
        self.args = self.command()
        super().start()

    def start(self) -> Self:
        """Start it and wait until it answers PING."""
        self.spawn()
        wait_answers(self, self.port, self.name)
        return self

    def restart(self) -> None:
        self.kill()
        self.start()

    def flush(self) -> None:
        with self.client() as client:
            client.flushall()

    def info(self, section: str) -> dict[str, Any]:
        with self.client() as client:
            return dict(client.info(section))

    def connected_clients(self) -> int:
        return int(self.info("clients")["connected_clients"])

    def cpu_seconds(self) -> float:
        """The server's own CPU time so far (user + system)."""
        cpu = self.info("cpu")
        return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])
