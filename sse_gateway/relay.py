"""The relay: channel messages in, framed events out to the hub; pings; snapshot re-sends.

It is the gateway's ``SourceListener``. Each message is checked once at the
Redis boundary (event name, size, UTF-8), framed once, and the same bytes go
to every subscriber. A bad message is counted, logged and skipped; nothing a
publisher sends can stop the relay.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Coroutine
from typing import Any

from connectome_sse.contract import PING_EVENT, event_from_channel, snapshot_key
from sse_gateway.framing import Frame, encode_event
from sse_gateway.hub import Hub
from sse_gateway.metrics import GatewayMetrics
from sse_gateway.snapshots import SnapshotReader
from sse_gateway.source import EventSource, SourceUnavailable

log = logging.getLogger("sse_gateway.relay")


class Relay:
    def __init__(
        self,
        hub: Hub,
        source: EventSource,
        metrics: GatewayMetrics,
        *,
        max_event_bytes: int,
        ping_interval: float,
    ) -> None:
        self.hub = hub
        self.source = source
        self.metrics = metrics
        self.max_event_bytes = max_event_bytes
        self.ping_interval = ping_interval
        # Snapshots are checked and framed once per read, however many streams share it.
        self.snapshots = SnapshotReader(self._read_framed_snapshots)
        self.redis_up = False
        self._connected_once = False
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> None:
        self._spawn(self.source.run(self))
        self._spawn(self._ping_forever())

    async def stop(self, timeout: float = 2.0) -> None:
        for task in list(self._tasks):
            task.cancel()
        # Bounded: a task that ignores its cancellation must not hold the exit.
        _, stuck = await asyncio.wait(self._tasks, timeout=timeout) if self._tasks else ((), ())
        for task in stuck:
            log.error("relay task did not stop within %.1fs: %r", timeout, task)
        await self.source.aclose()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("relay task failed", exc_info=task.exception())

    # -- SourceListener ----------------------------------------------------
    def on_message(self, channel: str, data: bytes) -> None:
        frame = self.frame(channel, data)
        if frame is None:
            return
        event, body = frame
        started = time.perf_counter()
        delivered = self.hub.publish(event, Frame(body))
        self.metrics.fanout_latency.observe(time.perf_counter() - started)
        self.metrics.events_relayed.inc()
        self.metrics.frames_delivered.inc(delivered)

    def on_connected(self) -> None:
        if self._connected_once:
            self.metrics.redis_reconnects.inc()
            # A change made while we were away must not be missed: re-send snapshots.
            self._spawn(self._resend_snapshots())
        self._connected_once = True
        self._set_up(True)

    def on_disconnected(self) -> None:
        self._set_up(False)

    def _set_up(self, up: bool) -> None:
        self.redis_up = up
        self.metrics.redis_up.set(1 if up else 0)

    # -- framing at the boundary -------------------------------------------
    def frame(self, channel: str, data: bytes) -> tuple[str, bytes] | None:
        """The event name and its frame, or None (counted and logged) when the message is bad."""
        event = event_from_channel(channel)
        if event is None:
            self._drop("bad_event_name", channel, len(data))
            return None
        body = self._encode(event, channel, data)
        return None if body is None else (event, body)

    def _encode(self, event: str, origin: str, data: bytes) -> bytes | None:
        if len(data) > self.max_event_bytes:
            self._drop("too_large", origin, len(data))
            return None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            self._drop("invalid_utf8", origin, len(data))
            return None
        return encode_event(event, text)

    def _drop(self, reason: str, origin: str, size: int) -> None:
        self.metrics.events_dropped.labels(reason).inc()
        log.warning("dropped message on %r (%d bytes): %s", origin[:100], size, reason)

    async def _read_framed_snapshots(self) -> dict[str, bytes]:
        """Event name -> framed snapshot; bad snapshots are counted and logged, once per read."""
        framed = {}
        for event, data in (await self.source.read_snapshots()).items():
            body = self._encode(event, snapshot_key(event), data)
            if body is not None:
                framed[event] = body
        return framed

    @staticmethod
    def select(framed: dict[str, bytes], events: frozenset[str] | None) -> list[bytes]:
        """The framed snapshots of the selected event types (None: all)."""
        if events is None:
            return list(framed.values())
        return [body for event, body in framed.items() if event in events]

    async def _resend_snapshots(self) -> None:
        try:
            framed = await self.snapshots.read()
        except SourceUnavailable as exc:
            log.warning("could not re-read snapshots after reconnect: %s", exc)
            return
        for event, body in framed.items():
            self.hub.publish(event, Frame(body))

    # -- pings --------------------------------------------------------------
    def ping_frame(self) -> bytes:
        data = json.dumps({"ts": round(time.time(), 3), "redis": "up" if self.redis_up else "down"})
        return encode_event(PING_EVENT, data)

    async def _ping_forever(self) -> None:
        # One tick for every stream of the process: no per-client timers.
        while True:
            await asyncio.sleep(self.ping_interval)
            self.hub.broadcast(Frame(self.ping_frame()))
