"""One master, one replica and three sentinels, real processes on free loopback ports.

For tests and chaos: ``kill_master()``, ``wait_failover()``, ``restart_old_master()``;
``tls=`` and ``sentinel_password`` for ``rediss+sentinel://`` and sentinels with
their own password. ``url`` is known before ``start()``.
"""

from __future__ import annotations

import secrets
import signal
from pathlib import Path
from typing import Protocol, Self

import redis

from connectome_sse.localrun.ports import free_port
from connectome_sse.localrun.processes import ManagedProcess
from connectome_sse.localrun.redis_server import RedisServer, require_program, wait_answers
from connectome_sse.localrun.wait import wait_for

MASTER_NAME = "connectome"
# 2000, not less: a sentinel PINGs each instance once a second, so at 1000 a link made
# at a switch (the new master) can be called down before its first PONG, and on a
# loaded machine a second, spurious failover then hands the master back to the node
# just restarted (seen in CI: the old master never rejoined as a replica).
DOWN_AFTER_MS = 2000
FAILOVER_TIMEOUT_MS = 3000


class ServerTls(Protocol):
    """The PEM files a TLS node needs (the tests' ``TlsFiles`` is one)."""

    @property
    def ca(self) -> Path: ...

    @property
    def server_cert(self) -> Path: ...

    @property
    def server_key(self) -> Path: ...


def tls_lines(tls: ServerTls, port: int) -> list[str]:
    """Server TLS settings (config-file lines) with ``port`` as the TLS port."""
    return [
        f"tls-port {port}",
        f"tls-cert-file {tls.server_cert}",
        f"tls-key-file {tls.server_key}",
        f"tls-ca-cert-file {tls.ca}",
        # The server certificate serves as the client one when a node dials a node.
        f"tls-client-cert-file {tls.server_cert}",
        f"tls-client-key-file {tls.server_key}",
        "tls-auth-clients optional",
        "tls-replication yes",
    ]


def tls_args(tls: ServerTls | None, port: int) -> tuple[str, ...]:
    args: list[str] = []
    for line in tls_lines(tls, port) if tls else []:
        name, value = line.split(" ", 1)
        args += [f"--{name}", value]
    return tuple(args)


class SentinelProcess(ManagedProcess):
    """``redis-server <conf> --sentinel``; the config file is its own (sentinel rewrites it)."""

    def __init__(
        self,
        workdir: Path,
        master_port: int,
        tls: ServerTls | None = None,
        password: str | None = None,
    ) -> None:
        self.workdir = workdir
        self.port = free_port()  # plain, for the test itself
        self.service_port = free_port() if tls else self.port  # what the URL names
        self.password = password
        self.myid = secrets.token_hex(20)  # a sentinel's run id: 40 hex digits
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "sentinel.conf"
        self.lines = [
            "bind 127.0.0.1",
            f"port {self.port}",
            *(tls_lines(tls, self.service_port) if tls else []),
            *([f"requirepass {password}"] if password else []),
            f"dir {workdir}",
            f"sentinel myid {self.myid}",
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2",
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}",
            f"sentinel parallel-syncs {MASTER_NAME} 1",
        ]
        super().__init__([], workdir / "sentinel.log")

    def introduce(self, replica_port: int, others: list[SentinelProcess]) -> None:
        """Tell it the replica and the other sentinels up front (the lines a sentinel writes
        into its own config once it found them): without them, finding each other through
        hello messages and INFO takes seconds on every start."""
        known = [f"sentinel known-replica {MASTER_NAME} 127.0.0.1 {replica_port}"]
        known += [
            f"sentinel known-sentinel {MASTER_NAME} 127.0.0.1 {other.service_port} {other.myid}"
            for other in others
            if other is not self
        ]
        self.lines += known

    def start(self) -> Self:
        if not self.conf.exists():  # sentinel rewrites it: a restart keeps what it learnt
            self.conf.write_text("\n".join([*self.lines, ""]))
        self.args = [require_program("redis-server"), str(self.conf), "--sentinel"]
        super().start()
        wait_answers(self, self.port, "sentinel")
        return self

    def client(self) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, socket_timeout=2
        )

    def master_port(self) -> int | None:
        try:
            with self.client() as client:
                answer = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
        except (redis.RedisError, OSError):
            return None
        return int(answer[1]) if answer else None


