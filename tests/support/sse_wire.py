"""Re-exported from ``connectome_sse.localrun.sse_wire``.

The helpers moved into the package so ``connectome-sse chaos`` runs the same code.
"""

from __future__ import annotations

from connectome_sse.localrun.sse_wire import (
    parse_stream,
    spec_lines,
)

__all__ = ["parse_stream", "spec_lines"]
