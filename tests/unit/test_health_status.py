"""Every status rule: ERROR, WARN (mismatch, staleness), OK, recovery after the window, notes."""

from __future__ import annotations

import pytest

from health_publisher.aggregator import HealthAggregator
from health_publisher.status import Evidence, evaluate, next_change_at
from tests.support.publisher import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def agg(clock: FakeClock) -> HealthAggregator:
    return HealthAggregator(window=300, stale_after=10, clock=clock)


def test_ok_with_fresh_signals(agg: HealthAggregator) -> None:
    agg.record_sink_size(3)
    status = agg.status()
    assert (status.state, status.score, status.notes) == ("OK", 1.0, [])


@pytest.mark.parametrize("counter", ["query_write_attempts", "dmz_violation_attempts"])
def test_error_while_a_violation_is_within_the_window(
    agg: HealthAggregator, clock: FakeClock, counter: str
) -> None:
    agg.record_counter(counter)
    status = agg.status()
    assert (status.state, status.score) == ("ERROR", 0.0)
    assert len(status.notes) == 1
    assert ("query write" if counter.startswith("query") else "DMZ violation") in status.notes[0]
    clock.advance(299)
    agg.record_sink_size(1)  # keep the stream fresh
    assert agg.status().state == "ERROR"


@pytest.mark.parametrize("counter", ["query_write_attempts", "dmz_violation_attempts"])
def test_error_recovers_to_ok_when_the_window_has_passed(
    agg: HealthAggregator, clock: FakeClock, counter: str
) -> None:
    agg.record_counter(counter)
    clock.advance(300)
    agg.record_sink_size(1)
    status = agg.status()
    assert (status.state, status.score, status.notes) == ("OK", 1.0, [])
    assert agg.counters[counter] == 1  # counters stay totals


def test_warn_on_epoch_mismatch_then_recovery(agg: HealthAggregator, clock: FakeClock) -> None:
    agg.record_counter("async_epoch_mismatch", by=2)
    status = agg.status()
    assert (status.state, status.score) == ("WARN", 0.7)
    assert "async epoch mismatch: 2 in the last 300s" in status.notes[0]
    clock.advance(300.0)
    agg.record_sink_size(1)
    assert agg.status().state == "OK"
    assert agg.counters["async_epoch_mismatch"] == 2


def test_error_wins_over_warn_and_notes_name_both(agg: HealthAggregator) -> None:
    agg.record_counter("async_epoch_mismatch")
    agg.record_counter("dmz_violation_attempts")
    status = agg.status()
    assert status.state == "ERROR"
    assert "DMZ" in status.notes[0] and "epoch" in status.notes[1]


def test_warn_on_staleness_and_back_to_ok_on_a_signal(
    agg: HealthAggregator, clock: FakeClock
) -> None:
    agg.record_sink_size(2)
    clock.advance(9.9)
    assert agg.status().state == "OK"
    clock.advance(0.1)
    status = agg.status()
    assert (status.state, status.score) == ("WARN", 0.7)
    assert status.notes == ["stale: no signals for 10s (limit 10s)"]
    agg.record_focus_change(False)
    assert agg.status().state == "OK"


def test_stale_when_nothing_ever_arrived(agg: HealthAggregator, clock: FakeClock) -> None:
    assert agg.status().state == "OK"
    clock.advance(10)
    assert agg.status().notes == ["stale: no signals yet for 10s (limit 10s)"]


def test_staleness_adds_to_an_error(agg: HealthAggregator, clock: FakeClock) -> None:
    agg.record_counter("query_write_attempts")
    clock.advance(60)
    status = agg.status()
    assert status.state == "ERROR"
    assert [note.split(":")[0] for note in status.notes] == ["query write attempt", "stale"]


def test_a_bad_signal_does_not_refresh_staleness(agg: HealthAggregator, clock: FakeClock) -> None:
    from health_publisher.signals import BadSignal

    agg.record_sink_size(1)
    clock.advance(11)
    with pytest.raises(BadSignal):
        agg.record_sink_size(-5)
    assert agg.status().state == "WARN"


def test_a_violation_seen_late_counts_from_when_it_happened(
    agg: HealthAggregator, clock: FakeClock
) -> None:
    # A backlog applied after a restart: the violation happened 301 s ago.
    agg.record_counter("dmz_violation_attempts", at=clock.now - 301)
    agg.record_sink_size(1)
    assert agg.status().state == "OK"
    assert agg.counters["dmz_violation_attempts"] == 1


def test_a_future_time_is_clamped_to_now(agg: HealthAggregator, clock: FakeClock) -> None:
    agg.record_counter("query_write_attempts", at=clock.now + 1000)
    clock.advance(300)
    agg.record_sink_size(1)
    assert agg.status().state == "OK"


def evidence(**kw: float | None) -> Evidence:
    base: dict[str, float | None] = {"now": 100.0, "window": 30.0, "stale_after": 10.0}
    base.update(kw)
    return Evidence(started_at=0.0, **base)  # type: ignore[arg-type]


def test_next_change_is_the_earliest_expiry_or_staleness() -> None:
    assert next_change_at(evidence(last_signal_at=95.0)) == 105.0
    ev = evidence(last_signal_at=99.0, last_query_write_at=80.0, last_epoch_mismatch_at=85.0)
    assert next_change_at(ev) == 109.0
    assert next_change_at(evidence(last_signal_at=99.0, last_dmz_violation_at=75.0)) == 105.0


def test_next_change_when_already_stale_and_nothing_pending() -> None:
    assert next_change_at(evidence(last_signal_at=50.0)) is None
    assert evaluate(evidence(last_signal_at=50.0)).state == "WARN"
