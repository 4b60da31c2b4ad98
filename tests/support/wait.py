"""Re-exported from ``connectome_sse.localrun.wait``.

The helpers moved into the package so ``connectome-sse chaos`` runs the same code.
"""

from __future__ import annotations

from connectome_sse.localrun.wait import (
    async_wait_for,
    wait_for,
)

__all__ = ["async_wait_for", "wait_for"]
