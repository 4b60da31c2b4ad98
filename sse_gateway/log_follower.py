"""Following the event log: log ids for live events, and the gap fill after every cut.

Pub/sub keeps nothing, so after every new subscription the relay's ``LogFollower``
reads the log from the newest entry this process relayed and relays what it missed,
in order, before any live message that came meanwhile (those are held, then the ones
the fill already relayed are skipped). When the log cannot prove that nothing was
missed (the entry the gateway last relayed is gone, or holds other content: a Redis
that came back empty, a trim past it, a failover that lost writes) every stream gets
``resync`` and the snapshots: never a silent gap.

A marker ``"<stream id> <event>"`` on ``sse:log:ids`` comes right before each logged
event's message (one atomic script wrote both): it gives that message its log id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import NamedTuple

from connectome_core.backoff import Backoff
from connectome_core.contract import CHANNEL_PREFIX, RESYNC_EVENT
from connectome_core.event_log import STREAM_ID_RE, digest8, stream_id_key
from sse_gateway.framing import Frame, encode_json_event
from sse_gateway.log_store import START, LogEntry, LogStore
from sse_gateway.source import SourceUnavailable

log = logging.getLogger("sse_gateway.log")

GAP_FRAME = Frame(encode_json_event(RESYNC_EVENT, {"reason": "log_gap"}))
PAGE = 1000  # entries per XRANGE
FILL_MAX_BYTES = 64 * 1024 * 1024  # a gap bigger than this is answered with resync
HOLD_MAX_BYTES = 64 * 1024 * 1024  # live messages held while a fill runs
FILL_ATTEMPTS = 5  # reads of the log that fail before the fill gives up (resync)

# channel, data, the stream id its marker gave it (None: a raw publish)
Held = tuple[str, bytes, str | None]


class Position(NamedTuple):
    """The newest log entry this process relayed (or skipped over, with a resync)."""

    stream_id: str
    digest: str

    @property
    def key(self) -> tuple[int, int]:
        return stream_id_key(self.stream_id)


EMPTY = Position(START, "")  # there was no log: every entry in it now is new


class LogFollower:
    def __init__(
        self,
        store: LogStore,
        relay: Callable[[str, bytes, str | None], None],
        on_gap: Callable[[str], None],
        on_filled: Callable[[], None],
        latest_only: frozenset[str],
        counted: Callable[[str, int], None] = lambda name, n: None,
    ) -> None:
        self.store = store
        self._relay = relay  # channel, data, stream id: one message, as if it came live
        self._on_gap = on_gap  # a continuity break, with its reason: resync every stream
        self._on_filled = on_filled  # after each fill: the snapshot re-send
        self.latest_only = latest_only
        self._counted = counted  # metrics: ("filled" | "duplicates", n)
        self.position: Position | None = None  # None: not known yet (no read succeeded)
        self._dedup_after: tuple[int, int] | None = None  # newest key relayed since a break
        self._marker: tuple[str, str] | None = None  # (stream id, channel) of the next message
        self._held: list[Held] = []
        self._held_bytes = 0
        self._fill: asyncio.Task[None] | None = None
        self._finding: asyncio.Task[None] | None = None
        self._started = asyncio.Event()  # the first subscription found where the log ends
        self._stopped = False

    @property
    def holding(self) -> bool:
        """A fill runs: live messages wait behind it."""
        return self._fill is not None

    # -- live messages -------------------------------------------------------
    def marker(self, data: bytes) -> None:
        sid, _, event = data.decode("ascii", "replace").partition(" ")
        self._marker = (sid, CHANNEL_PREFIX + event) if STREAM_ID_RE.fullmatch(sid) else None

    def take_marker(self, channel: str) -> str | None:
        """The stream id of this message when the marker before it named it; else None."""
        marker, self._marker = self._marker, None
        return marker[0] if marker is not None and marker[1] == channel else None

    def hold(self, channel: str, data: bytes, stream_id: str | None) -> None:
        self._held.append((channel, data, stream_id))
        self._held_bytes += len(data)
        if self._held_bytes > HOLD_MAX_BYTES:
            self._give_up("hold_overflow")

    def is_new(self, stream_id: str) -> bool:
        """False for a live message a fill relayed already."""
        if self._dedup_after is not None and stream_id_key(stream_id) <= self._dedup_after:
            self._counted("duplicates", 1)
            return False
        return True

    def relayed(self, stream_id: str, event: str, data: bytes) -> None:
        """A logged message was relayed (or dropped for every stream alike)."""
        key = stream_id_key(stream_id)
        if self.position is None or key > self.position.key:
            self.position = Position(stream_id, digest8(event, data))
        if self._dedup_after is None or key > self._dedup_after:
            self._dedup_after = key

    # -- subscriptions -------------------------------------------------------
    def subscribed(self, first: bool) -> None:
        """A new subscription: the first finds where the log is, later ones fill the gap.

        Called before the subscription delivers anything: what it delivers is held until
        the fill is done."""
        if first:
            self._finding = asyncio.ensure_future(self._find_start())
            return
        if self._fill is not None:
            self._fill.cancel()  # a cut during a fill: one fill from where it got to
        self._fill = asyncio.ensure_future(self._fill_gap())
        self._fill.add_done_callback(self._fill_done)

    def _fill_done(self, task: asyncio.Task[None]) -> None:
        if task is not self._fill or self._stopped:
            return  # replaced by a newer fill (which flushes what is held), or shut down
        self._fill = None
        if not task.cancelled() and task.exception() is not None:
            log.error("event log fill failed", exc_info=task.exception())
            self._on_gap("fill_failed")
            self._dedup_after = None
        self._flush()
        self._on_filled()

    async def wait_started(self) -> None:
        """Until the first subscription has read where the log ends (or given up)."""
        await self._started.wait()

    def stop(self) -> None:
        self._stopped = True
        for task in (self._fill, self._finding):
            if task is not None:
                task.cancel()

    async def _find_start(self) -> None:
        # The first subscription lost nothing: live messages are not held, only where the
        # log ends is learnt (a process started after events may resume clients from it).
        try:
            for delay in self._attempts():
                try:
                    self._jump_to(await self.store.newest())
                    return
                except SourceUnavailable as exc:
                    log.warning("cannot read the event log yet (%s); again in %.1fs", exc, delay)
                    await asyncio.sleep(delay)
        finally:
            self._started.set()

    def _jump_to(self, newest: LogEntry | None, always: bool = False) -> None:
        at = EMPTY if newest is None else Position(newest.stream_id, newest.digest)
        # After a break the log may be a new one whose ids are lower: the jump is taken.
        if always or self.position is None or at.key > self.position.key:
            self.position = at

    # -- the gap fill --------------------------------------------------------
    async def _fill_gap(self) -> None:
        for delay in self._attempts():
            try:
                gap = await self._read_gap()
            except SourceUnavailable as exc:
                log.warning("cannot read the event log (%s); again in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                continue
            if gap is None:
                await self._resync("log_gap")
            else:
                self._relay_entries(gap)
            return
        await self._resync("log_unreadable")

    async def _read_gap(self) -> list[LogEntry] | None:
        """Every entry after the position; None when the log cannot prove that is all."""
        at = self.position
        if at is None:
            return None
        if at is EMPTY:
            if not await self.store.untrimmed():
                return None
        else:
            entry = await self.store.entry(at.stream_id)
            if entry is None or entry.digest != at.digest:
                return None  # gone (empty Redis, trimmed, lost in a failover) or rewritten
        gap: list[LogEntry] = []
        size, start = 0, at.stream_id
        while True:
            page = await self.store.after(start, PAGE)
            gap.extend(page)
            size += sum(len(entry.data) for entry in page)
            if size > FILL_MAX_BYTES:
                log.warning("the gap holds over %d bytes of events: resync", FILL_MAX_BYTES)
                return None
            if len(page) < PAGE:
                return gap
            start = page[-1].stream_id

    def _relay_entries(self, gap: list[LogEntry]) -> None:
        newest = {entry.event: entry for entry in gap if entry.event in self.latest_only}
        filled = 0
        for entry in gap:
            if entry.event in self.latest_only and newest[entry.event] is not entry:
                self.relayed(entry.stream_id, entry.event, entry.data)  # only the newest goes
                continue
            self._relay(CHANNEL_PREFIX + entry.event, entry.data, entry.stream_id)
            filled += 1
        if gap:
            self._counted("filled", filled)
            log.info("filled a gap of %d logged events from the event log", len(gap))

    async def _resync(self, reason: str) -> None:
        self._on_gap(reason)
        self._dedup_after = None  # after a failover the new log's ids may be lower
        try:
            self._jump_to(await self.store.newest(), always=True)
        except SourceUnavailable:
            self.position = None  # unknown: the next cut resyncs again

    def _give_up(self, reason: str) -> None:
        """Too much held behind a slow fill: resync now and let live messages through."""
        fill, self._fill = self._fill, None
        if fill is not None:
            fill.remove_done_callback(self._fill_done)
            fill.cancel()
        self._on_gap(reason)
        self._dedup_after = None
        self.position = None  # set again by the next logged message relayed
        self._flush()
        self._on_filled()

    def _flush(self) -> None:
        held, self._held, self._held_bytes = self._held, [], 0
        for channel, data, stream_id in held:
            self._relay(channel, data, stream_id)

    @staticmethod
    def _attempts() -> Iterable[float]:
        backoff = Backoff(base=0.1, cap=1.0)
        return (backoff.next_delay() for _ in range(FILL_ATTEMPTS))
