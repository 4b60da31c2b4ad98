"""``RateLimitedLog``, which every flood-prone log line goes through."""

from __future__ import annotations

import logging

import pytest

from connectome_core.logs import RateLimitedLog


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_key_and_interval_then_the_count_of_what_was_held(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    limited = RateLimitedLog(logging.getLogger("test.limited"), interval=10.0, clock=clock)
    with caplog.at_level(logging.INFO, logger="test.limited"):
        sent = [limited.warning("bad", "bad message %d", n) for n in range(1000)]
        assert limited.info("other", "another key is its own")
        clock.now += 10.0
        assert limited.warning("bad", "bad message %d", 1000)
        clock.now += 10.0
        assert limited.warning("bad", "bad message %d", 1001)
    assert sent.count(True) == 1
    assert caplog.messages == [
        "bad message 0",
        "another key is its own",
        "bad message 1000 (999 similar lines suppressed)",
        "bad message 1001",
    ]


def test_keys_from_input_cannot_grow_without_bound() -> None:
    limited = RateLimitedLog(logging.getLogger("test.limited.keys"), max_keys=8, clock=Clock())
    assert limited.info("event-0", "event 0")
    assert not limited.info("event-0", "event 0")  # held: within the interval
    for n in range(1, 9):  # the ninth new key clears what the first eight left
        limited.info(f"event-{n}", "event %d", n)
    assert limited.info("event-0", "event 0")  # forgotten, so it goes out again
