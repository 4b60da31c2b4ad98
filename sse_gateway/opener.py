"""What a new stream gets before live events, and the snapshot re-sends after Redis returns.

``StreamOpener.open`` answers once per stream: a replay after its ``Last-Event-ID``, or
``resync`` (an id it cannot resume) and the snapshots; then ``health_stale`` while the
publisher is silent. It owns what that takes: the shared snapshot read, the catch-up
barrier, the resume lookup, and the re-send of snapshots after a resubscription.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from connectome_core.contract import RESYNC_EVENT, snapshot_key
from connectome_core.event_log import parse_log_event_id
from connectome_core.logs import RateLimitedLog
from sse_gateway.framing import Frame, encode_json_event
from sse_gateway.held_snapshots import REFRESH_S
from sse_gateway.hub import Subscriber
from sse_gateway.log_follower import Position
from sse_gateway.log_resume import replay_from_log
from sse_gateway.metrics import GatewayMetrics
from sse_gateway.relay import Relay, spawn, stop_tasks
from sse_gateway.snapshots import SharedCall, SnapshotReader, Snapshots
from sse_gateway.source import EventSource, SourceUnavailable

log = logging.getLogger("sse_gateway.relay")
_limited = RateLimitedLog(log)
_stream_log = RateLimitedLog(logging.getLogger("sse_gateway.stream"))

RESEND_SPACING = 5.0  # seconds between the starts of two snapshot re-sends
RESYNC_FRAME = Frame(encode_json_event(RESYNC_EVENT, {"reason": "unknown_id"}))

# How a stream opened, as its open line says it.
RESUME, RESYNC, SNAPSHOT, PROBE = "resume", "resync", "snapshot", "probe"


class Opening(NamedTuple):
    frames: list[Frame]
    replayed: bool  # a replay (from the history, or the log), not snapshots
    how: str
    # A replay from the event log: queued logged frames at or before this the client has.
    seen_until: tuple[int, int] | None = None


class StreamOpener:
    def __init__(
        self,
        relay: Relay,
        source: EventSource,
        metrics: GatewayMetrics,
        max_replay_bytes: int = 1024 * 1024,
    ) -> None:
        self.relay = relay
        self.max_replay_bytes = max_replay_bytes  # a longer replay from the log is a resync
        self.source = source
        self.metrics = metrics
        # Snapshots are checked and framed once per read, however many streams share it.
        self.snapshots = SnapshotReader(self._read_framed_snapshots)
        # "Has this process relayed everything Redis took until now?", shared the same way.
        self.catch_up = SharedCall(source.caught_up)
        # Streams that opened without snapshots (Redis was down): the next re-send is theirs.
        self.awaiting_snapshots: weakref.WeakSet[Subscriber] = weakref.WeakSet()
        self._tasks: set[asyncio.Task[None]] = set()
        self._resend: asyncio.Task[None] | None = None
        self._resend_again = False
        self._last_resend = -RESEND_SPACING

    def start(self) -> None:
        spawn(self._tasks, self._keep_warm())

    async def stop(self, timeout: float = 2.0) -> None:
        await stop_tasks(self._tasks, timeout)

    async def _keep_warm(self) -> None:
        """Read the snapshots again in the background while streams keep opening, so that
        the held ones do not expire under them (``HeldSnapshots.refresh_due``)."""
        held = self.relay.held
        while True:
            await asyncio.sleep(REFRESH_S / 2)
            if not self.relay.redis_up or not held.refresh_due():
                continue
            try:
                await self.snapshots.read()
            except SourceUnavailable:
                pass  # the next stream reads them itself, and logs why it could not
            except Exception as exc:  # a bug here must not end the refreshes
                if _limited.log(logging.ERROR, "keep_warm", "snapshot refresh failed: %r", exc):
                    log.error("traceback of the failure above", exc_info=exc)

    # -- a new stream ---------------------------------------------------------
    def open_now(
        self, stream: Subscriber, events: frozenset[str] | None, last_id: str, probe: bool
    ) -> Opening | None:
        """``open`` when nothing has to be read from Redis (snapshots held, or an id the
        history answers): no await, so no task. None: ``open`` it."""
        if probe:  # the path probe: its probes, then only pings
            return Opening([], False, PROBE)
        if last_id:
            replay = self.replay_after(last_id, events)
            if replay is None:
                return None  # a resync, or a lookup in Redis: open() decides
            return Opening([*replay, *self._stale_extras()], True, RESUME)
        held = self.relay.held.current() if self.relay.redis_up else None
        if held is None:
            return None
        return Opening([*select(held, events), *self._stale_extras()], False, SNAPSHOT)

    async def open(
        self, stream: Subscriber, events: frozenset[str] | None, last_id: str, probe: bool
    ) -> Opening:
        """The first frames of ``stream``, which has just subscribed to the hub.

        Called with nothing awaited since it subscribed: the history lookup below then
        sees every frame the stream's queue does not hold, so each event reaches it once.
        """
        now = self.open_now(stream, events, last_id, probe)
        if now is not None:
            return now
        first: list[Frame] = []
        if last_id:
            position = self.relay.log.position  # what was relayed before it subscribed
            replay = await self._resume(last_id, events)
            if replay is not None:
                return Opening([*replay, *self._stale_extras()], True, RESUME)
            from_log = await self._resume_from_log(last_id, events, position)
            if from_log is not None:
                return from_log
            first.append(RESYNC_FRAME)
        if not self.relay.redis_up:
            self.awaiting_snapshots.add(stream)  # the re-send after reconnecting is theirs too
        # health_stale once: a state that turns stale during the read was broadcast to this
        # (already subscribed) stream, and one that ended meanwhile is ended by the health.
        stale_before = self.relay.health.stale
        first.extend(await self._snapshots(events))
        extras = self._stale_extras() if stale_before else []
        return Opening([*first, *extras], False, RESYNC if last_id else SNAPSHOT)

    async def _resume(self, last_id: str, events: frozenset[str] | None) -> list[Frame] | None:
        """What a stream missed after ``last_id``; None: it gets ``resync`` instead.

        An id unknown here may come from a replica that is ahead of this one: it is looked
        up again once this process has relayed everything Redis took so far. (Another
        source of old events, when there is one, is asked after the history.)"""
        replay = self.replay_after(last_id, events)
        if parse_log_event_id(last_id) is not None:
            return replay  # a log id this process has not relayed: the log knows it
        if replay is None and self.relay.redis_up and await self.caught_up():
            replay = self.replay_after(last_id, events)
        return replay

    async def _resume_from_log(
        self, last_id: str, events: frozenset[str] | None, position: Position | None
    ) -> Opening | None:
        """A resume from the event log (an id this process's history does not hold)."""
        try:
            replay = await replay_from_log(
                self.source.log, self.relay, last_id, events, position, self.max_replay_bytes
            )
        except SourceUnavailable as exc:
            _stream_log.warning("log_resume", "cannot read the event log for a resume: %s", exc)
            return None
        if replay is None:
            return None
        if position is None or replay.seen_until > position.key:
            # The client is ahead of this process: what it has must be queued (and so
            # dropped) before the stream is released, not arrive after.
            await self.caught_up()
        self.metrics.log_resumes.inc()
        frames = [*replay.frames, *self._stale_extras()]
        return Opening(frames, True, RESUME, replay.seen_until)

    def replay_after(self, last_id: str, events: frozenset[str] | None) -> list[Frame] | None:
        """The frames of ``events`` relayed after ``last_id``, from the history; None when
        the history cannot say exactly (unknown, ambiguous, outside ``events``, or an
        event after it has left): never a silent gap, never a hint about other types."""
        history = self.relay.history
        after = history.lookup(last_id, events)
        return None if after is None else history.replay(after, events)

    def _stale_extras(self) -> list[Frame]:
        health = self.relay.health
        return [health.stale_frame()] if health.stale else []

    async def _snapshots(self, events: frozenset[str] | None) -> list[Frame]:
        if not self.relay.redis_up:
            return []  # re-sent to every stream once the subscription is back
        try:
            framed = await self.snapshots.read()
        except SourceUnavailable as exc:
            _stream_log.warning("snapshots", "snapshots unavailable for a new stream: %s", exc)
            return []
        return select(framed, events)

    # -- reading snapshots -----------------------------------------------------
    async def _read_framed_snapshots(self) -> Snapshots:
        """Event name -> framed snapshot; bad snapshots are counted and logged, once per read.

        When a snapshot is not the newest this process relayed of its type, the read
        returns only once this process has relayed everything published before it: a
        stream's queue then holds the live copy of each snapshot, which ``release``
        drops with anything older. When that cannot be told in time the snapshots are
        used anyway (counted): a stream must not wait on a slow Redis for ever.
        """
        held = self.relay.held
        started = held.read_starts()
        trusted: Snapshots | None = None
        try:
            framed = {}
            for event, (data, stream_id) in (await self.source.read_snapshots()).items():
                frame = self.relay.encode(event, snapshot_key(event), data, stream_id)
                if frame is not None:
                    framed[event] = frame
            # A snapshot that is the newest relayed of its type proves every older event
            # of that type was relayed too: a process that keeps up pays nothing here.
            history = self.relay.history
            caught_up = True
            if any(history.newest_id(e) != f.event_id for e, f in framed.items()):
                caught_up = await self._caught_up(self.source.caught_up)
            if caught_up:
                trusted = framed  # the next streams may open with it (held_snapshots)
        finally:
            held.hold(started, trusted)
        return framed

    async def caught_up(self) -> bool:
        """Whether this process has relayed everything Redis took until now (one round
        trip shared by every caller meanwhile); False, counted, when that cannot be told."""
        return await self._caught_up(self.catch_up.read)

    async def _caught_up(self, ask: Callable[[], Awaitable[bool]]) -> bool:
        try:
            if await ask():
                return True
        except Exception as exc:  # a bug here must not end the stream that asked
            if _limited.log(logging.ERROR, "catch_up_bug", "catch-up check failed: %r", exc):
                log.error("traceback of the failure above", exc_info=exc)
        self.metrics.catch_up_failed.inc()
        _limited.warning("catch_up", "could not confirm that this process has caught up with Redis")
        return False

    # -- re-sends after a resubscription ---------------------------------------
    @property
    def snapshots_resending(self) -> bool:
        return self._resend is not None and not self._resend.done()

    def resend_snapshots(self) -> None:
        """Re-read the snapshots and send what changed while the subscription was lost."""
        if self.snapshots_resending:
            self._resend_again = True  # one more after this one, however many reconnects
            return
        self._resend = spawn(self._tasks, self._resend_while_asked())

    async def _resend_while_asked(self) -> None:
        again = True
        while again:
            # Spaced: a Redis that accepts and drops connections gets one re-send per
            # RESEND_SPACING at most, however often it flaps.
            wait = self._last_resend + RESEND_SPACING - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._last_resend = time.monotonic()
            self._resend_again = False
            failed = not await self._resend_once()
            # A failed read is tried again while subscribed: streams opened during the
            # outage got no snapshot and count on this one.
            again = self._resend_again or (failed and self.relay.subscribed)

    async def _resend_once(self) -> bool:
        """One re-read and re-send; False when the snapshots could not be read."""
        with self.relay.watching_live() as live:
            try:
                framed = await self.snapshots.read()
            except SourceUnavailable as exc:
                _limited.warning("resend", "could not re-read snapshots after reconnect: %s", exc)
                framed = None
        waiting = list(self.awaiting_snapshots)
        if framed is None:
            return False
        self.awaiting_snapshots = weakref.WeakSet()
        for event, frame in framed.items():
            if event in live:
                continue  # a live event came after the re-read began: it is as new
            if frame.event_id == self.relay.history.newest_id(event):
                # Clients have this one already: only streams that got no snapshot.
                self.relay.hub.publish_to(event, frame, waiting)
                continue
            self.relay.commit_snapshot(event, frame)
        return True


def select(framed: Snapshots, events: frozenset[str] | None) -> list[Frame]:
    """The framed snapshots of the selected event types (None: all)."""
    if events is None:
        return list(framed.values())
    return [frame for event, frame in framed.items() if event in events]
