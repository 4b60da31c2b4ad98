"""The gateway's Prometheus metrics, and rendering them for ``/metrics``.

With several workers, prometheus-client's multiprocess mode sums the workers' files, so
a scrape of the shared port sees the whole gateway. uvicorn's supervisor replaces a
killed worker without telling prometheus-client, so each scrape first marks the gauges
of workers that no longer run as dead. Each HELP text says how the workers combine.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Files of live gauges, one per process: gauge_livesum_<pid>.db, gauge_livemin_<pid>.db...
_LIVE_GAUGE_FILE = re.compile(r"^gauge_live\w+?_(\d+)\.db$")

PROCESS_SAMPLE_S = 5.0
_FANOUT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # Process-wide: multiprocess mode cannot make *_created series, so one worker
        # does not either.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        # In multiprocess mode samples go to files, not to a registry.
        reg = None if multiprocess() else (registry or CollectorRegistry())
        self.registry = reg
        self.process: _WorkerProcessGauges | None = None
        if reg is not None:
            ProcessCollector(registry=reg)
        else:
            self.process = _WorkerProcessGauges()
        self._stream_metrics(reg)
        self._relay_metrics(reg)
        # Streams opened and closed since the last write to the metrics: see stream_opened.
        self._opened = 0
        self._closed = 0
        self._flush_due = False

    def _stream_metrics(self, reg: CollectorRegistry | None) -> None:
        self.open_streams = Gauge(
            "sse_open_streams",
            f"SSE streams open now{_SUMMED}",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.streams_opened = Counter(
            "sse_streams_opened", f"SSE streams opened{_SUMMED}", registry=reg
        )
        self.streams_rejected = Counter(
            "sse_streams_rejected",
            f"SSE streams refused, by reason{_SUMMED}",
            ["reason"],
            registry=reg,
        )
        self.tickets_refused = Counter(
            "sse_tickets_refused",
            "tickets refused: rate_limited (minting), forged (a stored grant not sealed by us)"
            f"{_SUMMED}",
            ["reason"],
            registry=reg,
        )
        self.slow_clients_cut = Counter(
            "sse_slow_clients_cut", f"clients cut for falling behind{_SUMMED}", registry=reg
        )
        self.events_conflated = Counter(
            "sse_events_conflated",
            f"queued latest-only events replaced by a newer one for a slow client{_SUMMED}",
            registry=reg,
        )
        self.catch_up_failed = Counter(
            "sse_catch_up_failed",
            "new streams' openings that could not confirm this process had caught up with "
            f"Redis{_SUMMED}",
            registry=reg,
        )

    def _relay_metrics(self, reg: CollectorRegistry | None) -> None:
        self.redis_up = Gauge(
            "sse_redis_up",
            "1 while the Redis subscription is live (with several workers: 0 if any is down)",
            registry=reg,
            multiprocess_mode="livemin",
        )
        self.events_relayed = Counter(
            "sse_events_relayed", f"channel messages relayed to clients{_EACH}", registry=reg
        )
        self.frames_delivered = Counter(
            "sse_frames_delivered", f"event frames handed to client streams{_SUMMED}", registry=reg
        )
        self.events_dropped = Counter(
            "sse_events_dropped",
            f"channel messages dropped, by reason{_EACH}",
            ["reason"],
            registry=reg,
        )
        self.redis_reconnects = Counter(
            "sse_redis_reconnects",
            "Redis subscription re-established (each worker process holds its own "
            "subscription: summed over them)",
            registry=reg,
        )
        self.log_filled = Counter(
            "sse_log_filled",
            f"logged events relayed from the event log after a resubscription{_EACH}",
            registry=reg,
        )
        self.log_duplicates = Counter(
            "sse_log_duplicates",
            f"live logged messages skipped because a gap fill relayed them already{_EACH}",
            registry=reg,
        )
        self.log_gaps = Counter(
            "sse_log_gaps",
            "times the event log could not prove that no event was missed (every stream got "
            f"resync and the snapshots), by reason{_EACH}",
            ["reason"],
            registry=reg,
        )
        self.log_resumes = Counter(
            "sse_log_resumes",
            f"streams resumed from the event log (an id not in this process's history){_SUMMED}",
            registry=reg,
        )
        self.health_age = Gauge(
            "sse_health_age_seconds",
            "seconds since the newest connectome_health was relayed (since start before the "
            "first; with several workers, the oldest of theirs)",
            registry=reg,
            multiprocess_mode="livemax",
        )
        self.fanout_latency = Histogram(
            "sse_fanout_latency_seconds",
            f"time to hand one event to every subscribed stream{_SUMMED}",
            buckets=_FANOUT_BUCKETS,
            registry=reg,
        )

    def stream_opened(self) -> None:
        """A stream opened: ``sse_open_streams`` and ``sse_streams_opened`` follow at the end
        of this loop turn. With several workers every update of a metric is a locked write
        to a memory-mapped file; a storm of connects then pays it once per loop turn, not
        twice per stream."""
        self._opened += 1
        self._flush_soon()

    def stream_closed(self) -> None:
        self._closed += 1
        self._flush_soon()

    def _flush_soon(self) -> None:
        if self._flush_due:
            return
        try:
            asyncio.get_running_loop().call_soon(self.flush_streams)
        except RuntimeError:  # no loop (a unit test): at once
            self.flush_streams()
            return
        self._flush_due = True

    def flush_streams(self) -> None:
        """Write the stream counts that changed since the last flush."""
        self._flush_due = False
        opened, closed = self._opened, self._closed
        self._opened = self._closed = 0
        if opened:
            self.streams_opened.inc(opened)
        if opened != closed:
            self.open_streams.inc(opened - closed)

    async def sample_process_forever(self, every: float = PROCESS_SAMPLE_S) -> None:
        """Keep this worker's ``process_*`` gauges fresh (multiprocess mode only): a scrape
        is answered by one worker, which cannot sample the others."""
        if self.process is None:
            return
        while True:
            self.process.sample()
            await asyncio.sleep(every)

    def render(self) -> tuple[bytes, str]:
        self.flush_streams()
        if self.registry is not None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        if self.process is not None:
            self.process.sample()  # the other workers sample theirs on their own tick
        forget_dead_workers(os.environ[MULTIPROC_ENV])
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST


_SUMMED = " (all worker processes of this gateway summed)"
_EACH = (
    " (every worker process relays each message, so with N workers the sum counts "
    "each message N times)"
)


class _WorkerProcessGauges:
    """``process_*`` of one worker in multiprocess mode, where collectors cannot run: the
    process collector's own samples, copied into gauges that keep one series per pid."""

    def __init__(self) -> None:
        self._collector = ProcessCollector(registry=None)
        self._gauges: dict[str, Gauge] = {}

    def sample(self) -> None:
        for family in self._collector.collect():
            for sample in family.samples:
                gauge = self._gauges.get(sample.name)
                if gauge is None:
                    gauge = self._gauges[sample.name] = Gauge(
                        sample.name,
                        f"{family.documentation} (one series per worker process)",
                        registry=None,
                        multiprocess_mode="liveall",
                    )
                gauge.set(sample.value)


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