class SentinelCluster:
    def __init__(
        self,
        workdir: Path,
        tls: ServerTls | None = None,
        sentinel_password: str | None = None,
    ) -> None:
        self.workdir = workdir
        self.tls = tls
        self.sentinel_password = sentinel_password
        self.nodes: list[RedisServer] = []
        # The port each node serves clients on (its TLS port with TLS), by plain port.
        self.service_ports: dict[int, int] = {}
        for name in ("node-a", "node-b"):
            service_port = free_port()
            # A replica's full sync (diskless since Redis 7) starts at once, not after the
            # default 5 s wait for more replicas to join it: there is only one.
            quick_sync = ("--repl-diskless-sync-delay", "0")
            if tls:
                node = RedisServer(
                    workdir / name, extra_args=(*tls_args(tls, service_port), *quick_sync)
                )
            else:
                node = RedisServer(workdir / name, port=service_port, extra_args=quick_sync)
            self.service_ports[node.port] = service_port
            self.nodes.append(node)
        first = self.nodes[0]
        self.sentinels = [
            SentinelProcess(
                workdir / f"sentinel-{i}",
                self.service_port(first),
                tls,
                sentinel_password,
            )
            for i in range(3)
        ]
        self.killed: RedisServer | None = None
        self.frozen: RedisServer | None = None

    def service_port(self, node: RedisServer) -> int:
        return self.service_ports[node.port]

    @property
    def url(self) -> str:
        return self.url_for(MASTER_NAME)

    def url_for(self, master_name: str, userinfo: str = "") -> str:
        hosts = ",".join(f"127.0.0.1:{s.service_port}" for s in self.sentinels)
        scheme = "rediss+sentinel" if self.tls else "redis+sentinel"
        return f"{scheme}://{userinfo}{hosts}/{master_name}/0"

    def start(self) -> Self:
        first, second = self.nodes
        first.start()
        second.extra_args += ("--replicaof", "127.0.0.1", str(self.service_port(first)))
        second.start()
        wait_for(lambda: self._link_up(second), timeout=20, what="the replica to sync")
        for sentinel in self.sentinels:
            sentinel.introduce(self.service_port(second), self.sentinels)
            sentinel.start()
        # Ready once each sentinel sees the replica and the other two sentinels.
        wait_for(self._sentinels_agree, timeout=30, what="the sentinels to find each other")
        return self

    @staticmethod
    def _link_up(node: RedisServer) -> bool:
        with node.client() as client:
            info = client.info("replication")
        return bool(info.get("master_link_status") == "up")

    def _sentinels_agree(self) -> bool:
        for sentinel in self.sentinels:
            try:
                with sentinel.client() as client:
                    state = client.sentinel_master(MASTER_NAME)
                    peers = [
                        *client.sentinel_slaves(MASTER_NAME),
                        *client.sentinel_sentinels(MASTER_NAME),
                    ]
            except (redis.RedisError, OSError):
                return False
            if int(state["num-slaves"]) < 1 or int(state["num-other-sentinels"]) < 2:
                return False
            # Known from the config is not enough: linked, and the replica answered INFO.
            if any(peer.get("is_disconnected") or peer.get("is_sdown") for peer in peers):
                return False
        return True

    def master(self) -> RedisServer:
        """The node every sentinel names as master now."""
        ports = {s.master_port() for s in self.sentinels}
        assert len(ports) == 1, f"sentinels disagree on the master: {ports}"
        port = ports.pop()
        return next(node for node in self.nodes if self.service_port(node) == port)

    def kill_master(self) -> RedisServer:
        """``kill -9`` of the current master; returns the node that was killed."""
        victim = self.master()
        victim.kill()
        self.killed = victim
        return victim

    def freeze_master(self) -> RedisServer:
        """SIGSTOP of the current master: to the sentinels it is gone, but every socket to it
        stays open (a partition, or a stalled VM). ``thaw()`` resumes it; the sentinels then
        make it a replica and close its clients."""
        victim = self.master()
        victim.signal(signal.SIGSTOP)
        self.killed = self.frozen = victim
        return victim

    def thaw(self) -> None:
        if self.frozen is not None:
            self.frozen.signal(signal.SIGCONT)
            self.frozen = None

    def wait_failover(self, timeout: float = 30.0) -> RedisServer:
        """The new master, once every sentinel names a node other than the killed one."""
        assert self.killed is not None
        gone = self.service_port(self.killed)

        def switched() -> bool:
            ports = {s.master_port() for s in self.sentinels}
            return len(ports) == 1 and None not in ports and gone not in ports

        wait_for(switched, timeout=timeout, what="the sentinels to fail over")
        new = self.master()
        wait_for(lambda: self._role(new) == "master", timeout=timeout, what="the new master role")
        return new

    @staticmethod
    def _role(node: RedisServer) -> str:
        try:
            with node.client() as client:
                return str(client.info("replication")["role"])
        except (redis.RedisError, OSError):
            return ""

    def restart_old_master(self, timeout: float = 30.0) -> RedisServer:
        """Start the killed node again and wait until the sentinels made it a replica."""
        assert self.killed is not None
        node, self.killed = self.killed, None
        node.start()
        wait_for(lambda: self._role(node) == "slave", timeout=timeout, what="old master to rejoin")
        return node

    def stop(self) -> None:
        self.thaw()
        for sentinel in self.sentinels:
            sentinel.stop()
        for node in self.nodes:
            node.stop()
