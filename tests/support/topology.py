"""Names of ``connectome_sse.localrun.browser`` and ``.metrics``, for the few modules that
still import them from here; new code imports them from there."""

from __future__ import annotations

from connectome_sse.localrun.browser import (
    HEALTH_EVENT,
    SEQ_EVENT,
    BrowserClient,
    ClientFleet,
    describe,
    seq_range,
)
from connectome_sse.localrun.metrics import open_streams

__all__ = [
    "HEALTH_EVENT",
    "SEQ_EVENT",
    "BrowserClient",
    "ClientFleet",
    "describe",
    "open_streams",
    "seq_range",
]
