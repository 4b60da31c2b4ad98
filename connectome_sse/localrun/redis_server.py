"""A real ``redis-server`` on a free loopback port that a test or ``chaos`` may kill and restart.

The port stays the same across restarts so clients configured with its URL
reconnect to the new process, as they would after a production Redis restart.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import redis

from connectome_sse.localrun.ports import free_port
from connectome_sse.localrun.wait import wait_for


def require_program(name: str) -> str:
    """The path of ``name``; a missing program fails loudly (a test never skips for it)."""
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(
            f"{name} is not installed (not on PATH): install it, e.g. with the README's "
            "test command (scripts/test), which installs it"
        )
    return path


class RedisServer:
    def __init__(
        self, workdir: Path, port: int | None = None, extra_args: tuple[str, ...] = ()
    ) -> None:
        """``extra_args`` go to redis-server, e.g. ``("--appendonly", "yes")`` to survive kills."""
        self.workdir = workdir
        self.extra_args = extra_args
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def start(self) -> RedisServer:
        binary = require_program("redis-server")
        log = (self.workdir / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--maxclients",
                "10000",
                *self.extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        wait_for(self._answers, timeout=10, what=f"redis-server on port {self.port}")
        return self

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited: {(self.workdir / 'redis.log').read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith((b"+PONG", b"-NOAUTH"))  # up, maybe with a password
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: the abrupt loss a crash or a network cut looks like."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def flush(self) -> None:
        with self.client() as client:
            client.flushall()
