"""The publisher's health freshness: the age of the newest health, and staleness.

A quiet stream looks like a healthy one, so the relay records when it last relayed a
``connectome_health`` and the ``ts`` it carried: pings say the age, and after
``stale_after`` seconds without one (counted from the start before the first) every
stream gets one ``health_stale``; the next health ends the state. A ``ts`` no finite
float can hold counts as absent.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable

from connectome_core.contract import HEALTH_STALE_EVENT
from sse_gateway.framing import Frame, encode_json_event


class HealthWatch:
    def __init__(self, stale_after: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stale_after = stale_after
        self.clock = clock
        self.started = clock()
        self.last_at: float | None = None
        self.last_ts: float | None = None
        self.stale = False
        # The last stale frame made: a storm of streams opening while the publisher is
        # silent shares it (its age moves in tenths of a second).
        self._stale_frame: tuple[tuple[float, float | None], Frame] | None = None

    def record(self, ts: float | None) -> None:
        """A health was relayed now; ``ts`` is its payload's (``payload_ts``)."""
        self.last_at = self.clock()
        self.last_ts = ts
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
        key = (round(self.silent_for(), 1), self.last_ts)
        made = self._stale_frame
        if made is None or made[0] != key:
            value = {"age": key[0], "last_ts": key[1]}
            made = self._stale_frame = (key, Frame(encode_json_event(HEALTH_STALE_EVENT, value)))
        return made[1]


def payload_ts(data: bytes) -> float | None:
    """The ``ts`` of a health payload as a finite float; None when it has none (raw
    publishes may not) or one no float can hold. Never raises, whatever ``data`` is."""
    try:
        payload = json.loads(data)
        ts = payload.get("ts") if isinstance(payload, dict) else None
        if not isinstance(ts, int | float) or isinstance(ts, bool):
            return None
        value = float(ts)
    except (ValueError, OverflowError, RecursionError):
        return None
    return value if math.isfinite(value) else None
