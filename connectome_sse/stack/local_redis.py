"""A real Redis server as a child of ``up``: on a free loopback port, in ``up``'s temp dir.

The binary is the ``redis-server`` found on PATH or the packaged one
(``embedded_redis``); both run the same way. Nothing is persisted
(``--save ''``, no AOF): the stack is for a first look.
The port is picked by binding port 0 and releasing it; should another program
take it in between, the server fails to bind and is started again on another.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from connectome_sse.stack.children import Child


class StackError(RuntimeError):
    """The stack cannot start; the message is one line for the newcomer."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


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


class LocalRedis(Child):
    """A Redis server binary as a supervised child; ``start`` returns once it answers PING."""

    def __init__(
        self, binary: str, workdir: Path, env: Mapping[str, str], name: str = "redis-server"
    ) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = 0
        self.version = redis_server_version(binary)
        super().__init__(name, [], workdir / f"{name}.log", env, stop_timeout=5.0)

    @classmethod
    def find(cls, workdir: Path, env: Mapping[str, str]) -> LocalRedis | None:
        binary = shutil.which("redis-server", path=env.get("PATH"))
        return None if binary is None else cls(binary, workdir, env)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def description(self) -> str:
        return f"{self.name} {self.version} on 127.0.0.1:{self.port}"

    def start_and_wait(self, timeout: float = 30.0, cancelled: Callable[[], bool] = bool) -> None:
        for _ in range(3):
            self.port = free_port()
            self.argv = [
                self.binary,
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.workdir),
            ]  # fmt: skip
            self.start()
            deadline = time.monotonic() + timeout
            while self.exit_code() is None and time.monotonic() < deadline and not cancelled():
                if answers_ping(self.port):
                    return
                time.sleep(0.02)
            if cancelled():
                return
            if self.exit_code() is None:
                self.stop()
                raise StackError(f"{self.name} did not answer PING within {timeout:.0f} s")
            # Exited: most likely lost the race for the port; try another one.
        tail = " | ".join(self.tail(3))
        raise StackError(f"{self.name} could not start: {tail}")
