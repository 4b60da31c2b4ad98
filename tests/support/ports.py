"""Re-exported from ``connectome_sse.localrun.ports``.

The helpers moved into the package so ``connectome-sse chaos`` runs the same code.
"""

from __future__ import annotations

from connectome_sse.localrun.ports import (
    free_port,
)

__all__ = ["free_port"]
