"""A real ``sse-gateway`` process on a free loopback port, and small helpers to read it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import httpx

from connectome_sse.localrun.metrics import samples, status_of
from connectome_sse.localrun.ports import free_port
from connectome_sse.localrun.processes import ManagedProcess, console_script
from connectome_sse.localrun.wait import wait_for


class GatewayProcess(ManagedProcess):
    def __init__(
        self,
        redis_url: str,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        args: tuple[str, ...] = (),
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        super().__init__(
            console_script("sse-gateway", "--port", str(self.port), *args),
            log_path,
            env={"REDIS_URL": redis_url, "SSE_PING_INTERVAL": "0.5", **(env or {})},
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        """``host:port``, as an nginx upstream names it."""
        return f"127.0.0.1:{self.port}"

    def status(self, path: str) -> int | None:
        return status_of(self.url + path)

    def wait_ready(self, timeout: float = 20.0) -> GatewayProcess:
        def ready() -> bool:
            if not self.alive():
                raise AssertionError(f"sse-gateway exited:\n{self.log()}")
            return self.status("/readyz") == 200

        wait_for(ready, timeout=timeout, what=f"sse-gateway ready on {self.port}")
        return self

    def metric(self, name: str) -> float:
        """Sum of every sample of ``name`` on /metrics."""
        return sum(samples(httpx.get(self.url + "/metrics", timeout=5).text, name))


def gateway_connections(redis_client: object) -> list[dict[str, object]]:
    """CLIENT LIST entries the gateways opened (they name their connections)."""
    clients = redis_client.client_list()  # type: ignore[attr-defined]
    return [c for c in clients if c.get("name") == "sse-gateway"]


def gateway_subscriptions(redis_client: object) -> list[dict[str, object]]:
    """The gateways' pub/sub connections: one PSUBSCRIBE per gateway process."""
    return [c for c in gateway_connections(redis_client) if c.get("psub") == "1"]
