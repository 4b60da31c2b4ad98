"""The local deployment chaos breaks: Redis, two publishers, two gateways, the project's nginx.

Every piece is a real OS process on loopback, started with the user's
environment, so their ``SSE_*``/``HEALTH_*``/``PUBLISHER_*`` values apply;
only what wiring needs is set here (``REDIS_URL``, ports, consumer names).
A scenario breaks one piece; ``restore`` brings every piece back before the
next one (same ports, so nginx and the clients need no change).

``SentinelTopology`` is the same deployment on Redis Sentinel (a master, a
replica and three sentinels; every process on the ``redis+sentinel://`` URL),
started only for the scenarios that need it.
"""

from __future__ import annotations

import os
import signal
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import redis

from connectome_sse.contract import HEALTH_EVENT, LEADER_KEY, snapshot_key
from connectome_sse.localrun.gateway import GatewayProcess
from connectome_sse.localrun.nginx import LocalNginx
from connectome_sse.localrun.ports import free_port
from connectome_sse.localrun.processes import ManagedProcess, console_script
from connectome_sse.localrun.redis_sentinel import SentinelCluster
from connectome_sse.localrun.redis_server import RedisServer
from connectome_sse.localrun.wait import wait_for
from connectome_sse.redis_connect import sync_client
from connectome_sse.redis_target import parse_redis_url
from connectome_sse.settings import load_settings
from health_publisher.settings import PublisherSettings
from sse_gateway.settings import GatewaySettings

GATEWAYS = 2
PUBLISHERS = 2


@dataclass(frozen=True)
class Settings:
    """The settings the processes will run with (the user's environment), for the limits."""

    gateway: GatewaySettings
    publisher: PublisherSettings

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Both processes' settings as they will load them; a bad value raises SettingsError."""
        env = {
            **(os.environ if environ is None else environ),
            # The topology's own Redis, which has no password.
            "REDIS_URL": "redis://127.0.0.1/0",
            "REDIS_PASSWORD_FILE": "",
        }
        return cls(load_settings(GatewaySettings, env), load_settings(PublisherSettings, env))

    @property
    def retry_s(self) -> float:
        return self.gateway.retry_ms / 1000

    @property
    def interval_s(self) -> float:
        return self.publisher.health_interval

    @property
    def lease_s(self) -> float:
        return self.publisher.publisher_lease_ms / 1000


