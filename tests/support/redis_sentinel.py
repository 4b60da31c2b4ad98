"""Re-exported from ``connectome_sse.localrun.redis_sentinel``.

The helpers moved into the package so ``connectome-sse chaos`` runs the same code.
``SentinelCluster`` here only says that its ``tls`` is the tests' ``TlsFiles``
(with the client certificate and the unrelated CA the TLS tests use).
"""

from __future__ import annotations

from pathlib import Path

from connectome_sse.localrun import redis_sentinel
from connectome_sse.localrun.redis_sentinel import (
    DOWN_AFTER_MS,
    FAILOVER_TIMEOUT_MS,
    MASTER_NAME,
)
from tests.support.redis_tls import TlsFiles


class SentinelCluster(redis_sentinel.SentinelCluster):
    tls: TlsFiles | None

    def __init__(
        self, workdir: Path, tls: TlsFiles | None = None, sentinel_password: str | None = None
    ) -> None:
        super().__init__(workdir, tls, sentinel_password)


__all__ = ["DOWN_AFTER_MS", "FAILOVER_TIMEOUT_MS", "MASTER_NAME", "SentinelCluster"]
