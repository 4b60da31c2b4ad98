"""Names of ``connectome_sse.localrun.ports``, for the few modules that still import them
from here; new code imports them from there."""

from __future__ import annotations

from connectome_sse.localrun.ports import free_port

__all__ = ["free_port"]
