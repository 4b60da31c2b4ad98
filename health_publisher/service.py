"""The publisher loop: lease, read, apply, acknowledge, publish; ``run_once()`` is one step of it.

One step, as the leader:

1. renew the lease when due (every lease/3);
2. on taking over (or after a reconnect): continue the counters from the
   checkpoint the last leader published with its last payload (see
   ``checkpoint.py``), claim the group's pending entries, and replay from the
   stream's history what earlier leaders applied within ``HEALTH_WINDOW`` (so
   an ERROR does not vanish in a failover), the claimed entries applied in
   their place in stream order (``_Replay``: the lease is renewed between
   batches; history older than the sample window, and whatever a full replay
   has no time for, is compacted on the server);
3. one fenced read: acknowledge the batch applied last step and read the
   next one, only if Redis still says we lead (``reader.py``); when nothing is
   new, block on a plain ``XREAD`` no longer than the next thing to do
   (publish, renew, a status change due to time alone); apply;
4. publish when the cadence says so, through the lease's fenced script;
5. every ``HOUSEKEEPING_EVERY_S``: trim history older than the window that is
   neither pending nor unread, and remove other consumers holding nothing.

A refused fenced command (``NotLeader``) ends the leadership at once: what
we applied and did not acknowledge stays pending, and the next leader claims
it. So every entry is either pending (claimed by the next leader), or was
acknowledged by a leader while Redis said it led, before the next leader's
replay reads up to the group's last-delivered id.

As a standby it only tries to acquire the lease, every ``min(HEALTH_INTERVAL,
lease/3)`` seconds, and reads nothing: a standby that read would have to
acknowledge entries it does not apply, or hold them from the leader.

Entry times come from the stream ids (Redis server time), converted to the
local clock with the offset measured by ``TIME`` at each connect, so a backlog
applied late still lands at the moment it happened.

Redis lost: the aggregator keeps its state; the step returns a capped,
jittered backoff; after reconnecting, the group position and pending list say
where to resume. Nothing raised inside a step stops the loop, except an error
only a setting can cure (``PublisherMisconfigured``) before any step went through.
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
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from connectome_core.backoff import Backoff
from connectome_core.contract import HEALTH_EVENT
from connectome_core.logs import RateLimitedLog
from connectome_core.redis_connect import (
    async_client,
    describe_error,
    is_configuration_error,
    short_error,
)
from health_publisher import checkpoint as checkpoints
from health_publisher.aggregator import HealthAggregator
from health_publisher.cadence import Cadence
from health_publisher.lease import LeaderLease
from health_publisher.metrics import PublisherMetrics
from health_publisher.reader import (
    Entry,
    NotLeader,
    SignalReader,
    id_key,
    id_ms,
    is_nogroup,
)
from health_publisher.settings import PublisherSettings
from health_publisher.signals import BadSignal, parse_signal

log = logging.getLogger("health_publisher")

MAX_BLOCK_S = 1.0
SOCKET_TIMEOUT_S = 5.0  # larger than any XREADGROUP BLOCK we issue (MAX_BLOCK_S)
CONNECT_TIMEOUT_S = 2.0
REPLAY_BATCH = 1000
MAX_REPLAY = 200_000
# Full replay (every entry, in order) covers the aggregator's sample window; older history,
# and whatever a full replay has no time for, is compacted on the server (see
# fenced_lua.COMPACT_HISTORY_LUA): the status and totals need every counter entry, the rest
# only the latest values.
REPLAY_BUDGET_S = 1.0
COMPACT_SCAN = 10_000
HOUSEKEEPING_EVERY_S = 10.0
STANDBY_REPORT_S = 30.0  # a standby looks up who leads at most this often
MAX_SEQ = 2**64 - 1


class PublisherMisconfigured(Exception):
    """Redis refused us for a reason only a setting can cure; the message is one line."""


def lease_holder_name(token: bytes | None) -> str | None:
    """The consumer name in a lease token (``<consumer>:<random>``), for log lines."""
    if token is None:
        return None
    return token.decode("utf-8", "replace").rsplit(":", 1)[0]


def make_client(settings: PublisherSettings) -> aioredis.Redis:
    """A client whose every call fails fast: the service owns retrying and backoff.

    With Sentinel every new connection asks the sentinels for the master, and a command
    that meets ``READONLY`` (a demoted master) drops its connection: the publisher writes
    only to the current master, and its fenced scripts check the lease there.
    """
    return async_client(
        settings.redis_target(),
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
        self.target = settings.redis_target()
        self.client = client or make_client(settings)
        self.wall = wall
        self.mono = mono
        self.metrics = metrics or PublisherMetrics()
        self.aggregator = aggregator or HealthAggregator(
            window=settings.health_window, stale_after=settings.health_stale_after, clock=wall
        )
        self.consumer = settings.consumer_name
        self.token = f"{self.consumer}:{uuid.uuid4().hex[:12]}"
        self.reader = SignalReader(self.client, self.consumer, self.token)
        self.lease = LeaderLease(self.client, self.token, settings.publisher_lease_ms, clock=mono)
        self.cadence = Cadence(settings.health_interval, settings.health_max_rate)
        # With Sentinel a lost master is normally a failover that ends within seconds,
        # and each attempt first asks the sentinels where the master is now: retry often.
        self.backoff = Backoff(base=0.1, cap=1.0 if self.target.is_sentinel else 5.0)
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
        self.unacked: list[bytes] = []  # applied, acknowledged by the next (fenced) read
        self.checkpointed_id: bytes | None = None
        self.next_housekeeping_at = 0.0
        self.ever_led = False
        self.next_standby_report_at = 0.0
        self.standby_reported_holder: str | None = None
        self.bad_log = RateLimitedLog(log)
        self.redis_log = RateLimitedLog(log)
        self.worked = False  # a step went through: configuration errors are retried from now

    # -- the loop -----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Step until ``stop`` is set; a step in flight is cancelled at once (its entries stay
        pending for the next leader), then the lease is released."""
        log.info(
            "starting: consumer=%s redis=%s interval=%gs max_rate=%g/s window=%gs "
            "stale_after=%gs lease=%dms",
            self.consumer,
            self.target.display(),
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
                await self._announce_standby()
                self.worked = True
                return max(0.0, self.next_acquire_at - self.mono())
            if not self.leader:
                self._set_leader(True, self._taking_over())
            if self.needs_recovery:
                await self._recover()
            await self._read_and_apply()
            await self._maybe_publish()
            await self._maybe_housekeep()
            self.worked = True
            return 0.0
        except NotLeader:
            self._deposed("the lease is no longer ours")
            return 0.0
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            self._stop_if_misconfigured(exc)
            return self._redis_lost(exc)
        except ResponseError as exc:
            self._stop_if_misconfigured(exc)
            if is_nogroup(exc):
                # Redis restarted empty (or someone deleted the group): recreate, resume.
                log.warning("consumer group missing; recreating it")
                self.connected = False
                self.needs_recovery = True
                return 0.0
            self.redis_log.log(
                logging.ERROR,
                "refused",
                "redis refused a command: %s",
                describe_error(exc, self.target),
            )
            return self.backoff.next_delay()
        except RedisError as exc:
            self.redis_log.log(logging.ERROR, "error", "redis error: %s", short_error(exc))
            return self.backoff.next_delay()
        except Exception:  # a bug costs a step and a log line, never the publisher
            log.exception("unexpected error in the publisher loop; carrying on")
            self.connected = False
            return self.backoff.next_delay()

    def _stop_if_misconfigured(self, exc: BaseException) -> None:
        """Before any step worked, an error only a setting can cure (a refused password, an
        ACL permission missing, a certificate that does not verify) ends the publisher with
        one line instead of a retry loop; later it is logged and retried (an ACL may be
        fixed under a running process)."""
        if not self.worked and is_configuration_error(exc):
            raise PublisherMisconfigured(describe_error(exc, self.target)) from None

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
        if is_configuration_error(exc):
            # A setting (or the server's ACL) changed under a running publisher.
            self.redis_log.log(
                logging.ERROR,
                "misconfigured",
                "%s; retrying in %.2fs",
                describe_error(exc, self.target),
                delay,
            )
            return delay
        self.redis_log.warning(
            "lost",
            "redis unavailable at %s (%s); retrying in %.2fs",
            self.target.display(),
            short_error(exc),
            delay,
        )
        return delay

    async def _lease_step(self) -> None:
        now = self.mono()
        if self.lease.held(now) and not await self._renew_if_due():
            # Expired (a pause, a Redis that lost its data) or taken: whoever led meanwhile
            # may have applied entries, so recover again if we get the lease back; what we
            # applied and did not acknowledge stays pending for them (as in _deposed).
            self.needs_recovery = True
            self.unacked.clear()
            log.warning("lease renewal refused: it expired or another publisher holds it")
        if not self.lease.held(now) and now >= self.next_acquire_at:
            self.next_acquire_at = now + self.acquire_every
            if await self.lease.acquire():
                self.next_renew_at = now + self.renew_every

    def _deposed(self, why: str) -> None:
        """Redis refused a fenced command: whatever we applied and did not acknowledge stays
        pending for the next leader, who claims it."""
        self.lease.drop()
        self.needs_recovery = True
        self.unacked.clear()
        self._set_leader(False, why)

    async def _keep_lease(self) -> None:
        """Renew when due during long work (a replay): a leader must not lose its lease by
        being busy, nor carry on once it lost it."""
        if not await self._renew_if_due():
            raise NotLeader

    async def _renew_if_due(self) -> bool:
        """Renew the lease if its renewal is due; False when Redis refused it."""
        now = self.mono()
        if now < self.next_renew_at:
            return True
        self.next_renew_at = now + self.renew_every
        return await self.lease.renew()

    async def _announce_standby(self) -> None:
        """Say who leads while we stand by: at once, and again when the leader changes
        (looked up every ``STANDBY_REPORT_S``, not at every acquire attempt)."""
        now = self.mono()
        if now < self.next_standby_report_at:
            return
        self.next_standby_report_at = now + STANDBY_REPORT_S
        holder = lease_holder_name(await self.lease.holder())
        if holder == self.standby_reported_holder:
            return
        self.standby_reported_holder = holder
        log.info(
            "standing by: %s leads (lease %s); this publisher takes over if it stops renewing",
            holder or "no publisher",
            self.lease.key,
        )

    def _taking_over(self) -> str:
        previous, self.standby_reported_holder = self.standby_reported_holder, None
        self.next_standby_report_at = 0.0
        if previous:
            return f"lease acquired: taking over from {previous}"
        return "lease acquired"

    def _set_leader(self, leader: bool, why: str, quiet: bool = False) -> None:
        if leader == self.leader:
            return
        self.leader = leader
        self.cadence.reset()
        self.metrics.leader.set(1 if leader else 0)
        self.metrics.leadership_changes.inc()
        if leader:
            self.ever_led = True
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
        claimed, gone = await self.reader.claim_pending(self._keep_lease)
        replay = _Replay(self, claimed, counted_until)
        await replay.run()
        # Acknowledged by the next fenced read, once they are applied (they are now).
        self.unacked.extend(eid for eid, _ in claimed)
        self.needs_recovery = False
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

    def _server_ms(self, ago: float = 0.0) -> int:
        """Redis server time ``ago`` seconds ago, in ms (stream-id time)."""
        return max(0, int((self.wall() + self.offset - ago) * 1000))

    def _start_id(self) -> str:
        """Where history that matters begins: the window's start, or after what we applied."""
        start = f"{self._server_ms(self.settings.health_window)}-0"
        if self.last_applied_id is not None and id_key(self.last_applied_id) > id_key(start):
            return self.last_applied_id.decode()
        return start

    # -- applying and publishing --------------------------------------------------------

    async def _read_and_apply(self) -> None:
        """One fenced read (acknowledging the last batch); when nothing is new, block until
        something is or the next thing is due."""
        result = await self.reader.read(self.settings.publisher_batch, self.unacked)
        self.unacked = []
        if result.entries:
            for eid, fields in result.entries:
                self._apply_entry(eid, fields)
            self.unacked = [eid for eid, _ in result.entries]
            return
        await self.reader.wait(result.wait_after, self._block_ms())

    async def _maybe_housekeep(self) -> None:
        """Trim history nobody needs and remove consumers of dead publishers, now and then."""
        now = self.mono()
        if now < self.next_housekeeping_at:
            return
        self.next_housekeeping_at = now + HOUSEKEEPING_EVERY_S
        needed = max(self.settings.health_window, self.aggregator.sample_window)
        keep_from = f"{self._server_ms(needed)}-0"
        if self.checkpointed_id is not None and id_key(self.checkpointed_id) < id_key(keep_from):
            # Applied but not yet in a published checkpoint: a successor must count it.
            keep_from = self.checkpointed_id.decode()
        done = await self.reader.housekeeping(keep_from, 2 * self.settings.publisher_lease_ms)
        if done.removed_consumers:
            # Another publisher's consumer went away: worth an operator's eye.
            log.info(
                "consumers of stopped publishers removed: %s", ", ".join(done.removed_consumers)
            )
        if done.trimmed:
            log.debug(
                "housekeeping: %d old entries trimmed (kept from %s), consumers removed: %s",
                done.trimmed,
                keep_from,
                ", ".join(done.removed_consumers) or "none",
            )

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
                self.bad_log.warning(
                    exc.reason, "bad signal %s (%s): %s", eid.decode(), exc.reason, exc
                )
        except Exception as exc:  # a bug must cost one entry, never the publisher
            if not quiet:
                self.bad_signals += 1
                self.metrics.signals_bad.labels("internal").inc()
                self.bad_log.log(
                    logging.ERROR,
                    "internal",
                    "could not apply signal %s (internal): %s: %s",
                    eid.decode(),
                    type(exc).__name__,
                    str(exc)[:200],
                )
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
        applied_id = self.last_applied_id
        receivers = await self.lease.publish(
            HEALTH_EVENT, payload.to_json(), checkpoints.encode(checkpoint)
        )
        if receivers is None:
            raise NotLeader
        self.checkpointed_id = applied_id
        self.cadence.published(now, state)
        self.published += 1
        self.metrics.events_published.labels(state).inc()
        if state != self.last_published_state:
            notes = "; ".join(payload.status.notes) or "all clear"
            log.info("status %s -> %s: %s", self.last_published_state or "(none)", state, notes)
            self.last_published_state = state


def _at_or_before(eid: bytes, mark: bytes | None) -> bool:
    return mark is not None and id_key(eid) <= id_key(mark)


class _Replay:
    """A new leader's replay of the window, in stream order, claimed entries in their place.

    History up to the start of the aggregator's sample window (and whatever a full replay
    has no time for within ``REPLAY_BUDGET_S``) is compacted on the server: every counter
    entry, the latest of every other kind. The rest is replayed in full. The lease is renewed
    between batches. Entries up to ``counted_until`` are in the checkpoint's totals already,
    so they only rebuild the windows; later ones were applied by a leader that died before
    publishing them, and are counted here. Nothing here is acknowledged (XRANGE).
    """

    def __init__(
        self, publisher: HealthPublisher, claimed: list[Entry], counted_until: bytes | None
    ) -> None:
        self.p = publisher
        self.pending = list(reversed(claimed))  # oldest last: pop() takes the oldest
        self.claimed_ids = {eid for eid, _ in claimed}
        self.counted_until = counted_until
        self.already_applied = publisher.last_applied_id
        self.replayed = 0
        self.compacted = 0
        self.claimed_applied = 0
        self.cut = False

    def _claimed_upto(self, key: tuple[int, int] | None) -> None:
        while self.pending and (key is None or id_key(self.pending[-1][0]) <= key):
            eid, fields = self.pending.pop()
            if _at_or_before(eid, self.already_applied):
                continue  # our own, applied before a reconnect
            self.p._apply_entry(
                eid, fields, count_totals=not _at_or_before(eid, self.counted_until)
            )
            self.claimed_applied += 1

    def _history(self, batch: list[Entry]) -> None:
        for eid, fields in batch:
            self._claimed_upto(id_key(eid))
            if eid in self.claimed_ids:
                continue
            counted = not _at_or_before(eid, self.counted_until)
            self.p._apply_entry(eid, fields, count_totals=counted, quiet=True)
            self.replayed += 1

    async def run(self) -> None:
        p = self.p
        until = await p.reader.last_delivered_id()
        cursor: bytes | str = p._start_id()
        self._claimed_upto(id_key(cursor))
        if until is not None and id_key(until) > id_key(cursor):
            full_from_ms = p._server_ms(p.aggregator.sample_window)
            before_full = f"{full_from_ms - 1}-{MAX_SEQ}"  # the last id before the full part
            started = p.mono()
            while self.replayed < MAX_REPLAY:
                await p._keep_lease()
                early = id_key(cursor) < id_key(before_full)
                if early or p.mono() - started > REPLAY_BUDGET_S:
                    upper = before_full if early and id_key(before_full) < id_key(until) else until
                    last, batch = await p.reader.compact_history(cursor, upper, COMPACT_SCAN)
                    if last is None:
                        if upper is until:
                            break
                        cursor = before_full  # nothing left before the full part
                        continue
                    self._history(batch)
                    self.compacted += len(batch)
                    self._claimed_upto(id_key(last))
                    cursor = last
                else:
                    batch = await p.reader.history(cursor, until, REPLAY_BATCH)
                    if not batch:
                        break
                    self._history(batch)
                    cursor = batch[-1][0]
            else:
                self.cut = True
        self._claimed_upto(None)
        p.metrics.signals_replayed.inc(self.replayed)
