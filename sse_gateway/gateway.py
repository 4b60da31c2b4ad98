"""The gateway's process-wide state: its collaborators, its stream count, and draining.

Built once per process by the app factory and handed to the routes; nothing
here is global, so tests run several gateways side by side.
"""

from __future__ import annotations

import logging
import random

from sse_gateway.framing import encode_retry
from sse_gateway.hub import Hub
from sse_gateway.metrics import GatewayMetrics
from sse_gateway.relay import Relay
from sse_gateway.settings import GatewaySettings
from sse_gateway.source import EventSource

log = logging.getLogger("sse_gateway")


class Gateway:
    def __init__(
        self, settings: GatewaySettings, source: EventSource, metrics: GatewayMetrics
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.hub = Hub()  # a cut stream is counted when its handler ends (routes)
        self.relay = Relay(
            self.hub,
            source,
            metrics,
            max_event_bytes=settings.max_event_bytes,
            ping_interval=settings.ping_interval,
            history=settings.history,
            latest_only=settings.latest_only,
            health_stale_after=settings.health_stale_after,
        )
        self.open_streams = 0
        self.draining = False
        self.retry_frame = encode_retry(settings.retry_ms)

    @property
    def ready(self) -> bool:
        return self.relay.ready and not self.draining

    def drain(self) -> None:
        """Refuse new streams and end open ones, each told to retry after a jittered delay."""
        if self.draining:
            return
        self.draining = True
        count = len(self.hub)
        retry = self.settings.retry_ms
        # Spread reconnects over [retry/2, 3*retry/2) so clients do not all return at once.
        self.hub.close(lambda: encode_retry(int(retry * random.uniform(0.5, 1.5))))
        log.info("draining: ended %d open streams", count)
