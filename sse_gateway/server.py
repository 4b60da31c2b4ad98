"""Running the gateway under uvicorn: one process, or N workers sharing one port.

Each worker is a full gateway (its own Redis subscription, hub and relay)
built by ``app_from_environ`` from the settings the parent exports, so flags
given to the parent reach every worker. With several workers, metrics go
through prometheus-client's multiprocess directory, created here and removed
on exit.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import uvicorn

from connectome_sse.settings import to_environ
from sse_gateway.http_protocol import GatewayHttpProtocol
from sse_gateway.metrics import MULTIPROC_ENV
from sse_gateway.settings import GatewaySettings


def serve(settings: GatewaySettings) -> None:
    os.environ.update(to_environ(settings))
    metrics_dir = None
    if settings.workers > 1 and not os.environ.get(MULTIPROC_ENV):
        metrics_dir = tempfile.mkdtemp(prefix="sse-gateway-metrics-")
        os.environ[MULTIPROC_ENV] = metrics_dir
    try:
        uvicorn.run(
            "sse_gateway.app:app_from_environ",
            factory=True,
            interface="asgi3",
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            loop="uvloop",
            http=GatewayHttpProtocol,
            lifespan="on",
            access_log=False,
            log_config=None,
            log_level=settings.log_level,
            backlog=4096,
            # Streams are ended by the gateway's own drain; this is only the backstop for
            # writes stuck on clients that stopped reading.
            timeout_graceful_shutdown=max(1, int(settings.shutdown_grace * 0.6)),
        )
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
