"""The demo engine's scenario: valid signals only, calm and bursts, the misbehaviour cycle."""

from __future__ import annotations

from connectome_sse.demo.scenario import DemoConfig, DemoScenario
from health_publisher.aggregator import HealthAggregator
from health_publisher.signals import parse_signal
from tests.support.publisher import FakeClock


def run(scenario: DemoScenario, seconds: float) -> list[tuple[float, dict[str, str]]]:
    out: list[tuple[float, dict[str, str]]] = []
    t = 0.0
    while t < seconds:
        out.extend((t, entry) for entry in scenario.step(t))
        t += scenario.period
    return out


def test_every_entry_is_a_valid_signal_and_every_kind_appears() -> None:
    entries = run(DemoScenario(DemoConfig(seed=3)), 120)
    kinds = {parse_signal(entry).kind for _, entry in entries}
    assert kinds == {
        "tick",
        "sink_size",
        "focus_change",
        "interrupt",
        "counter",
        "neighborhood",
        "pressure",
        "plateau",
    }


def test_same_seed_same_run() -> None:
    assert run(DemoScenario(DemoConfig(seed=9)), 30) == run(DemoScenario(DemoConfig(seed=9)), 30)


def test_speed_sets_the_tick_rate() -> None:
    assert DemoScenario(DemoConfig(speed="x1", tick_rate=2)).period == 0.5
    assert DemoScenario(DemoConfig(speed="x3", tick_rate=2)).period == 1 / 6
    assert DemoScenario(DemoConfig(speed="pause")).period == 1.0


def test_misbehaviour_cycle_and_stall() -> None:
    scenario = DemoScenario(DemoConfig(seed=1, violation_every=10, stall_seconds=4))
    entries = run(scenario, 41)
    counters = [(t, e["name"]) for t, e in entries if e["kind"] == "counter"]
    assert [name for _, name in counters] == [
        "async_epoch_mismatch",
        "query_write_attempts",
        "dmz_violation_attempts",
    ]
    assert [round(t) for t, _ in counters] == [5, 15, 35]
    # The stall (t = 25) is a silence of stall_seconds.
    times = [t for t, _ in entries]
    assert not [t for t in times if 25 <= t < 29]
    assert [t for t in times if 29 <= t < 30]


def test_no_misbehaviour_when_disabled() -> None:
    entries = run(DemoScenario(DemoConfig(seed=1, violation_every=0)), 120)
    assert not [e for _, e in entries if e["kind"] == "counter"]


def test_the_demo_moves_the_status_through_ok_warn_and_error() -> None:
    clock = FakeClock(0.0)
    agg = HealthAggregator(window=15, stale_after=10, clock=clock)
    scenario = DemoScenario(DemoConfig(seed=5, violation_every=30, stall_seconds=14))
    states = []
    t = 0.0
    while t < 130:
        clock.now = t
        for entry in scenario.step(t):
            agg.apply(parse_signal(entry))
        states.append(agg.status().state)
        t += scenario.period
    seen = [s for i, s in enumerate(states) if i == 0 or states[i - 1] != s]
    assert seen[:6] == ["OK", "WARN", "OK", "ERROR", "OK", "WARN"]
    assert "ERROR" in seen[6:]


def test_a_misbehaviour_due_during_a_stall_comes_right_after_it() -> None:
    scenario = DemoScenario(DemoConfig(seed=1, violation_every=2, stall_seconds=3))
    entries = run(scenario, 9)
    counters = [(t, e["name"]) for t, e in entries if e["kind"] == "counter"]
    assert counters[-1] == (8.0, "dmz_violation_attempts")
