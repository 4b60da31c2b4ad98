"""Names of ``connectome_sse.localrun.gateway``, for the few modules that still import them
from here; new code imports them from there."""

from __future__ import annotations

from connectome_sse.localrun.gateway import GatewayProcess

__all__ = ["GatewayProcess"]
