"""Re-exported from ``connectome_sse.localrun.sse_clients``.

The helpers moved into the package so ``connectome-sse chaos`` runs the same code.
"""

from __future__ import annotations

from connectome_sse.localrun.sse_clients import (
    StreamRecorder,
    open_streams,
    until,
)

__all__ = ["StreamRecorder", "open_streams", "until"]
