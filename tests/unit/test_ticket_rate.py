"""Token buckets of tickets per key (sse_gateway.ticket_rate), on a clock the test moves."""

from __future__ import annotations

import pytest

from sse_gateway.ticket_rate import TicketRate


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_a_minutes_worth_at_once_then_one_per_interval(clock: Clock) -> None:
    rate = TicketRate(3, clock=clock)
    assert [rate.take(["a"]) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert rate.take(["a"]) == pytest.approx(20.0)  # 60 s / 3
    clock.now += 19.0
    assert rate.take(["a"]) == pytest.approx(1.0)
    clock.now += 1.0
    assert rate.take(["a"]) == 0.0
    assert rate.take(["a"]) == pytest.approx(20.0)


def test_every_key_must_have_a_ticket_and_a_refusal_takes_nothing(clock: Clock) -> None:
    rate = TicketRate(2, clock=clock)
    assert rate.take(["address", "ada"]) == 0.0
    assert rate.take(["address", "ada"]) == 0.0
    assert rate.take(["address", "bob"]) == pytest.approx(30.0)  # the address is spent
    assert rate.take(["other", "ada"]) == pytest.approx(30.0)  # the subject is spent
    # Neither refusal took anything from "other" or "bob".
    assert rate.take(["other", "bob"]) == 0.0
    assert rate.take(["other", "bob"]) == 0.0
    assert rate.take(["other"]) > 0


def test_zero_is_no_limit(clock: Clock) -> None:
    rate = TicketRate(0, clock=clock)
    assert all(rate.take(["a"]) == 0.0 for _ in range(10_000))
    assert len(rate) == 0


def test_idle_buckets_are_forgotten(clock: Clock) -> None:
    rate = TicketRate(60, clock=clock)
    for n in range(100):
        rate.take([f"client-{n}"])
    assert len(rate) == 100
    clock.now += 60.0  # every bucket full again: the same as absent
    rate.take(["new"])
    assert len(rate) == 1


def test_the_number_of_buckets_is_capped(clock: Clock) -> None:
    rate = TicketRate(1, max_keys=50, clock=clock)
    for n in range(1000):
        assert rate.take([f"client-{n}"]) == 0.0
    assert len(rate) == 50
    # The most recent keys are the ones kept.
    assert rate.take(["client-999"]) > 0
