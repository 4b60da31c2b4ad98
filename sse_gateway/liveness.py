"""Publisher liveness (SPEC "Publisher liveness"): the age of the newest health, and staleness.

Redis can be up and the gateway fine while the publisher has died: the
stream then goes quiet, and a quiet stream looks like a healthy one. So the
relay records when it last relayed a ``connectome_health`` (monotonic clock)
and the ``ts`` that payload carried. Pings say the age; after
``stale_after`` seconds without one the state turns stale and every stream
gets one ``health_stale`` event (the relay broadcasts it); the next health
ends the state without an event of its own (the health itself says so).

Before the first health the clock runs from the gateway's start: a gateway
that starts while every publisher is down reports it ``stale_after`` seconds
later, with ``last_ts`` null.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from connectome_sse.contract import HEALTH_STALE_EVENT
from sse_gateway.framing import Frame, encode_event


class Liveness:
    def __init__(self, stale_after: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stale_after = stale_after
        self.clock = clock
        self.started = clock()
        self.last_at: float | None = None
        self.last_ts: float | None = None
        self.stale = False

    def record(self, data: bytes) -> None:
        """A health was relayed now; ``data`` is its payload (its ``ts`` is kept if it has one)."""
        self.last_at = self.clock()
        self.last_ts = payload_ts(data)
        self.stale = False

    def age(self) -> float | None:
        """Seconds since the newest health was relayed; None before the first."""
        return None if self.last_at is None else self.clock() - self.last_at

    def silent_for(self) -> float:
        """Seconds without a health: since the newest one, or since the start."""
        return self.clock() - (self.started if self.last_at is None else self.last_at)

    def turn_stale(self) -> bool:
        """True once, when the silence first reaches ``stale_after``."""
        if self.stale or self.silent_for() < self.stale_after:
            return False
        self.stale = True
        return True

    def until_due(self) -> float:
        """Seconds until the state turns stale (0 when it already is or should be)."""
        return max(0.0, self.stale_after - self.silent_for())

    def ping_age(self) -> float | None:
        age = self.age()
        return None if age is None else round(age, 1)

    def stale_frame(self) -> Frame:
        data = json.dumps({"age": round(self.silent_for(), 1), "last_ts": self.last_ts})
        return Frame(encode_event(HEALTH_STALE_EVENT, data))


def payload_ts(data: bytes) -> float | None:
    """The ``ts`` of a health payload, or None when it has none (raw publishes may not)."""
    try:
        ts = json.loads(data).get("ts")
    except (ValueError, AttributeError):
        return None
    return float(ts) if isinstance(ts, int | float) and not isinstance(ts, bool) else None
