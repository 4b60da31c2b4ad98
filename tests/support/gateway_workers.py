"""``sse-gateway --workers 2`` for the tests of its workers and their shared metrics."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from connectome_sse.localrun.gateway import GatewayProcess
from sse_gateway.metrics import MULTIPROC_ENV


def two_workers(
    start_gateway: Callable[..., GatewayProcess],
    redis_url: str,
    workdir: Path,
    env: Mapping[str, str] | None = None,
) -> GatewayProcess:
    """Ready, with its metrics directory in ``workdir``: a killed supervisor cannot remove
    the one it made itself."""
    metrics_dir = workdir / "metrics"
    metrics_dir.mkdir()
    return start_gateway(
        redis_url, args=("--workers", "2"), env={**(env or {}), MULTIPROC_ENV: str(metrics_dir)}
    ).wait_ready()
