"""Prometheus metrics of one publisher, in a registry of its own (tests run several at once).

Every name starts with ``health_publisher_``; ``process_*`` come from prometheus-client's
process collector. No ``*_created`` series (see ``sse_gateway.metrics``).
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    ProcessCollector,
    disable_created_metrics,
    start_http_server,
)

PREFIX = "health_publisher_"


class PublisherMetrics:
    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        self.signals_applied = Counter(
            PREFIX + "signals_applied", "Stream entries applied to the aggregator", registry=r
        )
        self.signals_bad = Counter(
            PREFIX + "signals_bad", "Stream entries refused, by reason", ["reason"], registry=r
        )
        self.signals_replayed = Counter(
            PREFIX + "signals_replayed", "History entries replayed on taking over", registry=r
        )
        self.events_published = Counter(
            PREFIX + "events_published",
            "connectome_health events published by this process, by status",
            ["state"],
            registry=r,
        )
        self.leader = Gauge(PREFIX + "leader", "1 while this process leads", registry=r)
        self.leadership_changes = Counter(
            PREFIX + "leadership_changes", "Leadership gained or lost", registry=r
        )
        self.redis_reconnects = Counter(
            PREFIX + "redis_reconnects", "Redis connections lost", registry=r
        )

    def serve(self, port: int, host: str) -> None:
        start_http_server(port, addr=host, registry=self.registry)
