"""The stream open/close log lines: their fields, and the per-second budget."""

from __future__ import annotations

import logging

import pytest

from sse_gateway.stream_lines import LineBudget, StreamLines, field, selection


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_reconnect_storm_is_held_to_the_budget_and_then_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    logger = logging.getLogger("test.stream_lines.storm")
    lines = StreamLines(LineBudget(logger, per_second=20, clock=clock))
    with caplog.at_level(logging.INFO, logger="test.stream_lines.storm"):
        for n in range(10_000):
            lines.opened(f"127.0.0.1:{n}", None, None, "snapshot")
            clock.now += 0.0001  # ten thousand within a second
        clock.now += 1.0
        lines.closed("127.0.0.1:1", "alice", 1.54, 100, 2, "client")
    assert len(caplog.messages) == 22
    assert caplog.messages[19] == "stream opened peer=127.0.0.1:19 sub=- events=* opening=snapshot"
    assert caplog.messages[20] == "9980 stream lines suppressed"
    assert caplog.messages[21] == (
        "stream closed peer=127.0.0.1:1 sub=alice duration=1.5s bytes=100 events=2 reason=client"
    )


def test_a_cut_is_a_warning_and_other_ends_are_info(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.stream_lines.levels")
    lines = StreamLines(LineBudget(logger))
    with caplog.at_level(logging.INFO, logger="test.stream_lines.levels"):
        for reason in ("cut", "timeout", "drain", "expired"):
            lines.closed("p", None, 0, 0, 0, reason)
    assert [r.levelno for r in caplog.records] == [logging.WARNING] * 2 + [logging.INFO] * 2


def test_fields_stay_one_printable_word() -> None:
    assert field(None) == "-" and field("") == "-"
    assert field("ada lovelace\nreason=forged") == "ada?lovelace?reason=forged"
    assert len(field("x" * 1000)) == 64
    assert selection(None) == "*"
    assert selection(frozenset()) == "-"
    assert selection(frozenset({"b", "a"})) == "a,b"
