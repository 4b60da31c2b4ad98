"""The scaled-out deployment on loopback: what docker-compose.yml runs, as local processes.

Redis, publishers, optionally the demo engine, N gateways and the project's
nginx in front; ``restore`` brings every piece back on the same ports.
``SentinelTopology`` is the same on Redis Sentinel.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator, Mapping
from pathlib import Path

import redis

from connectome_core.contract import HEALTH_EVENT, LEADER_KEY, snapshot_key
from connectome_core.redis_connect import sync_client
from connectome_core.redis_target import parse_redis_url
from connectome_sse.localrun.gateway import GatewayProcess
from connectome_sse.localrun.metrics import open_streams, scrape
from connectome_sse.localrun.nginx import NginxServer
from connectome_sse.localrun.ports import free_port
from connectome_sse.localrun.processes import ManagedProcess, console_script
from connectome_sse.localrun.redis_sentinel import SentinelCluster
from connectome_sse.localrun.redis_server import RedisServer
from connectome_sse.localrun.wait import wait_for


class Topology:
    """``redis`` None: a Redis of its own, started and stopped with the rest.

    ``consumer_prefix``-0, -1, ... name the publishers in the consumer group;
    ``publisher_metrics`` gives each its own metrics port (two cannot share one);
    ``stop_timeout`` is each process's grace on ``stop``; ``redis_args`` go to its own
    Redis (``("--appendonly", "yes")`` keeps the data through a kill).
    """

    def __init__(
        self,
        workdir: Path,
        redis: RedisServer | None = None,
        *,
        gateways: int = 2,
        publishers: int = 2,
        engine: bool = False,
        gateway_env: Mapping[str, str] | None = None,
        publisher_env: Mapping[str, str] | None = None,
        consumer_prefix: str = "publisher",
        publisher_metrics: bool = False,
        nginx_template: Path | None = None,
        stop_timeout: float = 10.0,
        redis_args: tuple[str, ...] = (),
    ) -> None:
        self.workdir = workdir
        self.redis_args = redis_args
        self.gateway_env = dict(gateway_env or {})
        self.publisher_env = dict(publisher_env or {})
        self.consumer_prefix = consumer_prefix
        self.publisher_metrics = publisher_metrics
        self.stop_timeout = stop_timeout
        self.owns_redis = redis is None
        self._make_redis(redis)
        self.gateways = [self._gateway(i, free_port()) for i in range(gateways)]
        self.publishers = [self._publisher(i) for i in range(publishers)]
        self.engine = (
            ManagedProcess(
                console_script("connectome-sse", "demo-engine"),
                workdir / "demo-engine.log",
                env={"REDIS_URL": self.redis_url, **self._wiring_env()},
            )
            if engine
            else None
        )
        self.nginx = NginxServer([g.address for g in self.gateways], nginx_template)
        # How many gateways should hold a subscription now (a fault that kills one lowers it).
        self.expected_subscribers = gateways

    def _make_redis(self, given: RedisServer | None) -> None:
        self.redis = given or RedisServer(self.workdir / "redis", extra_args=self.redis_args)

    @property
    def redis_url(self) -> str:
        """The ``REDIS_URL`` every process of the topology uses."""
        return self.redis.url

    def _wiring_env(self) -> dict[str, str]:
        """Settings besides REDIS_URL that the processes need to reach this Redis."""
        # The topology's Redis has no password: a user's REDIS_PASSWORD_FILE is not its.
        return {"REDIS_PASSWORD_FILE": ""}

    def _gateway(self, index: int, port: int) -> GatewayProcess:
        return GatewayProcess(
            self.redis_url,
            self.workdir / f"gateway-{index}.log",
            env={**self.gateway_env, **self._wiring_env()},
            args=("--host", "127.0.0.1"),
            port=port,
        )

    def consumer(self, index: int) -> str:
        return f"{self.consumer_prefix}-{index}"

    def _publisher(self, index: int) -> ManagedProcess:
        env = {
            "REDIS_URL": self.redis_url,
            **self.publisher_env,
            "PUBLISHER_CONSUMER": self.consumer(index),
            **self._wiring_env(),
        }
        if self.publisher_metrics:
            env["PUBLISHER_METRICS_PORT"] = str(free_port())
        return ManagedProcess(
            console_script("health-publisher"), self.workdir / f"publisher-{index}.log", env=env
        )

    @property
    def port(self) -> int:
        """nginx's plain HTTP port: where the clients connect."""
        return self.nginx.port

    def client(self) -> redis.Redis:
        return sync_client(parse_redis_url(self.redis_url))

    def processes(self) -> Iterator[tuple[str, ManagedProcess]]:
        """Every process but Redis and nginx, named, in the order they start."""
        for i, publisher in enumerate(self.publishers):
            yield f"publisher-{i}", publisher
        if self.engine is not None:
            yield "demo-engine", self.engine
        for i, gateway in enumerate(self.gateways):
            yield f"gateway-{i}", gateway

    def start(self) -> Topology:
        """Everything at once, as compose does once Redis is up; then nginx, when every
        gateway is ready."""
        if self.owns_redis:
            self._start_redis()
        for _, process in self.processes():
            process.start()
        for gateway in self.gateways:
            gateway.wait_ready(timeout=30)
        self.nginx.start()
        wait_for(
            lambda: self.nginx.status("/readyz") == 200, timeout=15, what="/readyz through nginx"
        )
        return self

    def wait_health(self, timeout: float) -> None:
        """Until a publisher has published health (the snapshot key exists)."""

        def published() -> bool:
            self.check_running()
            with self.client() as client:
                return bool(client.exists(snapshot_key(HEALTH_EVENT)))

        wait_for(published, timeout=timeout, what="the first health event")

    def check_running(self) -> None:
        """Raise, with its log's tail, when a process that was started has exited."""
        for name, process in self.processes():
            if process.started and not process.alive():
                raise RuntimeError(f"{name} exited:\n{process.log()[-3000:]}")

    def gateway_pids(self) -> list[int]:
        return [g.pid for g in self.gateways if g.alive()]

    def open_streams(self, gateway: GatewayProcess) -> int:
        """The streams ``gateway`` holds open, from its /metrics."""
        text = scrape(gateway.url + "/metrics")
        assert text is not None, "no /metrics"
        return open_streams(text)

    def leader(self) -> int | None:
        """Index of the publisher holding the lease, if any."""
        with self.client() as client:
            raw = client.get(LEADER_KEY)
        if not isinstance(raw, bytes):
            return None
        name = raw.decode(errors="replace").split(":", 1)[0]
        for index in range(len(self.publishers)):
            if self.consumer(index) == name:
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
        if self.redis.alive():
            self.redis.signal(signal.SIGCONT)
        else:
            self.redis.start()

    def _stop_redis(self) -> None:
        self.redis.stop()

    def restore(self) -> None:
        """Every process back up (after a fault killed or froze one)."""
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
        self.expected_subscribers = len(self.gateways)

    def logs(self, tail: int = 2000) -> str:
        parts = [f"--- {name}\n{process.log()[-tail:]}" for name, process in self.processes()]
        parts.append(f"--- nginx\n{self.nginx.log()[-tail:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        """nginx first (as clients leave), then gateways, engine, publishers, own Redis."""
        self.nginx.stop()
        for _, process in reversed(list(self.processes())):
            process.stop(timeout=self.stop_timeout)
        if self.owns_redis:
            self._stop_redis()


class SentinelTopology(Topology):
    """The same processes on ``redis+sentinel://``: a master, a replica, three sentinels."""

    def _make_redis(self, given: RedisServer | None) -> None:
        self.cluster = SentinelCluster(self.workdir / "sentinel")

    @property
    def redis_url(self) -> str:
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
