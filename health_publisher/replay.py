"""A new leader's recovery: the checkpoint's totals, the group's pending entries claimed, and
the window replayed from the stream's history with the claimed entries in their place."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis

from health_publisher import checkpoint as checkpoints
from health_publisher.applier import SignalApplier
from health_publisher.metrics import PublisherMetrics
from health_publisher.reader import Entry, SignalReader, id_key
from health_publisher.server_clock import ServerClock

log = logging.getLogger("health_publisher")

REPLAY_BATCH = 1000
MAX_REPLAY = 200_000
# Full replay (every entry, in order) covers the aggregator's sample window; older history,
# and whatever a full replay has no time for, is compacted on the server
# (fenced_lua.COMPACT_HISTORY_LUA).
REPLAY_BUDGET_S = 1.0
COMPACT_SCAN = 10_000
MAX_SEQ = 2**64 - 1


def _at_or_before(eid: bytes, mark: bytes | None) -> bool:
    return mark is not None and id_key(eid) <= id_key(mark)


class Replay:
    """Replays from ``start_id`` to the group's last-delivered id, in stream order.

    Entries up to ``counted_until`` are in the checkpoint's totals already, so they only
    rebuild the windows; later ones are counted. Claimed entries are applied in their
    place, each once. The lease is renewed between batches (``keep_lease``). Nothing here
    is acknowledged.
    """

    def __init__(
        self,
        *,
        reader: SignalReader,
        applier: SignalApplier,
        clock: ServerClock,
        mono: Callable[[], float],
        keep_lease: Callable[[], Awaitable[None]],
        claimed: list[Entry],
        counted_until: bytes | None,
    ) -> None:
        self.reader = reader
        self.applier = applier
        self.clock = clock
        self.mono = mono
        self.keep_lease = keep_lease
        self.pending = list(reversed(claimed))  # oldest last: pop() takes the oldest
        self.claimed_ids = {eid for eid, _ in claimed}
        self.counted_until = counted_until
        self.already_applied = applier.last_applied_id
        self.replayed = 0
        self.compacted = 0
        self.claimed_applied = 0
        self.cut = False

    def _claimed_upto(self, key: tuple[int, int] | None) -> None:
        while self.pending and (key is None or id_key(self.pending[-1][0]) <= key):
            eid, fields = self.pending.pop()
            if _at_or_before(eid, self.already_applied):
                continue  # our own, applied before a reconnect
            counted = not _at_or_before(eid, self.counted_until)
            self.applier.apply(eid, fields, count_totals=counted)
            self.claimed_applied += 1

    def _history(self, batch: list[Entry]) -> None:
        for eid, fields in batch:
            self._claimed_upto(id_key(eid))
            if eid in self.claimed_ids:
                continue
            counted = not _at_or_before(eid, self.counted_until)
            self.applier.apply(eid, fields, count_totals=counted, quiet=True)
            self.replayed += 1

    async def run(self, start_id: str) -> None:
        until = await self.reader.last_delivered_id()
        cursor: bytes | str = start_id
        self._claimed_upto(id_key(cursor))
        if until is not None and id_key(until) > id_key(cursor):
            await self._replay(cursor, until)
        self._claimed_upto(None)

    async def _replay(self, cursor: bytes | str, until: bytes) -> None:
        full_from_ms = self.clock.server_ms(self.applier.aggregator.sample_window)
        before_full = f"{full_from_ms - 1}-{MAX_SEQ}"  # the last id before the full part
        started = self.mono()
        while self.replayed < MAX_REPLAY:
            await self.keep_lease()
            early = id_key(cursor) < id_key(before_full)
            if early or self.mono() - started > REPLAY_BUDGET_S:
                upper = before_full if early and id_key(before_full) < id_key(until) else until
                last, batch = await self.reader.compact_history(cursor, upper, COMPACT_SCAN)
                if last is None:
                    if upper is until:
                        return
                    cursor = before_full  # nothing left before the full part
                    continue
                self._history(batch)
                self.compacted += len(batch)
                self._claimed_upto(id_key(last))
                cursor = last
            else:
                batch = await self.reader.history(cursor, until, REPLAY_BATCH)
                if not batch:
                    return
                self._history(batch)
                cursor = batch[-1][0]
        self.cut = True


class Recovery:
    """Makes a new leader one that has missed nothing; ``run`` returns the ids it claimed
    (applied now, acknowledged by the next fenced read)."""

    def __init__(
        self,
        *,
        client: aioredis.Redis,
        checkpoint_key: str,
        reader: SignalReader,
        applier: SignalApplier,
        clock: ServerClock,
        metrics: PublisherMetrics,
        mono: Callable[[], float],
        keep_lease: Callable[[], Awaitable[None]],
    ) -> None:
        self.client = client
        self.checkpoint_key = checkpoint_key
        self.reader = reader
        self.applier = applier
        self.clock = clock
        self.metrics = metrics
        self.mono = mono
        self.keep_lease = keep_lease

    async def counted_until(self) -> bytes | None:
        """Seed the totals from the checkpoint; the newest id they (or we) counted."""
        checkpoint = checkpoints.decode(await self.client.get(self.checkpoint_key))
        counted_until: bytes | None = None
        if checkpoint is not None:
            self.applier.aggregator.seed_counters(checkpoint.counters)
            counted_until = checkpoint.last_id.encode() if checkpoint.last_id else None
        applied = self.applier.last_applied_id
        if applied is not None and (
            counted_until is None or id_key(applied) > id_key(counted_until)
        ):
            counted_until = applied
        return counted_until

    async def run(self, start_id: Callable[[], str]) -> list[bytes]:
        counted_until = await self.counted_until()
        await self.reader.ensure_group(start_id())
        claimed, gone = await self.reader.claim_pending(self.keep_lease)
        replay = Replay(
            reader=self.reader,
            applier=self.applier,
            clock=self.clock,
            mono=self.mono,
            keep_lease=self.keep_lease,
            claimed=claimed,
            counted_until=counted_until,
        )
        await replay.run(start_id())
        self.metrics.signals_replayed.inc(replay.replayed)
        if claimed or gone or replay.replayed:
            log.info(
                "resumed: %d pending entries claimed (%d applied, %d gone from the stream), "
                "%d replayed from history (%d compacted on the server)%s",
                len(claimed),
                replay.claimed_applied,
                gone,
                replay.replayed,
                replay.compacted,
                "; replay cut short: older history skipped" if replay.cut else "",
            )
        return [eid for eid, _ in claimed]
