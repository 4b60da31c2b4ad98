"""Re-exported from ``connectome_sse.localrun.gateway``.

The helpers moved into the package so ``connectome-sse chaos`` runs the same code.
"""

from __future__ import annotations

from connectome_sse.localrun.gateway import (
    GatewayProcess,
    gateway_connections,
    gateway_subscriptions,
)

__all__ = ["GatewayProcess", "gateway_connections", "gateway_subscriptions"]
