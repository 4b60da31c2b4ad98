"""Log setup shared by every process, and a limiter for lines that bad input can repeat.

One line per record, to stderr. A flood of malformed messages or signals must
not become a flood of log lines: such lines go through ``RateLimitedLog``,
which lets one line per key through per interval and says, on the next line
it lets through, how many it held back.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable


def setup_logging(level: str = "info") -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)-7s [%(process)d] %(name)s: %(message)s",
        force=True,
    )


class RateLimitedLog:
    """At most one line per key every ``interval`` seconds; the rest are counted.

    ``key`` groups lines that repeat (a drop reason, a signal kind); the line
    that follows a quiet spell ends with ``(N similar lines suppressed)``.
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 1024,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self.max_keys = max_keys
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def log(self, level: int, key: str, msg: str, *args: object) -> bool:
        """Log unless ``key`` logged within the interval; True when the line went out."""
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        if last is None and len(self._last) >= self.max_keys:
            # Keys come from input (event names, reasons): never let them grow unbounded.
            self._last.clear()
            self._suppressed.clear()
        self._last[key] = now
        held = self._suppressed.pop(key, 0)
        if held:
            msg = f"{msg} (%d similar lines suppressed)"
            args = (*args, held)
        self.logger.log(level, msg, *args)
        return True

    def warning(self, key: str, msg: str, *args: object) -> bool:
        return self.log(logging.WARNING, key, msg, *args)

    def info(self, key: str, msg: str, *args: object) -> bool:
        return self.log(logging.INFO, key, msg, *args)
