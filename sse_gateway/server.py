"""Running the gateway under uvicorn: one process, or N workers sharing one port.

Each worker is a full gateway built from the settings its parent exports; several
workers share a multiprocess metrics directory, and each asks the kernel for SIGTERM
when its supervisor dies (uvicorn cannot stop them after a ``kill -9``).
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import logging
import os
import shutil
import signal
import sys
import tempfile
from typing import cast

import uvicorn

from connectome_core.settings import to_environ
from sse_gateway.http_limits import ConnectionLimits
from sse_gateway.http_protocol import GatewayHttpProtocol
from sse_gateway.metrics import MULTIPROC_ENV
from sse_gateway.settings import GatewaySettings

# Internal, not a setting: tells a worker which process is its supervisor.
SUPERVISOR_PID_ENV = "CONNECTOME_GATEWAY_SUPERVISOR_PID"
_PR_SET_PDEATHSIG = 1

log = logging.getLogger("sse_gateway")


def serve(settings: GatewaySettings) -> None:
    os.environ.update(to_environ(settings))
    if settings.workers > 1:
        os.environ[SUPERVISOR_PID_ENV] = str(os.getpid())
    else:
        os.environ.pop(SUPERVISOR_PID_ENV, None)
    metrics_dir = None
    if settings.workers > 1 and not os.environ.get(MULTIPROC_ENV):
        metrics_dir = tempfile.mkdtemp(prefix="sse-gateway-metrics-")
        os.environ[MULTIPROC_ENV] = metrics_dir
    limits = ConnectionLimits(
        header_timeout=settings.header_timeout, max_open=settings.connection_cap
    )
    try:
        uvicorn.run(
            "sse_gateway.app:app_from_environ",
            factory=True,
            interface="asgi3",
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            loop="uvloop",
            # A factory (picklable for spawned workers) that carries the connection limits.
            # uvicorn only ever calls the class, so a factory is as good (typed as a class).
            http=cast(
                "type[asyncio.Protocol]", functools.partial(GatewayHttpProtocol, limits=limits)
            ),
            ws="none",
            limit_concurrency=settings.connection_cap,
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


def end_with_supervisor() -> None:
    """In a worker: have the kernel SIGTERM this process when the supervisor dies.

    SIGTERM rather than SIGKILL, so the worker drains its streams (each client
    is told to retry) like any other shutdown. A supervisor that died before
    the request was made is noticed through the parent pid.
    """
    supervisor = os.environ.get(SUPERVISOR_PID_ENV)
    if supervisor is None or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        log.warning("cannot follow the supervisor: prctl: %s", os.strerror(ctypes.get_errno()))
        return
    if os.getppid() != int(supervisor):
        log.warning("supervisor %s is gone before this worker started; exiting", supervisor)
        raise SystemExit(1)
