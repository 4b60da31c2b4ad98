"""The gateway's Prometheus metrics, and rendering them for ``/metrics``.

With several workers (``--workers``), prometheus-client's multiprocess mode
is used: each worker writes its samples to files in ``PROMETHEUS_MULTIPROC_DIR``
and ``/metrics`` on any worker sums them, so a scrape through the shared port
sees the whole gateway, not one random worker. Gauges use ``livesum`` /
``livemin``, which only leave out a dead worker once its files are marked
dead: uvicorn's supervisor replaces a killed worker without telling
prometheus-client, so every scrape first marks the files of workers that no
longer run (``mark_process_dead``, the hook prometheus-client documents for
exactly this). Counters of a dead worker stay in the sum, as counters must.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Files of live gauges, one per process: gauge_livesum_<pid>.db, gauge_livemin_<pid>.db...
_LIVE_GAUGE_FILE = re.compile(r"^gauge_live\w+?_(\d+)\.db$")

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
        self.tickets_refused = Counter(
            "sse_tickets_refused",
            "tickets refused: rate_limited (minting), forged (a stored grant not sealed by us)",
            ["reason"],
            registry=reg,
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
        self.events_conflated = Counter(
            "sse_events_conflated",
            "queued latest-only events replaced by a newer one for a slow client",
            registry=reg,
        )
        self.catch_up_failed = Counter(
            "sse_catch_up_failed",
            "new streams' openings that could not confirm this process had caught up with Redis",
            registry=reg,
        )
        self.health_age = Gauge(
            "sse_health_age_seconds",
            "seconds since the newest connectome_health was relayed (since start before the first)",
            registry=reg,
            multiprocess_mode="livemax",
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
        forget_dead_workers(os.environ[MULTIPROC_ENV])
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST


def multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def forget_dead_workers(directory: str) -> list[int]:
    """Mark the live gauges of processes that no longer run as dead; returns their pids."""
    dead = set()
    for path in Path(directory).glob("gauge_live*.db"):
        match = _LIVE_GAUGE_FILE.match(path.name)
        if match is not None and not process_running(int(match.group(1))):
            dead.add(int(match.group(1)))
    for pid in sorted(dead):
        mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
    return sorted(dead)


def process_running(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, killed but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: trust the signal check
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"