@dataclass
class Topology:
    settings: Settings
    template: Path | None = None
    workdir: Path = field(
        default_factory=lambda: Path(tempfile.mkdtemp(prefix="connectome-chaos-"))
    )
    # How many gateways should hold a subscription now (a scenario that kills one lowers it).
    expected_subscribers: int = GATEWAYS

    def __post_init__(self) -> None:
        self._make_redis()
        self.gateways = [self._gateway(i, free_port()) for i in range(GATEWAYS)]
        self.publishers = [self._publisher(i) for i in range(PUBLISHERS)]
        self.nginx = LocalNginx([f"127.0.0.1:{g.port}" for g in self.gateways], self.template)

    def _make_redis(self) -> None:
        self.redis = RedisServer(self.workdir / "redis")

    @property
    def url(self) -> str:
        """The ``REDIS_URL`` every process of the topology (and chaos itself) uses."""
        return self.redis.url

    def _wiring_env(self) -> dict[str, str]:
        """Settings besides REDIS_URL that the processes need to reach this Redis."""
        # The topology's Redis has no password: a user's REDIS_PASSWORD_FILE is not its.
        return {"REDIS_PASSWORD_FILE": ""}

    def _gateway(self, index: int, port: int) -> GatewayProcess:
        # GatewayProcess shortens pings for tests; here the user's value (or the default) holds.
        ping = os.environ.get("SSE_PING_INTERVAL", str(self.settings.gateway.ping_interval))
        return GatewayProcess(
            self.url,
            self.workdir / f"gateway-{index}.log",
            env={"SSE_PING_INTERVAL": ping, **self._wiring_env()},
            args=("--host", "127.0.0.1"),
            port=port,
        )

    def _publisher(self, index: int) -> ManagedProcess:
        env = {
            "REDIS_URL": self.url,
            "PUBLISHER_CONSUMER": publisher_name(index),
            **self._wiring_env(),
        }
        if self.settings.publisher.publisher_metrics_port:
            env["PUBLISHER_METRICS_PORT"] = str(free_port())  # two cannot share the user's
        return ManagedProcess(
            console_script("health-publisher"), self.workdir / f"publisher-{index}.log", env=env
        )

    @property
    def port(self) -> int:
        """nginx's plain HTTP port: where the clients connect."""
        return self.nginx.port

    def client(self) -> redis.Redis:
        return sync_client(parse_redis_url(self.url))

    def start(self) -> Topology:
        self._start_redis()
        for publisher in self.publishers:
            publisher.start()
        for gateway in self.gateways:
            gateway.start()
        for gateway in self.gateways:
            gateway.wait_ready(timeout=30)
        self.nginx.start()
        self.wait_health()
        return self

    def wait_health(self) -> None:
        """Until a publisher has published health (the snapshot key exists)."""

        def published() -> bool:
            self.check_alive()
            with self.client() as client:
                return bool(client.exists(snapshot_key(HEALTH_EVENT)))

        timeout = self.settings.lease_s + self.settings.interval_s + 15
        wait_for(published, timeout=timeout, what="the first health event")

    def check_alive(self) -> None:
        """Raise, with its log's tail, when a publisher or gateway has exited."""
        named: list[tuple[str, ManagedProcess]] = [
            (f"gateway-{i}", g) for i, g in enumerate(self.gateways)
        ]
        named += [(f"publisher-{i}", p) for i, p in enumerate(self.publishers)]
        for name, process in named:
            if process.proc is not None and not process.alive():
                raise RuntimeError(f"{name} exited:\n{process.log()[-1500:]}")

    def gateway_pids(self) -> list[int]:
        return [g.pid for g in self.gateways if g.alive()]

    def leader(self) -> int | None:
        """Index of the publisher holding the lease, if any."""
        with self.client() as client:
            raw = client.get(LEADER_KEY)
        if not isinstance(raw, bytes):
            return None
        name = raw.decode(errors="replace").split(":", 1)[0]
        for index in range(len(self.publishers)):
            if publisher_name(index) == name:
                return index
        return None

    def restart_gateway(self, index: int) -> None:
        """A fresh process on the same port (nginx's group names fixed addresses)."""
        old = self.gateways[index]
        old.stop(timeout=5)
        self.gateways[index] = self._gateway(index, old.port)
        self.gateways[index].start()
        self.gateways[index].wait_ready(timeout=30)

    def _start_redis(self) -> None:
        self.redis.start()

    def _restore_redis(self) -> None:
        if self.redis.proc is not None and self.redis.proc.poll() is None:
            os.kill(self.redis.proc.pid, signal.SIGCONT)
        else:
            self.redis.start()

    def _stop_redis(self) -> None:
        self.redis.stop()

    def restore(self) -> None:
        """Every process back up (after a scenario killed or froze one)."""
        self._restore_redis()
        for index, publisher in enumerate(self.publishers):
            publisher.signal(signal.SIGCONT)
            if not publisher.alive():
                publisher.stop(timeout=1)
                self.publishers[index] = self._publisher(index)
                self.publishers[index].start()
        for index, gateway in enumerate(self.gateways):
            gateway.signal(signal.SIGCONT)
            if not gateway.alive():
                self.restart_gateway(index)
        for gateway in self.gateways:
            gateway.wait_ready(timeout=30)
        self.expected_subscribers = GATEWAYS

    def logs(self, tail: int = 1500) -> str:
        parts = [f"--- gateway-{i}\n{g.log()[-tail:]}" for i, g in enumerate(self.gateways)]
        parts += [f"--- publisher-{i}\n{p.log()[-tail:]}" for i, p in enumerate(self.publishers)]
        return "\n".join(parts)

    def stop(self) -> None:
        self.nginx.stop()
        for gateway in self.gateways:
            gateway.stop(timeout=5)
        for publisher in self.publishers:
            publisher.stop(timeout=5)
        self._stop_redis()


class SentinelTopology(Topology):
    """The same processes on ``redis+sentinel://``: a master, a replica, three sentinels."""

    def _make_redis(self) -> None:
        self.cluster = SentinelCluster(self.workdir / "sentinel")

    @property
    def url(self) -> str:
        return self.cluster.url

    def _wiring_env(self) -> dict[str, str]:
        # The topology's sentinels have no password of their own: a user's value is not theirs.
        return {**super()._wiring_env(), "REDIS_SENTINEL_PASSWORD": ""}

    def _start_redis(self) -> None:
        self.cluster.start()

    def _restore_redis(self) -> None:
        """The killed (or frozen) node back, as a replica of the master the sentinels name."""
        self.cluster.thaw()
        if self.cluster.killed is not None:
            self.cluster.restart_old_master()

    def _stop_redis(self) -> None:
        self.cluster.stop()


def publisher_name(index: int) -> str:
    return f"chaos-publisher-{index}"
