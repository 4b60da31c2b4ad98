"""What the gateway's Redis reader says about an outage: once what happened, then since when."""

from __future__ import annotations

import logging
import time

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from connectome_core.redis_target import parse_redis_url
from sse_gateway.redis_source import OutageLog

REFUSED = RedisConnectionError("Error 111 connecting to 127.0.0.1:6390. Connection refused.")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "sse_gateway.redis"]


def test_a_redis_never_reached_is_not_lost_and_a_long_outage_says_since_when(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    started = time.mktime((2026, 1, 2, 13, 4, 5, 0, 0, -1))
    outage = OutageLog(
        parse_redis_url("redis://127.0.0.1:6390/0"), clock=clock, wall=lambda: started
    )
    with caplog.at_level(logging.INFO, logger="sse_gateway.redis"):
        for _ in range(12):  # an attempt every 5 s: a minute down
            outage.failed(REFUSED, 5.0)
            clock.now += 5.0
        outage.failed(REFUSED, 5.0)
        outage.subscribed("127.0.0.1:6390")
    assert lines(caplog) == [
        "cannot reach Redis yet (ConnectionError: Error 111 connecting to 127.0.0.1:6390. "
        "Connection refused.); retrying in 5.00s",
        "Redis still down since 13:04:05 (7 attempts)",
        "Redis still down since 13:04:05 (13 attempts)",
        "redis connected: subscribed to sse:* on redis://127.0.0.1:6390/0 (127.0.0.1:6390)",
    ]


def test_a_redis_lost_after_a_subscription_says_lost_then_reconnected(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    outage = OutageLog(parse_redis_url("redis://127.0.0.1:6390/0"), clock=clock)
    outage.subscribed("127.0.0.1:6390")
    with caplog.at_level(logging.INFO, logger="sse_gateway.redis"):
        outage.failed(REFUSED, 0.01)
        clock.now += 1.0
        outage.failed(REFUSED, 0.2)  # within the outage: no line of its own
        outage.subscribed("127.0.0.1:6390")
    messages = lines(caplog)
    assert len(messages) == 2
    assert messages[0].startswith("redis lost (ConnectionError: Error 111")
    assert messages[1].startswith("redis reconnected: subscribed to sse:*")
