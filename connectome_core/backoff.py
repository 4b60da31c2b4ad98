"""Capped exponential backoff with jitter, for every reconnect loop we own.

Jitter (a uniform draw in the upper half of the current step) spreads the reconnects of many
gateways after a Redis restart instead of synchronising them.
"""

from __future__ import annotations

import random


class Backoff:
    def __init__(
        self,
        base: float = 0.1,
        cap: float = 5.0,
        rng: random.Random | None = None,
    ) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * (2**self.attempt))
        self.attempt += 1
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0
