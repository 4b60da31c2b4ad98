"""The last snapshot read, kept current between reads: most streams open without Redis.

A new stream's snapshots must be at least as new as every event this process relayed
before the stream subscribed. A read gives that for the streams that asked during it;
``HeldSnapshots`` keeps it true afterwards, so that the next streams (a reconnect storm:
thousands) take the held frames without a Redis round trip and without a task:

- every logged event relayed since the read replaces its type's snapshot: the event
  log's publish writes the snapshot in the same step as the event, so Redis holds
  exactly that frame now;
- anything else drops the lot, and the next stream reads again: a cut of the
  subscription (events may have gone by unseen), a gap in the event log, a raw
  ``PUBLISH`` (its snapshot, if any, was written beside it by hand) and a message the
  gateway dropped (what Redis holds for its type can no longer be told);
- a read older than ``MAX_AGE_S`` is read again: a snapshot changed by hand with no
  event at all reaches new streams within that.

A read that started before a drop is used by the streams that waited for it, and not
held. While streams keep opening (``KEEP_WARM_S``), the opener reads again in the
background every ``REFRESH_S`` (``refresh_due``): a storm that starts a while after the
last read does not find them expired, and its first wave opens without a task as well.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sse_gateway.framing import Frame
from sse_gateway.snapshots import Snapshots

MAX_AGE_S = 1.0
REFRESH_S = MAX_AGE_S / 2  # read again in the background when this old (held_snapshots)
KEEP_WARM_S = 30.0  # ... as long as a stream asked for them this recently


class HeldSnapshots:
    __slots__ = (
        "_asked_at",
        "_clock",
        "_during",
        "_generation",
        "_held",
        "_held_at",
        "_max_age",
    )

    def __init__(
        self, max_age: float = MAX_AGE_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._max_age = max_age
        self._clock = clock
        self._held: Snapshots | None = None
        self._held_at = 0.0
        self._generation = 0  # moved on by every drop: a read from before it is not held
        # The logged frames relayed while a read runs (None: no read runs).
        self._during: Snapshots | None = None
        self._asked_at: float | None = None  # when a stream last asked for them

    def current(self) -> Snapshots | None:
        """The held snapshots, or None: read them (none held, or held too long)."""
        held = self._held
        now = self._asked_at = self._clock()
        if held is not None and now - self._held_at > self._max_age:
            self._held = held = None
        return held

    def refresh_due(self, every: float = REFRESH_S, keep_warm: float = KEEP_WARM_S) -> bool:
        """Whether to read again in the background now: a stream asked in the last
        ``keep_warm`` seconds, no read runs, and nothing is held or it is ``every`` seconds
        old. An idle gateway reads nothing; the caller's tick bounds the rest (raw
        publishes that drop them at a high rate cost one read per tick, not one each)."""
        if self._asked_at is None or self._during is not None:
            return False
        now = self._clock()
        if now - self._asked_at > keep_warm:
            return False
        return self._held is None or now - self._held_at >= every

    def read_starts(self) -> tuple[int, float]:
        """A read begins (one at a time): what ``hold`` needs to know its result."""
        self._during = {}
        return self._generation, self._clock()

    def hold(self, started: tuple[int, float], framed: Snapshots | None) -> None:
        """The read begun at ``started`` returned ``framed`` (None: it failed, or is not
        to be trusted beyond the streams that waited for it)."""
        during, self._during = self._during, None
        generation, at = started
        if framed is None or during is None or generation != self._generation:
            return
        self._held = {**framed, **during}  # an event relayed meanwhile is as new or newer
        self._held_at = at

    def relayed(self, event: str, frame: Frame) -> None:
        """A logged event went out: it is its type's snapshot in Redis now."""
        if self._held is not None:
            self._held[event] = frame
        if self._during is not None:
            self._during[event] = frame

    def forget(self) -> None:
        """What Redis holds can no longer be told from here: the next stream reads it."""
        self._held = None
        self._generation += 1
        self._during = None
