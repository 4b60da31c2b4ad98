"""The log lines of stream opens and closes: one each, ``key=value``, within a budget.

A reconnect storm brings thousands a second: past ``per_second`` lines in a second the
rest are counted and reported by the next line that goes out (debug level lets every
line out). The same fields go on each record as ``extra`` (the JSON log format shows
them); never a credential.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from sse_gateway.stream_writer import CUT, TIMEOUT

log = logging.getLogger("sse_gateway.stream")

MAX_FIELD_CHARS = 64

# Ends that are the client's pace, not routine: logged as warnings.
_SLOW = frozenset({CUT, TIMEOUT})


class LineBudget:
    """At most ``per_second`` lines in any one-second window; the rest are counted."""

    def __init__(
        self,
        logger: logging.Logger,
        per_second: int = 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.per_second = per_second
        self.clock = clock
        self._window = -1.0
        self._used = 0
        self._held = 0

    def log(
        self, level: int, msg: str, *args: object, extra: Mapping[str, object] | None = None
    ) -> bool:
        """Log unless this second's budget is spent; True when the line went out."""
        if self.logger.isEnabledFor(logging.DEBUG):
            self.logger.log(level, msg, *args, extra=extra)
            return True
        now = self.clock()
        if now - self._window >= 1.0:
            self._window = now
            self._used = 0
        if self._used >= self.per_second:
            self._held += 1
            return False
        self._used += 1
        self.flush()
        self.logger.log(level, msg, *args, extra=extra)
        return True

    def flush(self) -> None:
        """Say how many lines were held back since the last one went out."""
        if self._held:
            self.logger.info("%d stream lines suppressed", self._held)
            self._held = 0


def field(text: str | None) -> str:
    """``text`` as one log field: printable, no spaces, bounded; ``-`` when there is none."""
    if not text:
        return "-"
    return "".join(
        c if c.isprintable() and not c.isspace() else "?" for c in text[:MAX_FIELD_CHARS]
    )


def selection(events: frozenset[str] | None) -> str:
    """``*`` for every event type, ``-`` for none (gateway-made events only)."""
    if events is None:
        return "*"
    return ",".join(sorted(events)) if events else "-"


class StreamLines:
    def __init__(self, budget: LineBudget | None = None) -> None:
        self.budget = budget or LineBudget(log)

    def opened(self, peer: str, sub: str | None, events: frozenset[str] | None, how: str) -> None:
        if self.budget.logger.isEnabledFor(logging.INFO):
            fields = {"peer": peer, "sub": field(sub), "events": selection(events), "opening": how}
            self.budget.log(
                logging.INFO,
                "stream opened peer=%s sub=%s events=%s opening=%s",
                *fields.values(),
                extra=fields,
            )

    def closed(
        self, peer: str, sub: str | None, seconds: float, sent: int, events: int, reason: str
    ) -> None:
        level = logging.WARNING if reason in _SLOW else logging.INFO
        if self.budget.logger.isEnabledFor(level):
            fields = {
                "peer": peer,
                "sub": field(sub),
                "duration": round(seconds, 1),
                "bytes": sent,
                "events": events,
                "reason": reason,
            }
            self.budget.log(
                level,
                "stream closed peer=%s sub=%s duration=%.1fs bytes=%d events=%d reason=%s",
                peer,
                fields["sub"],
                seconds,
                sent,
                events,
                reason,
                extra=fields,
            )
