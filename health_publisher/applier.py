"""Applying stream entries to the aggregator: bad signals counted and logged, never raised."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from connectome_core.logs import RateLimitedLog
from health_publisher.aggregator import HealthAggregator
from health_publisher.metrics import PublisherMetrics
from health_publisher.reader import id_key
from health_publisher.server_clock import ServerClock
from health_publisher.signals import BadSignal, parse_signal

log = logging.getLogger("health_publisher")


class SignalApplier:
    """Applies entries at the time they were written; remembers the newest id applied."""

    def __init__(
        self, aggregator: HealthAggregator, clock: ServerClock, metrics: PublisherMetrics
    ) -> None:
        self.aggregator = aggregator
        self.clock = clock
        self.metrics = metrics
        self.last_applied_id: bytes | None = None
        self.bad_signals = 0
        self.bad_log = RateLimitedLog(log)

    def apply(
        self,
        eid: bytes,
        fields: Mapping[bytes, bytes],
        *,
        count_totals: bool = True,
        quiet: bool = False,
    ) -> None:
        """Apply one entry; ``quiet`` for history another leader already logged and counted."""
        try:
            signal = parse_signal(fields)
            self.aggregator.apply(signal, at=self.clock.entry_time(eid), count_totals=count_totals)
        except BadSignal as exc:
            if not quiet:
                self._bad(exc.reason)
                self.bad_log.warning(
                    exc.reason, "bad signal %s (%s): %s", eid.decode(), exc.reason, exc
                )
        except Exception as exc:  # a bug must cost one entry, never the publisher
            if not quiet:
                self._bad("internal")
                self.bad_log.log(
                    logging.ERROR,
                    "internal",
                    "could not apply signal %s (internal): %s: %s",
                    eid.decode(),
                    type(exc).__name__,
                    str(exc)[:200],
                )
        else:
            if not quiet:
                self.metrics.signals_applied.inc()
        if self.last_applied_id is None or id_key(eid) > id_key(self.last_applied_id):
            self.last_applied_id = eid

    def _bad(self, reason: str) -> None:
        self.bad_signals += 1
        self.metrics.signals_bad.labels(reason).inc()
