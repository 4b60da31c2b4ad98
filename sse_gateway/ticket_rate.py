"""Tickets per minute per key (a client address, a token subject), in bounded memory.

Token buckets of ``per_minute`` that refill at ``per_minute`` a minute; a request is
granted only when every key it names has a ticket left. Full buckets are forgotten, and
past ``max_keys`` the least recently used goes too.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

REFILL_SECONDS = 60.0


class TicketRate:
    """``per_minute`` tickets per key; 0 means no limit."""

    def __init__(
        self,
        per_minute: int,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_minute = per_minute
        self.max_keys = max_keys
        self._clock = clock
        self._per_second = per_minute / REFILL_SECONDS
        # key -> (tickets left, when last taken), oldest take first
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, keys: Iterable[str]) -> float:
        """0 when a ticket was taken from each key's bucket; else the seconds until every
        one of them has a ticket again (and nothing was taken)."""
        if not self.per_minute:
            return 0.0
        now = self._clock()
        self._forget_full(now)
        levels = {key: self._level(key, now) for key in keys}
        short = [1.0 - level for level in levels.values() if level < 1.0]
        if short:
            return max(short) / self._per_second
        for key, level in levels.items():
            self._buckets[key] = (level - 1.0, now)
            self._buckets.move_to_end(key)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return 0.0

    def _level(self, key: str, now: float) -> float:
        held = self._buckets.get(key)
        if held is None:
            return float(self.per_minute)
        left, taken_at = held
        return min(float(self.per_minute), left + (now - taken_at) * self._per_second)

    def _forget_full(self, now: float) -> None:
        while self._buckets:
            key, (_, taken_at) = next(iter(self._buckets.items()))
            if now - taken_at < REFILL_SECONDS:
                return
            del self._buckets[key]
