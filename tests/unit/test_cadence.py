"""The cadence: a drift-free interval, at once on a state change, never above the rate cap.

Driven by explicit times (the cadence has no clock), never by sleeps.
"""

from __future__ import annotations

import itertools

import pytest

from health_publisher.cadence import Cadence


def simulate(
    cadence: Cadence, states: dict[float, str], until: float, step: float = 0.01
) -> list[tuple[float, str]]:
    """Poll every ``step`` seconds like the loop does; ``states`` says when the state changes."""
    published: list[tuple[float, str]] = []
    state = "OK"
    for i in range(int(until / step) + 1):
        now = round(i * step, 6)
        state = states.get(now, state)
        if cadence.due(now, state):
            cadence.published(now, state)
            published.append((now, state))
    return published


def gaps(times: list[float]) -> list[float]:
    return [round(b - a, 6) for a, b in itertools.pairwise(times)]


def test_first_event_at_once_then_every_interval() -> None:
    published = simulate(Cadence(interval=1.0, max_rate=2.0), {}, until=5.0)
    assert [t for t, _ in published] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


def test_state_change_goes_out_at_once_between_ticks() -> None:
    published = simulate(Cadence(1.0, max_rate=10.0), {2.3: "ERROR"}, until=4.0)
    assert (2.3, "ERROR") in published
    # The grid is not moved by the extra event: ticks stay on whole seconds.
    assert [t for t, _ in published] == [0.0, 1.0, 2.0, 2.3, 3.0, 4.0]


def test_state_change_right_after_an_event_waits_for_the_cap() -> None:
    published = simulate(Cadence(1.0, 2.0), {1.1: "WARN"}, until=3.0)
    assert [t for t, _ in published] == [0.0, 1.0, 1.5, 2.0, 3.0]
    assert published[2] == (1.5, "WARN")


def test_tick_held_back_by_the_cap_then_the_grid_resumes() -> None:
    published = simulate(Cadence(1.0, 2.0), {0.9: "ERROR"}, until=3.0)
    assert [t for t, _ in published] == [0.0, 0.9, 1.4, 2.0, 3.0]


def test_a_change_undone_before_the_cap_allows_is_not_sent() -> None:
    published = simulate(Cadence(1.0, 2.0), {1.1: "WARN", 1.2: "OK"}, until=2.0)
    assert [s for _, s in published] == ["OK", "OK", "OK"]


def test_interval_shorter_than_the_cap_publishes_at_the_cap() -> None:
    published = simulate(Cadence(interval=0.1, max_rate=2.0), {}, until=5.0)
    assert set(gaps([t for t, _ in published])) == {0.5}
    assert len(published) == 11


def test_never_more_than_max_rate_in_any_second_even_when_flapping() -> None:
    flapping = {round(i * 0.05, 6): ("OK", "ERROR")[i % 2] for i in range(200)}
    published = simulate(Cadence(interval=1.0, max_rate=4.0), flapping, until=10.0)
    times = [t for t, _ in published]
    assert min(gaps(times)) >= 0.25
    for start in times:
        assert sum(1 for t in times if start <= t < start + 1.0) <= 4


def test_a_late_loop_skips_missed_ticks_instead_of_bursting() -> None:
    cadence = Cadence(1.0, 2.0)
    cadence.published(0.0, "OK")
    assert cadence.due(5.7, "OK")
    cadence.published(5.7, "OK")
    # The 6.0 tick waits for the cap (6.2); the one after is back on the grid.
    assert cadence.next_due(5.7, "OK") == pytest.approx(6.2)
    assert not cadence.due(6.1, "OK")
    cadence.published(6.2, "OK")
    assert cadence.next_due(6.2, "OK") == pytest.approx(7.0)


def test_next_due() -> None:
    cadence = Cadence(1.0, 2.0)
    assert cadence.next_due(10.0, "OK") == 10.0
    cadence.published(10.0, "OK")
    assert cadence.next_due(10.2, "OK") == pytest.approx(11.0)
    assert cadence.next_due(10.2, "ERROR") == pytest.approx(10.5)
    assert cadence.next_due(10.7, "ERROR") == pytest.approx(10.7)


def test_reset_publishes_at_once_but_keeps_the_cap() -> None:
    cadence = Cadence(1.0, 2.0)
    cadence.published(0.0, "OK")
    cadence.reset()
    assert not cadence.due(0.2, "OK")
    assert cadence.due(0.5, "OK")


@pytest.mark.parametrize(("interval", "rate"), [(0, 1), (1, 0), (-1, 2)])
def test_refuses_non_positive_settings(interval: float, rate: float) -> None:
    with pytest.raises(ValueError):
        Cadence(interval, rate)
