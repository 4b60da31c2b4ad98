"""The relay: channel messages in, framed events out to the hub; pings; supervised tasks.

It is the gateway's ``SourceListener``. A message is checked once (event name, size,
UTF-8, reserved names), given its content id, framed once, then recorded in the
history and offered to the hub: relayed live and replayed alike. Nothing a publisher
sends, and no bug below ``on_message``, stops the relay: a bad message is counted and
skipped. Its tasks (the Redis reader, the ping tick, the health watch) are restarted
when they end, and ``redis_up`` is False meanwhile, so readiness and pings tell the truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator
from typing import Any

from connectome_core.backoff import Backoff
from connectome_core.contract import (
    CHANNEL_PREFIX,
    HEALTH_EVENT,
    PING_EVENT,
    RESERVED_EVENTS,
    event_from_channel,
)
from connectome_core.event_log import LOG_ID_CHANNEL, log_event_id
from connectome_core.logs import RateLimitedLog
from sse_gateway.framing import Frame, encode_event, encode_json_event
from sse_gateway.health_watch import HealthWatch, payload_ts
from sse_gateway.held_snapshots import HeldSnapshots
from sse_gateway.history import History, event_id
from sse_gateway.hub import Hub
from sse_gateway.log_follower import GAP_FRAME, LogFollower
from sse_gateway.metrics import GatewayMetrics
from sse_gateway.source import EventSource

log = logging.getLogger("sse_gateway.relay")
_limited = RateLimitedLog(log)

READER, PINGS, HEALTH_WATCH = "redis reader", "ping tick", "health watch"
HEALTH_WATCH_TICK = 0.5  # seconds between health checks: health_stale within stale_after + 0.5


class Relay:
    def __init__(
        self,
        hub: Hub,
        source: EventSource,
        metrics: GatewayMetrics,
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
        # The one place that decides which types are latest-only: their frames say so.
        self.latest_only = frozenset(latest_only)
        self.history = History(history, latest_only=self.latest_only)
        self.health = HealthWatch(health_stale_after)
        # What a new stream can open with, without reading Redis (the opener reads).
        self.held = HeldSnapshots()
        # Lines that bad input can repeat go through here: one per reason per interval.
        self.drop_log = RateLimitedLog(log)
        # Called after every new subscription but the first (a resumed one lost nothing),
        # once the gap is filled from the event log.
        self.on_resubscribed: Callable[[], None] = lambda: None
        self.log = LogFollower(
            source.log,
            self.relay_logged,
            self._log_gap,
            lambda: self.on_resubscribed(),
            self.latest_only,
            self._count_log,
        )
        self._subscribed = False
        self._failed: set[str] = set()  # supervised tasks that ended and wait for a restart
        self._connected_once = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._live_watch: list[set[str]] = []  # event types relayed while someone watches

    @property
    def subscribed(self) -> bool:
        return self._subscribed

    @property
    def redis_up(self) -> bool:
        """The subscription is live and every relay task runs: what readiness and pings say."""
        return self._subscribed and not self._failed

    @property
    def ready(self) -> bool:
        return self.redis_up

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> None:
        self._spawn(self._keep_running(READER, lambda: self.source.run(self)))
        self._spawn(self._keep_running(PINGS, self._ping_forever))
        self._spawn(self._keep_running(HEALTH_WATCH, self._watch_health))

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
        self.log.stop()
        await stop_tasks(self._tasks, timeout)
        await self.source.aclose()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        return spawn(self._tasks, coro)

    # -- SourceListener ----------------------------------------------------
    def on_message(self, channel: str, data: bytes) -> None:
        try:
            follower = self.log
            if channel == LOG_ID_CHANNEL:  # the event log's id marker: not an event
                follower.marker(data)
                return
            stream_id = follower.take_marker(channel)
            if follower.holding:  # a gap fill runs: live messages come after it
                follower.hold(channel, data, stream_id)
                return
            self._relay(channel, data, stream_id)
        except Exception as exc:  # one bad message never ends the reader
            self._internal_drop(channel, exc)

    def relay_logged(self, channel: str, data: bytes, stream_id: str | None) -> None:
        """A message from the gap fill, or held behind it: relayed as if it came live."""
        try:
            self._relay(channel, data, stream_id)
        except Exception as exc:
            self._internal_drop(channel, exc)

    def _internal_drop(self, channel: str, exc: Exception) -> None:
        self.metrics.events_dropped.labels("internal").inc()
        # A bug's traceback is worth one line, not one per message: only with the
        # line the limiter lets out.
        if self.drop_log.log(
            logging.ERROR, "internal", "dropped message on %r: %r", channel[:100], exc
        ):
            log.error("traceback of the drop above", exc_info=exc)

    def _relay(self, channel: str, data: bytes, stream_id: str | None = None) -> None:
        if stream_id is not None:
            if not self.log.is_new(stream_id):
                return  # a gap fill relayed it already
            # Relayed or dropped, it is behind us: the log position moves on either way.
            self.log.relayed(stream_id, channel[len(CHANNEL_PREFIX) :], data)
        # Everything that can drop a message runs here, before it reaches anyone.
        framed = self.frame(channel, data, stream_id)
        if framed is None or stream_id is None:
            self.held.forget()  # Redis's snapshot of it cannot be told from here
            if framed is None:
                return
        event, frame = framed
        if stream_id is not None:
            self.held.relayed(event, frame)
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
            self.health.record(ts)
        return self.hub.publish(event, frame)

    def commit_snapshot(self, event: str, frame: Frame) -> None:
        """Relay a re-read snapshot that is newer than what went out, as its message would."""
        ts = payload_ts(frame_payload(frame)) if event == HEALTH_EVENT else None
        self._commit(event, frame, ts)

    @contextlib.contextmanager
    def watching_live(self) -> Iterator[set[str]]:
        """The event types relayed live while the block runs."""
        live: set[str] = set()
        self._live_watch.append(live)
        try:
            yield live
        finally:
            self._live_watch.remove(live)

    def on_connected(self, resumed: bool = False) -> None:
        self.held.forget()
        if not resumed:
            if self._connected_once:
                self.metrics.redis_reconnects.inc()
            # Before the subscription delivers anything: a fill holds what comes live.
            # on_resubscribed follows the fill (a change made while away is not missed).
            self.log.subscribed(first=not self._connected_once)
        self._connected_once = True
        self._subscribed = True
        self._publish_up()

    def on_disconnected(self) -> None:
        self.held.forget()
        self._subscribed = False
        self._publish_up()

    def _log_gap(self, reason: str) -> None:
        """The event log cannot prove nothing was missed: resync for every stream."""
        self.metrics.log_gaps.labels(reason).inc()
        log.warning(
            "the event log cannot prove that no event was missed (%s): resync and "
            "snapshots for every stream",
            reason,
        )
        self.history.clear()  # a resume across the gap must not look complete
        self.held.forget()
        self.hub.broadcast(GAP_FRAME)

    def _count_log(self, what: str, count: int) -> None:
        counter = self.metrics.log_filled if what == "filled" else self.metrics.log_duplicates
        counter.inc(count)

    def _publish_up(self) -> None:
        self.metrics.redis_up.set(1 if self.redis_up else 0)

    # -- framing at the boundary -------------------------------------------
    def frame(
        self, channel: str, data: bytes, stream_id: str | None = None
    ) -> tuple[str, Frame] | None:
        """The event name and its frame, or None (counted and logged) when the message is bad."""
        event = event_from_channel(channel)
        if event is None:
            self._drop("bad_event_name", channel, len(data))
            return None
        frame = self.encode(event, channel, data, stream_id)
        return None if frame is None else (event, frame)

    def encode(
        self, event: str, origin: str, data: bytes, stream_id: str | None = None
    ) -> Frame | None:
        """``data`` of ``event`` framed with its id, or None (counted and logged) when it
        may not go out; ``origin`` (a channel or a snapshot key) names it in the log. The
        id comes from its event log entry (``stream_id``) when it has one, else from its
        content."""
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
        ident = event_id(event, data) if stream_id is None else log_event_id(stream_id, event, data)
        conflate = event if event in self.latest_only else None
        return Frame(encode_event(event, text, ident), ident, conflate, event)

    def _drop(self, reason: str, origin: str, size: int) -> None:
        self.metrics.events_dropped.labels(reason).inc()
        self.drop_log.warning(
            reason, "dropped message on %r (%d bytes): %s", origin[:100], size, reason
        )

    # -- pings and the health watch -----------------------------------------
    def ping_frame(self) -> bytes:
        return encode_json_event(
            PING_EVENT,
            {
                "ts": round(time.time(), 3),
                "redis": "up" if self.redis_up else "down",
                "health_age": self.health.ping_age(),
            },
        )

    async def _watch_health(self) -> None:
        # One timer per process: stale for every stream at once, and the age gauge.
        while True:
            self.metrics.health_age.set(self.health.silent_for())
            if self.health.turn_stale():
                self.hub.broadcast(self.health.stale_frame())
            tick = HEALTH_WATCH_TICK
            await asyncio.sleep(min(tick, self.health.until_due() or tick))

    async def _ping_forever(self) -> None:
        # One tick for every stream of the process: no per-client timers.
        while True:
            await asyncio.sleep(self.ping_interval)
            try:
                self.hub.broadcast(Frame(self.ping_frame()))
            except Exception as exc:  # one bad tick never ends the pings
                if _limited.log(logging.ERROR, "ping", "ping tick failed: %r", exc):
                    log.error("traceback of the failure above", exc_info=exc)


def spawn(tasks: set[asyncio.Task[None]], coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """A task kept in ``tasks`` until it ends; its failure is logged."""
    task = asyncio.ensure_future(coro)
    tasks.add(task)
    task.add_done_callback(lambda done: _task_done(tasks, done))
    return task


def _task_done(tasks: set[asyncio.Task[None]], task: asyncio.Task[None]) -> None:
    tasks.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("relay task failed", exc_info=task.exception())


async def stop_tasks(tasks: set[asyncio.Task[None]], timeout: float) -> None:
    for task in list(tasks):
        task.cancel()
    # Bounded: a task that ignores its cancellation must not hold the exit.
    _, stuck = await asyncio.wait(tasks, timeout=timeout) if tasks else ((), ())
    for task in stuck:
        log.error("relay task did not stop within %.1fs: %r", timeout, task)


def frame_payload(frame: Frame) -> bytes:
    """The data of a frame, its ``data:`` lines joined by line feeds."""
    lines = frame.data.split(b"\n")
    return b"\n".join(line[len(b"data: ") :] for line in lines if line.startswith(b"data: "))
