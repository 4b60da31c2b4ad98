"""A real Redis server as a child of ``up``: on a free loopback port, in ``up``'s temp dir.

Nothing is persisted; should another program take the port first, the server is
started again on another.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from connectome_sse.localrun.ports import free_port as free_port
from connectome_sse.localrun.redis_server import RedisServer, answers_ping, redis_server_version
from connectome_sse.stack.children import Child


class StackError(RuntimeError):
    """The stack cannot start; the message is one line for the newcomer."""


class LocalRedis(Child):
    """A Redis server binary as a supervised child; ``start_and_wait`` returns once it answers."""

    def __init__(
        self, binary: str, workdir: Path, env: Mapping[str, str], name: str = "redis-server"
    ) -> None:
        self.binary = binary
        self.workdir = workdir
        self.version = redis_server_version(binary)
        log_path = workdir / f"{name}.log"
        self.server = RedisServer(
            workdir,
            binary=binary,
            maxclients=None,
            log_path=log_path,
            env=env,
            inherit_env=False,
            exit_with_parent=True,
        )
        super().__init__(name, [], log_path, env, stop_timeout=5.0, process=self.server)

    @classmethod
    def find(cls, workdir: Path, env: Mapping[str, str]) -> LocalRedis | None:
        binary = shutil.which("redis-server", path=env.get("PATH"))
        return None if binary is None else cls(binary, workdir, env)

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def description(self) -> str:
        return f"{self.name} {self.version} on 127.0.0.1:{self.port}"

    def start_and_wait(self, timeout: float = 30.0, cancelled: Callable[[], bool] = bool) -> None:
        for _ in range(3):
            self.server.port = free_port()
            self.server.spawn()
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
