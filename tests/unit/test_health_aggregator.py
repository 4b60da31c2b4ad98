"""The aggregator: percentiles, rates, latest values, counters, in-process record methods."""

from __future__ import annotations

import pytest

from connectome_core.payload import Counters, HealthPayload, TopEdge
from health_publisher.aggregator import TOP_EDGES_KEPT, HealthAggregator, percentile
from health_publisher.signals import BadSignal, parse_signal
from tests.support.publisher import T0, FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def agg(clock: FakeClock) -> HealthAggregator:
    return HealthAggregator(window=300, stale_after=10, sample_window=60, clock=clock)


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([], 50, 0.0),
        ([7], 95, 7.0),
        ([1, 2, 3, 4], 50, 2.5),
        ([4, 1, 3, 2], 50, 2.5),
        (list(range(1, 101)), 95, 95.05),
        (list(range(1, 101)), 50, 50.5),
        ([10, 20], 0, 10.0),
        ([10, 20], 100, 20.0),
    ],
)
def test_percentile(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == pytest.approx(expected)


def test_sink_percentiles_cover_the_last_sample_window(
    agg: HealthAggregator, clock: FakeClock
) -> None:
    for value in (100, 100, 100):
        agg.record_sink_size(value)
    clock.advance(61)
    for value in range(1, 21):
        agg.record_sink_size(value)
    p50, p95 = agg.sink_percentiles()
    assert p50 == pytest.approx(10.5)
    assert p95 == pytest.approx(19.05)


def test_a_quiet_engine_keeps_its_last_sink_size(agg: HealthAggregator, clock: FakeClock) -> None:
    agg.record_sink_size(8)
    clock.advance(120)
    assert agg.sink_percentiles() == (8.0, 8.0)


def test_focus_reconfigurations_per_minute(agg: HealthAggregator, clock: FakeClock) -> None:
    for _ in range(5):
        agg.record_focus_change(True)
        agg.record_focus_change(False)  # evaluations without a change do not count
        clock.advance(10)
    assert agg.focus_rate_per_min() == pytest.approx(5.0)
    clock.advance(15)  # the first change is now 65 s old
    assert agg.focus_rate_per_min() == pytest.approx(4.0)
    clock.advance(60)
    assert agg.focus_rate_per_min() == 0.0


def test_rate_scales_to_minutes_for_other_sample_windows(clock: FakeClock) -> None:
    agg = HealthAggregator(sample_window=30, clock=clock)
    for _ in range(3):
        agg.record_focus_change(1)
    assert agg.focus_rate_per_min() == pytest.approx(6.0)


def test_payload_reflects_every_kind(agg: HealthAggregator, clock: FakeClock) -> None:
    agg.record_tick(tick=40, speed="x2", playthrough_id="pt", place_id="hall")
    agg.record_interrupt("contradicts_visible", moment_id="m9", age_ticks=2)
    agg.record_tick(tick=45, speed="x2", playthrough_id="pt", place_id="hall")
    agg.record_neighborhood(nodes=12, edges=30)
    agg.record_plateau(4.5)
    agg.record_counter("query_write_attempts", by=3)
    edges = [
        {
            "from": f"n{i}",
            "to": "x",
            "polarity": -1,
            "strength": 1,
            "confidence": 1,
            "contrib": i / 20,
        }
        for i in range(15)
    ]
    agg.record_pressure(0.6, edges)
    payload = agg.payload()
    assert isinstance(payload, HealthPayload)
    assert payload.ts == T0
    assert (payload.playthrough_id, payload.place_id) == ("pt", "hall")
    assert (payload.runner.speed, payload.runner.tick) == ("x2", 45)
    interrupt = payload.runner.last_interrupt
    assert (interrupt.reason, interrupt.moment_id, interrupt.age_ticks) == (
        "contradicts_visible",
        "m9",
        7,  # 2 when reported, plus 5 ticks since
    )
    assert payload.attention.neighborhood_size.nodes == 12
    assert payload.attention.plateau_seconds == 4.5
    assert payload.counters.query_write_attempts == 3
    assert payload.pressure.contradiction == 0.6
    top = payload.pressure.top_edges
    assert len(top) == TOP_EDGES_KEPT
    assert [e.from_ for e in top[:2]] == ["n14", "n13"]  # strongest contribution first
    assert payload.status.state == "ERROR"
    HealthPayload.model_validate_json(payload.to_json())


def test_no_interrupt_yet_is_reason_none(agg: HealthAggregator) -> None:
    last = agg.payload().runner.last_interrupt
    assert (last.reason, last.moment_id, last.age_ticks) == ("none", None, None)


def test_record_pressure_accepts_models(agg: HealthAggregator) -> None:
    edge = TopEdge(from_="a", to="b", polarity=-0.2, strength=0.3, confidence=0.4, contrib=0.5)
    agg.record_pressure(0.5, [edge])
    assert agg.payload().pressure.top_edges == [edge]


@pytest.mark.parametrize(
    "call",
    [
        lambda a: a.record_sink_size(-1),
        lambda a: a.record_counter("nope"),
        lambda a: a.record_pressure(2.0),
        lambda a: a.record_tick(tick=1, speed="warp", playthrough_id="p", place_id="q"),
        lambda a: a.record_interrupt("mumbled"),
        lambda a: a.record_plateau(float("nan")),
        lambda a: a.record("teleport", value=1),
    ],
)
def test_bad_in_process_records_raise_and_change_nothing(agg: HealthAggregator, call) -> None:
    before = agg.payload().to_json()
    with pytest.raises(BadSignal):
        call(agg)
    assert agg.payload().to_json() == before
    assert agg.applied == 0


def test_replay_rebuilds_windows_without_counting_totals(agg: HealthAggregator) -> None:
    signal = parse_signal({"kind": "counter", "name": "dmz_violation_attempts"})
    agg.apply(signal, count_totals=False)
    assert agg.counters["dmz_violation_attempts"] == 0
    assert agg.status().state == "ERROR"


def test_seed_counters_keeps_the_larger_total(agg: HealthAggregator) -> None:
    agg.record_counter("query_write_attempts", by=5)
    agg.seed_counters(
        Counters(query_write_attempts=2, dmz_violation_attempts=4, async_epoch_mismatch=0)
    )
    assert agg.counters == {
        "query_write_attempts": 5,
        "dmz_violation_attempts": 4,
        "async_epoch_mismatch": 0,
    }
