"""The connectome-health aggregator: signals in, a ``connectome_health`` payload out.

Importable on its own by a Python engine that wants health in process::

    agg = HealthAggregator(window=300, stale_after=10)
    agg.record_tick(tick=12, speed="x1", playthrough_id="p1", place_id="atrium")
    agg.record_counter("query_write_attempts")
    payload = agg.payload()          # a connectome_core.payload.HealthPayload

Everything it keeps is bounded; the clock is injectable. What it keeps: ``docs/publisher.md``.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from connectome_core.payload import (
    SCHEMA_VERSION,
    Attention,
    Counters,
    HealthPayload,
    LastInterrupt,
    NeighborhoodSize,
    Pressure,
    Runner,
    SinkSetSize,
    Speed,
    Status,
    TopEdge,
)
from health_publisher import status as rules
from health_publisher.signals import (
    CounterSignal,
    FocusChangeSignal,
    InterruptSignal,
    NeighborhoodSignal,
    PlateauSignal,
    PressureSignal,
    Signal,
    SinkSizeSignal,
    TickSignal,
    validate_signal,
)

Clock = Callable[[], float]

TOP_EDGES_KEPT = 10
MAX_SAMPLES = 10_000
MAX_VIOLATION_MARKS = 10_000


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), linear between closest ranks; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


class _Marks:
    """Weighted times of one kind of observation, pruned to a horizon."""

    def __init__(self, horizon: float, maxlen: int) -> None:
        self.horizon = horizon
        self.items: deque[tuple[float, float]] = deque(maxlen=maxlen)
        self.last_at: float | None = None

    def add(self, at: float, value: float = 1.0) -> None:
        self.items.append((at, value))
        self.last_at = at if self.last_at is None else max(self.last_at, at)

    def prune(self, now: float) -> None:
        while self.items and now - self.items[0][0] >= self.horizon:
            self.items.popleft()

    def values(self, now: float) -> list[float]:
        self.prune(now)
        return [value for _, value in self.items]

    def total(self, now: float) -> int:
        return int(sum(self.values(now)))


class HealthAggregator:
    def __init__(
        self,
        *,
        window: float = 300.0,
        stale_after: float = 10.0,
        sample_window: float = 60.0,
        clock: Clock = time.time,
    ) -> None:
        self.window = window
        self.stale_after = stale_after
        self.sample_window = sample_window
        self.clock = clock
        self.started_at = clock()
        self.last_signal_at: float | None = None
        self.applied = 0

        self.playthrough_id = ""
        self.place_id = ""
        self.speed: Speed = "pause"
        self.tick: int | None = None
        self._interrupt: InterruptSignal | None = None
        self._interrupt_tick: int | None = None

        self.counters: dict[str, int] = {
            "query_write_attempts": 0,
            "dmz_violation_attempts": 0,
            "async_epoch_mismatch": 0,
        }
        self._violations = {name: _Marks(window, MAX_VIOLATION_MARKS) for name in self.counters}

        self._sinks = _Marks(sample_window, MAX_SAMPLES)
        self._last_sink: float | None = None
        self._focus = _Marks(sample_window, MAX_SAMPLES)
        self.nodes = 0
        self.edges = 0
        self.plateau_seconds = 0.0
        self.contradiction = 0.0
        self.top_edges: list[TopEdge] = []

    # -- applying signals ---------------------------------------------------------------

    def apply(self, signal: Signal, at: float | None = None, *, count_totals: bool = True) -> None:
        """Fold one valid signal in. ``count_totals=False`` replays history a previous leader
        already counted: windows and latest values are rebuilt, totals are left alone."""
        now = self.clock()
        at = now if at is None else min(at, now)
        match signal:
            case TickSignal():
                self.tick = signal.tick
                self.speed = signal.speed
                self.playthrough_id = signal.playthrough_id
                self.place_id = signal.place_id
            case SinkSizeSignal():
                self._sinks.add(at, float(signal.value))
                self._last_sink = float(signal.value)
            case FocusChangeSignal():
                if signal.changed:
                    self._focus.add(at)
            case InterruptSignal():
                self._interrupt = signal
                self._interrupt_tick = self.tick
            case CounterSignal():
                if count_totals:
                    self.counters[signal.name] += signal.by
                self._violations[signal.name].add(at, float(signal.by))
            case NeighborhoodSignal():
                self.nodes = signal.nodes
                self.edges = signal.edges
            case PressureSignal():
                self.contradiction = signal.contradiction
                ranked = sorted(signal.top_edges, key=lambda edge: edge.contrib, reverse=True)
                self.top_edges = ranked[:TOP_EDGES_KEPT]
            case PlateauSignal():
                self.plateau_seconds = signal.seconds
        self.applied += 1
        self.last_signal_at = at if self.last_signal_at is None else max(self.last_signal_at, at)

    def record(self, kind: str, at: float | None = None, **fields: Any) -> None:
        self.apply(validate_signal({"kind": kind, **fields}), at)

    def record_tick(
        self, tick: int, speed: str, playthrough_id: str, place_id: str, at: float | None = None
    ) -> None:
        self.record(
            "tick", at, tick=tick, speed=speed, playthrough_id=playthrough_id, place_id=place_id
        )

    def record_sink_size(self, value: int, at: float | None = None) -> None:
        self.record("sink_size", at, value=value)

    def record_focus_change(self, changed: bool | int, at: float | None = None) -> None:
        self.record("focus_change", at, changed=int(changed))

    def record_interrupt(
        self,
        reason: str,
        moment_id: str | None = None,
        age_ticks: int | None = None,
        at: float | None = None,
    ) -> None:
        self.record("interrupt", at, reason=reason, moment_id=moment_id, age_ticks=age_ticks)

    def record_counter(self, name: str, by: int = 1, at: float | None = None) -> None:
        self.record("counter", at, name=name, by=by)

    def record_neighborhood(self, nodes: int, edges: int, at: float | None = None) -> None:
        self.record("neighborhood", at, nodes=nodes, edges=edges)

    def record_pressure(
        self,
        contradiction: float,
        top_edges: Iterable[Mapping[str, Any] | TopEdge] = (),
        at: float | None = None,
    ) -> None:
        edges = [e.model_dump(by_alias=True) if isinstance(e, TopEdge) else e for e in top_edges]
        self.record("pressure", at, contradiction=contradiction, top_edges=edges)

    def record_plateau(self, seconds: float, at: float | None = None) -> None:
        self.record("plateau", at, seconds=seconds)

    def seed_counters(self, counters: Counters) -> None:
        """Continue totals another leader published: each counter becomes the larger of the two."""
        for name, value in counters.model_dump().items():
            self.counters[name] = max(self.counters[name], int(value))

    # -- reading the state --------------------------------------------------------------

    def evidence(self, now: float | None = None) -> rules.Evidence:
        now = self.clock() if now is None else now
        marks = self._violations
        return rules.Evidence(
            now=now,
            window=self.window,
            stale_after=self.stale_after,
            started_at=self.started_at,
            last_signal_at=self.last_signal_at,
            last_query_write_at=marks["query_write_attempts"].last_at,
            last_dmz_violation_at=marks["dmz_violation_attempts"].last_at,
            last_epoch_mismatch_at=marks["async_epoch_mismatch"].last_at,
            query_writes_in_window=marks["query_write_attempts"].total(now),
            dmz_violations_in_window=marks["dmz_violation_attempts"].total(now),
            epoch_mismatches_in_window=marks["async_epoch_mismatch"].total(now),
        )

    def status(self, now: float | None = None) -> Status:
        return rules.evaluate(self.evidence(now))

    def next_status_change_at(self, now: float | None = None) -> float | None:
        return rules.next_change_at(self.evidence(now))

    def sink_percentiles(self, now: float | None = None) -> tuple[float, float]:
        now = self.clock() if now is None else now
        values = self._sinks.values(now)
        if not values and self._last_sink is not None:
            # A quiet engine still has a sink set: show the last size rather than zero.
            values = [self._last_sink]
        return percentile(values, 50), percentile(values, 95)

    def focus_rate_per_min(self, now: float | None = None) -> float:
        now = self.clock() if now is None else now
        return len(self._focus.values(now)) * 60.0 / self.sample_window

    def last_interrupt(self) -> LastInterrupt:
        signal = self._interrupt
        if signal is None:
            return LastInterrupt(reason="none", moment_id=None, age_ticks=None)
        age = signal.age_ticks
        if self._interrupt_tick is not None and self.tick is not None:
            age = (age or 0) + max(0, self.tick - self._interrupt_tick)
        return LastInterrupt(reason=signal.reason, moment_id=signal.moment_id, age_ticks=age)

    def payload(self, now: float | None = None) -> HealthPayload:
        now = self.clock() if now is None else now
        p50, p95 = self.sink_percentiles(now)
        return HealthPayload(
            schema_=SCHEMA_VERSION,
            ts=now,
            playthrough_id=self.playthrough_id,
            place_id=self.place_id,
            runner=Runner(
                speed=self.speed,
                tick=self.tick or 0,
                last_interrupt=self.last_interrupt(),
            ),
            status=self.status(now),
            counters=Counters(**self.counters),
            attention=Attention(
                sink_set_size=SinkSetSize(p50=p50, p95=p95),
                neighborhood_size=NeighborhoodSize(nodes=self.nodes, edges=self.edges),
                focus_reconfig_rate_per_min=self.focus_rate_per_min(now),
                plateau_seconds=self.plateau_seconds,
            ),
            pressure=Pressure(contradiction=self.contradiction, top_edges=list(self.top_edges)),
        )
