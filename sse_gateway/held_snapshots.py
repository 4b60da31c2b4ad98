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
held.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sse_gateway.framing import Frame
from sse_gateway.snapshots import Snapshots

MAX_AGE_S = 1.0


class HeldSnapshots:
    __slots__ = ("_clock", "_during", "_generation", "_held", "_held_at", "_max_age")

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

    def current(self) -> Snapshots | None:
        """The held snapshots, or None: read them (none held, or held too long)."""
        held = self._held
        if held is not None and self._clock() - self._held_at > self._max_age:
            self._held = held = None
        return held

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
