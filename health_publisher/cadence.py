"""When to publish: on a drift-free grid of ``interval`` seconds, at once when the state changes,
and never more than ``max_rate`` events per second (the cap wins; missed grid points are
skipped, never caught up). Pure arithmetic on the monotonic times it is given.
"""

from __future__ import annotations

import math


class Cadence:
    def __init__(self, interval: float, max_rate: float) -> None:
        if interval <= 0 or max_rate <= 0:
            raise ValueError("interval and max_rate must be positive")
        self.interval = interval
        self.min_gap = 1.0 / max_rate
        self.last_at: float | None = None
        self.last_state: str | None = None
        self.next_tick: float | None = None

    def reset(self) -> None:
        """Forget the schedule (leadership lost): the next leader term publishes at once.

        ``last_at`` is kept so the cap still holds across a quick loss and regain.
        """
        self.last_state = None
        self.next_tick = None

    def _earliest(self, now: float) -> float:
        return now if self.last_at is None else max(now, self.last_at + self.min_gap)

    def due(self, now: float, state: str) -> bool:
        if self._earliest(now) > now:
            return False
        if state != self.last_state or self.next_tick is None:
            return True
        return now >= self.next_tick

    def next_due(self, now: float, state: str) -> float:
        """The earliest time at which :meth:`due` can be true for ``state``."""
        earliest = self._earliest(now)
        if state != self.last_state or self.next_tick is None:
            return earliest
        return max(earliest, self.next_tick)

    def published(self, now: float, state: str) -> None:
        self.last_at = now
        self.last_state = state
        if self.next_tick is None:
            self.next_tick = now + self.interval
        elif self.next_tick <= now:
            # The first grid point after now; missed ones are skipped, not replayed.
            missed = math.floor((now - self.next_tick) / self.interval) + 1
            self.next_tick += missed * self.interval
