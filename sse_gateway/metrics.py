"""The gateway's Prometheus metrics, and rendering them for ``/metrics``.

With several workers (``--workers``), prometheus-client's multiprocess mode
is used: each worker writes its samples to files in ``PROMETHEUS_MULTIPROC_DIR``
and ``/metrics`` on any worker sums them, so a scrape through the shared port
sees the whole gateway, not one random worker. Gauges use ``livesum`` so a
worker that died stops counting.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

_FANOUT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # In multiprocess mode samples go to files, not to a registry.
        reg = None if multiprocess() else (registry or CollectorRegistry())
        self.registry = reg
        self.open_streams = Gauge(
            "sse_open_streams", "SSE streams open now", registry=reg, multiprocess_mode="livesum"
        )
        self.redis_up = Gauge(
            "sse_redis_up",
            "1 while the Redis subscription is live",
            registry=reg,
            multiprocess_mode="livemin",
        )
        self.streams_opened = Counter("sse_streams_opened", "SSE streams opened", registry=reg)
        self.streams_rejected = Counter(
            "sse_streams_rejected", "SSE streams refused", ["reason"], registry=reg
        )
        self.events_relayed = Counter(
            "sse_events_relayed", "channel messages relayed to clients", registry=reg
        )
        self.frames_delivered = Counter(
            "sse_frames_delivered", "event frames handed to client streams", registry=reg
        )
        self.events_dropped = Counter(
            "sse_events_dropped", "channel messages dropped", ["reason"], registry=reg
        )
        self.slow_clients_cut = Counter(
            "sse_slow_clients_cut", "clients cut for falling behind", registry=reg
        )
        self.redis_reconnects = Counter(
            "sse_redis_reconnects", "Redis subscription re-established", registry=reg
        )
        self.fanout_latency = Histogram(
            "sse_fanout_latency_seconds",
            "time to hand one event to every subscribed stream",
            buckets=_FANOUT_BUCKETS,
            registry=reg,
        )

    def render(self) -> tuple[bytes, str]:
        if self.registry is not None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST


def multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))
