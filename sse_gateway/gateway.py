"""One gateway process's state: hub, relay and opener, the stream count, and draining.

Built once per process by the app factory and handed to the routes; nothing here is
global, so tests run several gateways side by side.
"""

from __future__ import annotations

import logging
import random

from sse_gateway.framing import encode_retry
from sse_gateway.hub import Hub
from sse_gateway.metrics import GatewayMetrics
from sse_gateway.opener import StreamOpener
from sse_gateway.relay import Relay
from sse_gateway.settings import GatewaySettings
from sse_gateway.source import EventSource
from sse_gateway.stream_writer import DRAIN

log = logging.getLogger("sse_gateway")

DRAINING, FULL = "draining", "max_connections"  # why a stream gets no slot


class Gateway:
    def __init__(
        self, settings: GatewaySettings, source: EventSource, metrics: GatewayMetrics
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.hub = Hub()  # a cut stream is counted when its handler ends (stream_route)
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
        self.opener = StreamOpener(self.relay, source, metrics, settings.client_buffer_bytes)
        self.relay.on_resubscribed = self.opener.resend_snapshots
        self.open_streams = 0
        self.draining = False
        self.retry_frame = encode_retry(settings.retry_ms)

    @property
    def redis_up(self) -> bool:
        return self.relay.redis_up

    @property
    def ready(self) -> bool:
        return self.relay.ready and not self.draining

    def start(self) -> None:
        self.relay.start()
        self.opener.start()

    async def stop(self) -> None:
        await self.opener.stop()
        await self.relay.stop()

    def reserve_stream(self) -> str | None:
        """Take a stream slot, or say why there is none (``DRAINING``, ``FULL``).

        No await in here: requests that all wait on Redis afterwards (a ticket) must not
        all pass the cap before any of them counts. ``release_stream`` gives it back."""
        if self.draining:
            return DRAINING
        if self.open_streams >= self.settings.max_connections:
            return FULL
        self.open_streams += 1
        return None

    def release_stream(self) -> None:
        self.open_streams -= 1

    def drain(self) -> None:
        """Refuse new streams and end open ones, each told to retry after a jittered delay."""
        if self.draining:
            return
        self.draining = True
        count = len(self.hub)
        retry = self.settings.retry_ms
        # Spread reconnects over [retry/2, 3*retry/2) so clients do not all return at once.
        self.hub.close(lambda: encode_retry(int(retry * random.uniform(0.5, 1.5))), DRAIN)
        log.info("draining: ended %d open streams", count)
