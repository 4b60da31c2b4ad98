"""The relay: channel messages in, framed events out to the hub; pings; snapshot re-sends.

It is the gateway's ``SourceListener``. Each message is checked once at the
Redis boundary (event name, size, UTF-8), framed once, and the same bytes go
to every subscriber. A bad message is counted, logged (rate-limited) and
skipped; nothing a publisher sends can stop the relay, and neither can a bug
below ``on_message``: it is caught per message and counted as ``internal``.
A message's fate is decided once, before it enters the history or the hub:
from then on it goes to both (a history that fails is cleared, so no replay
can skip the message), relayed live and replayed alike.

Its two tasks (the Redis reader and the ping tick) are supervised: one that
ends is logged and restarted after a backoff, and until it runs again
``redis_up`` is False, so ``/readyz`` says 503 and pings say
``"redis": "down"``: readiness tells the truth.

After a resubscription the snapshots are read again and re-sent, ordered
against live events: a snapshot is skipped for an event type that had a live
message since the re-read began (that message is at least as new). One
re-send runs at a time, and re-sends start at least ``RESEND_SPACING``
seconds apart: reconnects meanwhile ask for one more, not one each, so a
flapping Redis cannot make every stream receive every snapshot several times
a second. (Skipping snapshots whose bytes were relayed already would save
more, but a stream opened while Redis was down got no snapshot and counts on
the re-send.)

Ids, history, liveness. Every relayed message and every snapshot carries the
id of its content (``sse_gateway.history``: the same on every replica) and
enters this process's history, which ``resume`` replays from. A re-sent
snapshot whose id is already the newest of its type in the history is the
event clients had: it is offered only to streams that opened without
snapshots (``awaiting_snapshots``), not again to everyone, so no browser sees
the same id twice. Names the gateway makes itself (``RESERVED_EVENTS``) are
dropped from channels and snapshots (reason ``reserved``). Each relayed
``connectome_health`` feeds ``Liveness``; a third supervised task turns the
state stale and broadcasts ``health_stale`` (and keeps the age gauge fresh).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

from connectome_core.backoff import Backoff
from connectome_core.contract import (
    HEALTH_EVENT,
    PING_EVENT,
    RESERVED_EVENTS,
    RESYNC_EVENT,
    event_from_channel,
    snapshot_key,
)
from connectome_core.event_log import LOG_ID_CHANNEL
from connectome_core.logs import RateLimitedLog
from sse_gateway.framing import Frame, encode_event, encode_json_event
from sse_gateway.history import History, event_id
from sse_gateway.hub import Hub, Subscriber
from sse_gateway.liveness import Liveness, payload_ts
from sse_gateway.metrics import GatewayMetrics
from sse_gateway.snapshots import SharedCall, SnapshotReader
from sse_gateway.source import EventSource, SourceUnavailable

log = logging.getLogger("sse_gateway.relay")
_limited = RateLimitedLog(log)

READER, PINGS, LIVENESS = "redis reader", "ping tick", "liveness watch"
RESEND_SPACING = 5.0  # seconds between the starts of two snapshot re-sends
LIVENESS_TICK = 0.5  # seconds between liveness checks: health_stale within stale_after + 0.5
RESYNC_FRAME = Frame(encode_json_event(RESYNC_EVENT, {"reason": "unknown_id"}))


class Relay:
    def __init__(
        self,
        hub: Hub,
        source: EventSource,
        metrics: GatewayMetrics,
        *,
        max_event_bytes: int,
        ping_interval: float,
        history: int = 256,
        latest_only: Iterable[str] = (HEALTH_EVENT,),
        health_stale_after: float = 10.0,
    ) -> None:
        self.hub = hub
        self.source = source
        self.metrics = metrics
        self.max_event_bytes = max_event_bytes
        self.ping_interval = ping_interval
        # Snapshots are checked and framed once per read, however many streams share it.
        self.snapshots = SnapshotReader(self._read_framed_snapshots)
        # "Has this process relayed everything Redis took until now?", shared the same way.
        self.catch_up = SharedCall(self.source.caught_up)
        # Lines that bad input can repeat go through here: one per reason per interval.
        self.drop_log = RateLimitedLog(log)
        self._subscribed = False
        self._failed: set[str] = set()  # supervised tasks that ended and wait for a restart
        self._connected_once = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._resend: asyncio.Task[None] | None = None
        self._resend_again = False
        self._live_watch: list[set[str]] = []  # event types relayed while a re-read runs
        self._last_resend = -RESEND_SPACING
        self.latest_only = frozenset(latest_only)
        self.history = History(history, latest_only=self.latest_only)
        self.liveness = Liveness(health_stale_after)
        # Streams that opened without snapshots (Redis was down): the next re-send is theirs.
        self.awaiting_snapshots: weakref.WeakSet[Subscriber] = weakref.WeakSet()

    @property
    def redis_up(self) -> bool:
        """The subscription is live and every relay task runs: what readiness and pings say."""
        return self._subscribed and not self._failed

    @property
    def ready(self) -> bool:
        return self.redis_up

    @property
    def snapshots_resending(self) -> bool:
        return self._resend is not None and not self._resend.done()

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> None:
        self._spawn(self._keep_running(READER, lambda: self.source.run(self)))
        self._spawn(self._keep_running(PINGS, self._ping_forever))
        self._spawn(self._keep_running(LIVENESS, self._watch_liveness))

    async def _keep_running(self, name: str, run: Callable[[], Coroutine[Any, Any, None]]) -> None:
        backoff = Backoff(base=0.1, cap=5.0)
        while True:
            try:
                await run()
                raise RuntimeError("returned")
            except Exception as exc:  # supervised: restarted below
                self._failed.add(name)
                self._publish_up()
                delay = backoff.next_delay()
                log.error("%s failed; restarting in %.2fs", name, delay, exc_info=exc)
                await asyncio.sleep(delay)
                self._failed.discard(name)
                if name == READER:
                    self._subscribed = False  # until the new reader says it subscribed
                self._publish_up()

    async def stop(self, timeout: float = 2.0) -> None:
        for task in list(self._tasks):
            task.cancel()
        # Bounded: a task that ignores its cancellation must not hold the exit.
        _, stuck = await asyncio.wait(self._tasks, timeout=timeout) if self._tasks else ((), ())
        for task in stuck:
            log.error("relay task did not stop within %.1fs: %r", timeout, task)
        await self.source.aclose()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("relay task failed", exc_info=task.exception())

    # -- SourceListener ----------------------------------------------------
    def on_message(self, channel: str, data: bytes) -> None:
        try:
            self._relay(channel, data)
        except Exception as exc:  # one bad message never ends the reader
            self.metrics.events_dropped.labels("internal").inc()
            # A bug's traceback is worth one line, not one per message: only with the
            # line the limiter lets out.
            if self.drop_log.log(
                logging.ERROR, "internal", "dropped message on %r: %r", channel[:100], exc
            ):
                log.error("traceback of the drop above", exc_info=exc)

    def _relay(self, channel: str, data: bytes) -> None:
        if channel == LOG_ID_CHANNEL:  # the event log's id marker: not an event, not a drop
            return
        # Everything that can drop a message runs here, before it reaches anyone.
        framed = self.frame(channel, data)
        if framed is None:
            return
        event, frame = framed
        ts = payload_ts(data) if event == HEALTH_EVENT else None
        for live in self._live_watch:
            live.add(event)
        started = time.perf_counter()
        delivered = self._commit(event, frame, ts)
        self.metrics.fanout_latency.observe(time.perf_counter() - started)
        self.metrics.events_relayed.inc()
        self.metrics.frames_delivered.inc(delivered)

    def _commit(self, event: str, frame: Frame, ts: float | None) -> int:
        """Relay a message already decided on: into the history and to every stream alike."""
        try:
            self.history.add(event, frame)
        except Exception as exc:  # a bug: the history may miss it, so no replay may skip it
            self.history.clear()
            if _limited.log(logging.ERROR, "history", "history failed; cleared: %r", exc):
                log.error("traceback of the failure above", exc_info=exc)
        if event == HEALTH_EVENT:
            self.liveness.record(ts)
        return self.hub.publish(event, frame)

    def on_connected(self, resumed: bool = False) -> None:
        if self._connected_once and not resumed:
            self.metrics.redis_reconnects.inc()
            # A change made while we were away must not be missed: re-send snapshots.
            # (A resumed subscription lost nothing: no re-send.)
            self._request_resend()
        self._connected_once = True
        self._subscribed = True
        self._publish_up()

    def on_disconnected(self) -> None:
        self._subscribed = False
        self._publish_up()

    def _publish_up(self) -> None:
        self.metrics.redis_up.set(1 if self.redis_up else 0)

    # -- framing at the boundary -------------------------------------------
    def frame(self, channel: str, data: bytes) -> tuple[str, Frame] | None:
        """The event name and its frame, or None (counted and logged) when the message is bad."""
        event = event_from_channel(channel)
        if event is None:
            self._drop("bad_event_name", channel, len(data))
            return None
        frame = self._encode(event, channel, data)
        return None if frame is None else (event, frame)

    def _encode(self, event: str, origin: str, data: bytes) -> Frame | None:
        if event in RESERVED_EVENTS:  # only the gateway makes these: clients trust them
            self._drop("reserved", origin, len(data))
            return None
        if len(data) > self.max_event_bytes:
            self._drop("too_large", origin, len(data))
            return None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            self._drop("invalid_utf8", origin, len(data))
            return None
        ident = event_id(event, data)
        conflate = event if event in self.latest_only else None
        return Frame(encode_event(event, text, ident), ident, conflate, event)

    def _drop(self, reason: str, origin: str, size: int) -> None:
        self.metrics.events_dropped.labels(reason).inc()
        self.drop_log.warning(
            reason, "dropped message on %r (%d bytes): %s", origin[:100], size, reason
        )

    async def _read_framed_snapshots(self) -> dict[str, Frame]:
        """Event name -> framed snapshot; bad snapshots are counted and logged, once per read.

        Returned once this process has also relayed every message published before the
        read (``EventSource.caught_up``, when a snapshot is not yet the newest relayed
        of its type): a stream's queue then holds the live copy of each snapshot that
        was published (``StreamWriter.release`` drops it and anything
        older), so a replica that lags behind Redis never shows a snapshot followed by
        older live events. When that cannot be told in time the snapshots are used anyway
        (counted): a stream must not wait on a slow Redis for ever.
        """
        framed = {}
        for event, data in (await self.source.read_snapshots()).items():
            frame = self._encode(event, snapshot_key(event), data)
            if frame is not None:
                framed[event] = frame
        # Only when needed: a snapshot that is the newest this process relayed of its type
        # proves every older event of that type was relayed too. So a process that keeps
        # up (the common case, a reconnect storm included) pays nothing.
        behind = any(self.history.newest_id(e) != f.event_id for e, f in framed.items())
        if behind:
            await self._caught_up(self.source.caught_up)
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

    @staticmethod
    def select(framed: dict[str, Frame], events: frozenset[str] | None) -> list[Frame]:
        """The framed snapshots of the selected event types (None: all)."""
        if events is None:
            return list(framed.values())
        return [frame for event, frame in framed.items() if event in events]

    # -- resume ---------------------------------------------------------------
    def resume(self, last_id: str, events: frozenset[str] | None) -> list[Frame] | None:
        """What a stream resuming after ``last_id`` missed; None: unknown, resync instead.

        Synchronous on purpose: called right after the stream subscribed, with no
        await in between, so every frame is either in the replay or live, once.
        """
        after = self.history.lookup(last_id, events)
        if after is None:
            return None
        return self.history.replay(after, events)

    def opening_extras(self) -> list[Frame]:
        """Frames a new stream gets after its snapshot or replay: health_stale while stale."""
        return [self.liveness.stale_frame()] if self.liveness.stale else []

    def _request_resend(self) -> None:
        if self.snapshots_resending:
            self._resend_again = True  # one more after this one, however many reconnects
            return
        self._resend = self._spawn(self._resend_snapshots())

    async def _resend_snapshots(self) -> None:
        again = True
        while again:
            # Spaced: a Redis that accepts and drops connections gets one re-send per
            # RESEND_SPACING at most, however often it flaps.
            wait = self._last_resend + RESEND_SPACING - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._last_resend = time.monotonic()
            self._resend_again = False
            live: set[str] = set()
            self._live_watch.append(live)
            failed = False
            try:
                framed = await self.snapshots.read()
            except SourceUnavailable as exc:
                _limited.warning("resend", "could not re-read snapshots after reconnect: %s", exc)
                framed, failed = {}, True
            finally:
                self._live_watch.remove(live)
            waiting = list(self.awaiting_snapshots)
            if not failed:
                self.awaiting_snapshots = weakref.WeakSet()
            for event, frame in framed.items():
                if event in live:
                    continue  # a live event came after the re-read began: it is as new
                if frame.event_id == self.history.newest_id(event):
                    # Clients have this one already: only streams that got no snapshot.
                    self.hub.publish_to(event, frame, waiting)
                    continue
                ts = payload_ts(frame_payload(frame)) if event == HEALTH_EVENT else None
                self._commit(event, frame, ts)
            # A failed read is tried again while subscribed: streams opened during the
            # outage got no snapshot and count on this one.
            again = self._resend_again or (failed and self._subscribed)

    # -- pings --------------------------------------------------------------
    def ping_frame(self) -> bytes:
        return encode_json_event(
            PING_EVENT,
            {
                "ts": round(time.time(), 3),
                "redis": "up" if self.redis_up else "down",
                "health_age": self.liveness.ping_age(),
            },
        )

    async def _watch_liveness(self) -> None:
        # One timer per process: stale for every stream at once, and the age gauge.
        while True:
            self.metrics.health_age.set(self.liveness.silent_for())
            if self.liveness.turn_stale():
                self.hub.broadcast(self.liveness.stale_frame())
            await asyncio.sleep(min(LIVENESS_TICK, self.liveness.until_due() or LIVENESS_TICK))

    async def _ping_forever(self) -> None:
        # One tick for every stream of the process: no per-client timers.
        while True:
            await asyncio.sleep(self.ping_interval)
            try:
                self.hub.broadcast(Frame(self.ping_frame()))
            except Exception as exc:  # one bad tick never ends the pings
                if _limited.log(logging.ERROR, "ping", "ping tick failed: %r", exc):
                    log.error("traceback of the failure above", exc_info=exc)


def frame_payload(frame: Frame) -> bytes:
    """The data of a frame, its ``data:`` lines joined by line feeds."""
    lines = frame.data.split(b"\n")
    return b"\n".join(line[len(b"data: ") :] for line in lines if line.startswith(b"data: "))
