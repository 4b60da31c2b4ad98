"""Re-exported from ``connectome_sse.localrun.redis_server``.

The helpers moved into the package so ``connectome-sse chaos`` runs the same code.
"""

from __future__ import annotations

from connectome_sse.localrun.redis_server import (
    RedisServer,
    require_program,
)

__all__ = ["RedisServer", "require_program"]
