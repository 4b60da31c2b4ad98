"""The scaled-out deployment on loopback, for real, and browser-like clients that ride it.

``Topology`` is what docker-compose.yml runs, as local processes: Redis (a
fixture's), publishers (leader and standby), the demo engine, N gateways and
Debian's nginx with the project's own configuration in front of them.

The browser-like clients that ride it (``BrowserClient``, ``ClientFleet``, ...)
moved to ``connectome_sse.localrun.browser`` (shared with ``connectome-sse
chaos``) and are re-exported here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from connectome_sse.localrun.browser import (
    HEALTH_EVENT,
    SEQ_EVENT,
    BrowserClient,
    ClientFleet,
    Connection,
    describe,
    seq_range,
)
from connectome_sse.localrun.ports import free_port
from connectome_sse.localrun.processes import ManagedProcess, console_script
from connectome_sse.localrun.redis_server import RedisServer
from connectome_sse.localrun.wait import wait_for
from tests.support.nginx import NginxServer

__all__ = [
    "HEALTH_EVENT",
    "SEQ_EVENT",
    "BrowserClient",
    "ClientFleet",
    "Connection",
    "Gateway",
    "Topology",
    "describe",
    "open_streams",
    "seq_range",
]


@dataclass
class Gateway:
    process: ManagedProcess
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def _get(url: str, timeout: float = 2.0) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=timeout, trust_env=False)
    except httpx.HTTPError:
        return None


def _ready(url: str) -> bool:
    response = _get(url + "/readyz")
    return response is not None and response.status_code == 200


def open_streams(metrics_text: str) -> int:
    """``sse_open_streams`` from a gateway's Prometheus text."""
    match = re.search(r"^sse_open_streams(?:\{[^}]*\})? ([0-9.e+]+)$", metrics_text, re.M)
    if match is None:
        raise AssertionError("no sse_open_streams in /metrics")
    return int(float(match.group(1)))


class Topology:
    def __init__(
        self,
        workdir: Path,
        redis: RedisServer,
        gateways: int = 3,
        publishers: int = 2,
        engine: bool = True,
        gateway_env: Mapping[str, str] | None = None,
        publisher_env: Mapping[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.redis = redis
        self.gateway_env = {"REDIS_URL": redis.url, **(gateway_env or {})}
        self.publisher_env = {"REDIS_URL": redis.url, **(publisher_env or {})}
        self.gateways = [
            Gateway(
                ManagedProcess(
                    console_script("sse-gateway", "--host", "127.0.0.1", "--port", str(port)),
                    workdir / f"gateway-{i}.log",
                    env=self.gateway_env,
                ),
                port,
            )
            for i, port in enumerate(free_port() for _ in range(gateways))
        ]
        self.publishers = [
            ManagedProcess(
                console_script("health-publisher"),
                workdir / f"publisher-{i}.log",
                env={**self.publisher_env, "PUBLISHER_CONSUMER": f"publisher-{i}"},
            )
            for i in range(publishers)
        ]
        self.engine = (
            ManagedProcess(
                console_script("connectome-sse", "demo-engine"),
                workdir / "demo-engine.log",
                env={"REDIS_URL": redis.url},
            )
            if engine
            else None
        )
        self.nginx = NginxServer([g.address for g in self.gateways])

    @property
    def url(self) -> str:
        return self.nginx.url

    def processes(self) -> Iterator[tuple[str, ManagedProcess]]:
        for i, publisher in enumerate(self.publishers):
            yield f"publisher-{i}", publisher
        if self.engine is not None:
            yield "demo-engine", self.engine
        for i, gateway in enumerate(self.gateways):
            yield f"gateway-{i}", gateway.process

    def start(self) -> Topology:
        # Everything starts at once, as compose does once Redis is healthy.
        for _, process in self.processes():
            process.start()
        for i, gateway in enumerate(self.gateways):
            self._wait_ready(f"gateway-{i}", gateway)
        self.nginx.start()
        wait_for(lambda: _ready(self.url), timeout=15, what="/readyz through nginx")
        return self

    def _wait_ready(self, name: str, gateway: Gateway) -> None:
        def ready() -> bool:
            return self._alive_and(name, gateway.process) and _ready(gateway.url)

        wait_for(ready, timeout=30, what=f"{name} /readyz")

    def _alive_and(self, name: str, process: ManagedProcess) -> bool:
        if not process.alive():
            raise AssertionError(f"{name} exited:\n{process.log()[-3000:]}")
        return True

    def check_running(self) -> None:
        """Every process still up (a test calls it before blaming the clients)."""
        for name, process in self.processes():
            self._alive_and(name, process)

    def open_streams(self, gateway: Gateway) -> int:
        response = _get(gateway.url + "/metrics")
        assert response is not None and response.status_code == 200, "no /metrics"
        return open_streams(response.text)

    def logs(self, tail: int = 2000) -> str:
        parts = [f"--- {name}\n{process.log()[-tail:]}" for name, process in self.processes()]
        parts.append(f"--- nginx\n{self.nginx.log()[-tail:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        # nginx first (as clients leave), then gateways, engine, publishers.
        self.nginx.stop()
        for _, process in reversed(list(self.processes())):
            process.stop(timeout=10)
