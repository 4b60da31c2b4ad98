"""The publisher loop: lease, read, apply, acknowledge, publish; ``run_once()`` is one step of it.

One step, as the leader:

1. renew the lease when due (every lease/3);
2. on taking over (or after a reconnect): continue the counters from the
   checkpoint the last leader published with its last payload (see
   ``checkpoint.py``), claim the group's pending entries, replay from the
   stream's history what earlier leaders applied within ``HEALTH_WINDOW`` (so
   an ERROR does not vanish in a failover), then apply the claimed entries;
3. ``XREADGROUP`` one batch, blocking no longer than the next thing to do
   (publish, renew, a status change due to time alone), apply, acknowledge;
4. publish when the cadence says so, through the lease's fenced script.

As a standby it only tries to acquire the lease, every ``min(HEALTH_INTERVAL,
lease/3)`` seconds, and reads nothing: a standby that read would have to
acknowledge entries it does not apply, or hold them from the leader.

Entry times come from the stream ids (Redis server time), converted to the
local clock with the offset measured by ``TIME`` at each connect, so a backlog
applied late still lands at the moment it happened.

Redis lost: the aggregator keeps its state; the step returns a capped,
jittered backoff; after reconnecting, the group position and pending list say
where to resume. Nothing raised inside a step stops the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Callable, Mapping

import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from connectome_sse.backoff import Backoff
from connectome_sse.contract import HEALTH_EVENT
from connectome_sse.redaction import redact_url
from health_publisher import checkpoint as checkpoints
from health_publisher.aggregator import HealthAggregator
from health_publisher.cadence import Cadence
from health_publisher.lease import LeaderLease
from health_publisher.metrics import PublisherMetrics
from health_publisher.reader import Entry, SignalReader, id_key, id_ms, is_nogroup
from health_publisher.settings import PublisherSettings
from health_publisher.signals import BadSignal, parse_signal

log = logging.getLogger("health_publisher")

MAX_BLOCK_S = 1.0
SOCKET_TIMEOUT_S = 5.0  # larger than any XREADGROUP BLOCK we issue (MAX_BLOCK_S)
CONNECT_TIMEOUT_S = 2.0
REPLAY_BATCH = 1000
MAX_REPLAY = 200_000


def make_client(settings: PublisherSettings) -> aioredis.Redis:
    """A client whose every call fails fast: the service owns retrying and backoff."""
    from redis.asyncio.retry import Retry

    return aioredis.Redis.from_url(
        settings.redis_url,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
        client_name="health-publisher",
    )


class HealthPublisher:
    def __init__(
        self,
        settings: PublisherSettings,
        *,
        client: aioredis.Redis | None = None,
        aggregator: HealthAggregator | None = None,
        wall: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
        metrics: PublisherMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.client = client or make_client(settings)
        self.wall = wall
        self.mono = mono
        self.metrics = metrics or PublisherMetrics()
        self.aggregator = aggregator or HealthAggregator(
            window=settings.health_window, stale_after=settings.health_stale_after, clock=wall
        )
        self.consumer = settings.consumer_name
        self.token = f"{self.consumer}:{uuid.uuid4().hex[:12]}"
        self.reader = SignalReader(self.client, self.consumer)
        self.lease = LeaderLease(self.client, self.token, settings.publisher_lease_ms, clock=mono)
        self.cadence = Cadence(settings.health_interval, settings.health_max_rate)
        self.backoff = Backoff(base=0.1, cap=5.0)
        self.renew_every = settings.lease_seconds / 3.0
        # A standby polls often (SET NX is cheap) so it takes over well within lease + interval.
        self.acquire_every = max(
            0.05, min(settings.health_interval, settings.lease_seconds / 3.0) / 4.0
        )

        self.connected = False
        self.ever_connected = False
        self.leader = False
        self.needs_recovery = True
        self.offset = 0.0  # Redis server time minus local wall time
        self.last_applied_id: bytes | None = None
        self.next_renew_at = 0.0
        self.next_acquire_at = 0.0
        self.last_published_state: str | None = None
        self.published = 0
        self.bad_signals = 0

    # -- the loop -----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Step until ``stop`` is set; a step in flight is cancelled at once (its entries stay
        pending for the next leader), then the lease is released."""
        log.info(
            "starting: consumer=%s redis=%s interval=%gs max_rate=%g/s window=%gs "
            "stale_after=%gs lease=%dms",
            self.consumer,
            redact_url(self.settings.redis_url),
            self.settings.health_interval,
            self.settings.health_max_rate,
            self.settings.health_window,
            self.settings.health_stale_after,
            self.settings.publisher_lease_ms,
        )
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                step = asyncio.ensure_future(self.run_once())
                await asyncio.wait({step, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not step.done():
                    step.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await step
                    break
                idle = step.result()
                if idle > 0:
                    await asyncio.wait({stopping}, timeout=idle)
        finally:
            stopping.cancel()
            await self.close()

    async def run_once(self) -> float:
        """One step; returns how long the caller may idle before the next one."""
        try:
            if self.leader and not self.lease.held():
                self._set_leader(False, "lease not renewed in time")
            if not self.connected:
                await self._connect()
            await self._lease_step()
            if not self.lease.held():
                self._set_leader(False, "lease held by another publisher")
                return max(0.0, self.next_acquire_at - self.mono())
            self._set_leader(True, "lease acquired")
            if self.needs_recovery:
                await self._recover()
            entries = await self.reader.read(self.settings.publisher_batch, self._block_ms())
            if entries:
                await self._apply_and_ack(entries)
            await self._maybe_publish()
            return 0.0
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            return self._redis_lost(exc)
        except ResponseError as exc:
            if is_nogroup(exc):
                # Redis restarted empty (or someone deleted the group): recreate, resume.
                log.warning("consumer group missing; recreating it")
                self.connected = False
                self.needs_recovery = True
                return 0.0
            log.error("redis refused a command: %s", exc)
            return self.backoff.next_delay()
        except RedisError as exc:
            log.error("redis error: %s", exc)
            return self.backoff.next_delay()
        except Exception:  # a bug costs a step and a log line, never the publisher
            log.exception("unexpected error in the publisher loop; carrying on")
            self.connected = False
            return self.backoff.next_delay()

    async def close(self) -> None:
        if self.lease.held():
            try:
                await asyncio.wait_for(self.lease.release(), timeout=1.0)
                log.info("leadership released")
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning("could not release the lease (%s); it expires by itself", exc)
        self.lease.drop()
        self._set_leader(False, "shutting down", quiet=True)
        with contextlib.suppress(RedisError, OSError):
            await self.client.aclose()

    # -- connection and lease -----------------------------------------------------------

    async def _connect(self) -> None:
        before = self.wall()
        server = await self.reader.server_time()
        self.offset = server - (before + self.wall()) / 2.0
        if await self.reader.ensure_group(self._start_id()):
            log.info("created consumer group at %s", self._start_id())
        if self.ever_connected:
            log.info("redis reconnected; resuming from the group's position")
        self.connected = True
        self.ever_connected = True
        # Check at once that the lease survived the outage (Redis may have restarted empty).
        self.next_renew_at = 0.0
        # Entries delivered to us but whose reply was lost are pending: claim them again.
        self.needs_recovery = True
        self.backoff.reset()

    def _redis_lost(self, exc: BaseException) -> float:
        if self.connected:
            self.metrics.redis_reconnects.inc()
        self.connected = False
        delay = self.backoff.next_delay()
        log.warning(
            "redis unavailable at %s (%s: %s); retrying in %.2fs",
            redact_url(self.settings.redis_url),
            type(exc).__name__,
            exc,
            delay,
        )
        return delay

    async def _lease_step(self) -> None:
        now = self.mono()
        if self.lease.held(now) and now >= self.next_renew_at:
            self.next_renew_at = now + self.renew_every
            if not await self.lease.renew():
                # Expired (a pause, a Redis that lost its data) or taken: whoever led meanwhile
                # may have applied entries, so recover again if we get the lease back.
                self.needs_recovery = True
                log.warning("lease renewal refused: it expired or another publisher holds it")
        if not self.lease.held(now) and now >= self.next_acquire_at:
            self.next_acquire_at = now + self.acquire_every
            if await self.lease.acquire():
                self.next_renew_at = now + self.renew_every

    def _set_leader(self, leader: bool, why: str, quiet: bool = False) -> None:
        if leader == self.leader:
            return
        self.leader = leader
        self.cadence.reset()
        self.metrics.leader.set(1 if leader else 0)
        self.metrics.leadership_changes.inc()
        if leader:
            self.needs_recovery = True
            log.info("leadership gained (%s); consumer=%s", why, self.consumer)
        elif not quiet:
            log.warning("leadership lost (%s); standing by", why)
        else:
            log.info("leadership left (%s)", why)

    # -- taking over --------------------------------------------------------------------

    async def _recover(self) -> None:
        """Become a leader that has missed nothing (see the module docstring, step 2)."""
        checkpoint = checkpoints.decode(await self.client.get(self.lease.checkpoint_key))
        counted_until: bytes | None = None
        if checkpoint is not None:
            self.aggregator.seed_counters(checkpoint.counters)
            counted_until = checkpoint.last_id.encode() if checkpoint.last_id else None
        if self.last_applied_id is not None and (
            counted_until is None or id_key(self.last_applied_id) > id_key(counted_until)
        ):
            counted_until = self.last_applied_id
        await self.reader.ensure_group(self._start_id())
        already_applied = self.last_applied_id
        claimed = sorted(await self.reader.claim_pending(), key=lambda e: id_key(e[0]))
        claimed_ids = {eid for eid, _ in claimed}
        replayed = await self._replay(claimed_ids, counted_until)
        fresh = [e for e in claimed if not _at_or_before(e[0], already_applied)]
        for eid, fields in fresh:
            self._apply_entry(eid, fields, count_totals=not _at_or_before(eid, counted_until))
        await self.reader.ack([eid for eid, _ in claimed])
        self.needs_recovery = False
        if claimed or replayed:
            log.info(
                "resumed: %d pending entries claimed (%d applied), %d replayed from history",
                len(claimed),
                len(fresh),
                replayed,
            )

    async def _replay(self, skip: set[bytes], counted_until: bytes | None) -> int:
        """Apply what earlier leaders read within the window (nothing to acknowledge: XRANGE).

        Entries up to ``counted_until`` are in the checkpoint's totals already, so they only
        rebuild the windows; later ones were applied by a leader that died before publishing
        them, and are counted here.
        """
        until = await self.reader.last_delivered_id()
        cursor = self._start_id()
        if until is None or id_key(until) <= id_key(cursor):
            return 0
        replayed = 0
        while replayed < MAX_REPLAY:
            batch = await self.reader.history(cursor, until, REPLAY_BATCH)
            if not batch:
                break
            for eid, fields in batch:
                if eid not in skip:
                    counted = not _at_or_before(eid, counted_until)
                    self._apply_entry(eid, fields, count_totals=counted, quiet=True)
                    replayed += 1
            cursor = batch[-1][0].decode()
        self.metrics.signals_replayed.inc(replayed)
        return replayed

    def _start_id(self) -> str:
        """Where history that matters begins: the window's start, or after what we applied."""
        window_start_ms = int((self.wall() + self.offset - self.settings.health_window) * 1000)
        start = f"{max(window_start_ms, 0)}-0"
        if self.last_applied_id is not None and id_key(self.last_applied_id) > id_key(start):
            return self.last_applied_id.decode()
        return start

    # -- applying and publishing --------------------------------------------------------

    async def _apply_and_ack(self, entries: list[Entry]) -> None:
        for eid, fields in entries:
            self._apply_entry(eid, fields)
        if not self.lease.held():
            # Paused past our lease: the next leader claims these; acking would be harmless
            # but pointless, and we must not pretend to still lead.
            log.warning(
                "lease lapsed while applying %d entries; leaving them pending", len(entries)
            )
            return
        await self.reader.ack([eid for eid, _ in entries])

    def _apply_entry(
        self,
        eid: bytes,
        fields: Mapping[bytes, bytes],
        *,
        count_totals: bool = True,
        quiet: bool = False,
    ) -> None:
        """Apply one entry; ``quiet`` for history another leader already logged and counted."""
        try:
            signal = parse_signal(fields)
            self.aggregator.apply(signal, at=self._entry_time(eid), count_totals=count_totals)
        except BadSignal as exc:
            if not quiet:
                self.bad_signals += 1
                self.metrics.signals_bad.labels(exc.reason).inc()
                log.warning("bad signal %s (%s): %s", eid.decode(), exc.reason, exc)
        except Exception:  # a bug must cost one entry, never the publisher
            if not quiet:
                self.bad_signals += 1
                self.metrics.signals_bad.labels("internal").inc()
                log.exception("could not apply signal %s", eid.decode())
        else:
            if not quiet:
                self.metrics.signals_applied.inc()
        if self.last_applied_id is None or id_key(eid) > id_key(self.last_applied_id):
            self.last_applied_id = eid

    def _entry_time(self, eid: bytes) -> float:
        return id_ms(eid) / 1000.0 - self.offset

    def _block_ms(self) -> int:
        """How long the read may block: until the next publish, renewal or status change."""
        now = self.mono()
        wall_now = self.wall()
        state = self.aggregator.status(wall_now).state
        wake = min(self.cadence.next_due(now, state), self.next_renew_at, now + MAX_BLOCK_S)
        change_at = self.aggregator.next_status_change_at(wall_now)
        if change_at is not None:
            wake = min(wake, now + (change_at - wall_now))
        # Rounded up: a read that returns a hair early would find nothing due and spin.
        return max(0, math.ceil((wake - now) * 1000))

    async def _maybe_publish(self) -> None:
        now = self.mono()
        wall_now = self.wall()
        state = self.aggregator.status(wall_now).state
        if not self.cadence.due(now, state) or not self.lease.held(now):
            return
        payload = self.aggregator.payload(wall_now)
        state = payload.status.state
        checkpoint = checkpoints.Checkpoint(
            last_id=self.last_applied_id.decode() if self.last_applied_id else None,
            counters=payload.counters,
        )
        receivers = await self.lease.publish(
            HEALTH_EVENT, payload.to_json(), checkpoints.encode(checkpoint)
        )
        if receivers is None:
            self.needs_recovery = True
            self._set_leader(False, "the lease is no longer ours")
            return
        self.cadence.published(now, state)
        self.published += 1
        self.metrics.events_published.labels(state).inc()
        if state != self.last_published_state:
            notes = "; ".join(payload.status.notes) or "all clear"
            log.info("status %s -> %s: %s", self.last_published_state or "(none)", state, notes)
            self.last_published_state = state


def _at_or_before(eid: bytes, mark: bytes | None) -> bool:
    return mark is not None and id_key(eid) <= id_key(mark)
