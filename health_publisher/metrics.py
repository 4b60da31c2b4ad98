"""Prometheus metrics of one publisher, in a registry of its own (tests run several at once)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server


class PublisherMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.signals_applied = Counter(
            "health_signals_applied", "Stream entries applied to the aggregator", registry=r
        )
        self.signals_bad = Counter(
            "health_signals_bad", "Stream entries refused, by reason", ["reason"], registry=r
        )
        self.signals_replayed = Counter(
            "health_signals_replayed", "History entries replayed on taking over", registry=r
        )
        self.events_published = Counter(
            "health_events_published", "connectome_health events published", ["state"], registry=r
        )
        self.leader = Gauge("health_publisher_leader", "1 while this process leads", registry=r)
        self.leadership_changes = Counter(
            "health_publisher_leadership_changes", "Leadership gained or lost", registry=r
        )
        self.redis_reconnects = Counter(
            "health_publisher_redis_reconnects", "Redis connections lost", registry=r
        )

    def serve(self, port: int, host: str) -> None:
        start_http_server(port, addr=host, registry=self.registry)
