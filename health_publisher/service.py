"""The publisher loop: lease, read, apply, acknowledge, publish; ``run_once()`` is one step of it.

How a step works, takeover and recovery included: ``docs/publisher.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from connectome_core.backoff import Backoff
from connectome_core.contract import HEALTH_EVENT
from connectome_core.event_log import LOG_KEY
from connectome_core.logs import RateLimitedLog
from connectome_core.redis_connect import describe_error, is_configuration_error, short_error
from health_publisher import checkpoint as checkpoints
from health_publisher.aggregator import HealthAggregator
from health_publisher.applier import SignalApplier
from health_publisher.cadence import Cadence
from health_publisher.client import make_client
from health_publisher.functions import FunctionLoader
from health_publisher.housekeeping import Housekeeping
from health_publisher.leadership import Leadership
from health_publisher.lease import LeaderLease
from health_publisher.metrics import PublisherMetrics
from health_publisher.reader import NotLeader, SignalReader, is_nogroup
from health_publisher.replay import Recovery
from health_publisher.server_clock import ServerClock
from health_publisher.settings import PublisherSettings

log = logging.getLogger("health_publisher")

MAX_BLOCK_S = 1.0  # below the client's socket timeout (client.SOCKET_TIMEOUT_S)


class PublisherMisconfigured(Exception):
    """Redis refused us for a reason only a setting can cure; the message is one line."""


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
        self.mono = mono
        self.metrics = metrics or PublisherMetrics()
        self.aggregator = aggregator or HealthAggregator(
            window=settings.health_window, stale_after=settings.health_stale_after, clock=wall
        )
        self.wall = wall
        self.clock = ServerClock(wall)
        self.applier = SignalApplier(self.aggregator, self.clock, self.metrics)
        self.consumer = settings.consumer_name
        self.token = f"{self.consumer}:{uuid.uuid4().hex[:12]}"
        self.reader = SignalReader(self.client, self.consumer, self.token)
        self.lease = LeaderLease(self.client, self.token, settings.publisher_lease_ms, clock=mono)
        self.leadership = Leadership.for_settings(self.lease, self.metrics, settings, mono)
        self.caps = settings.log_caps()
        self.functions = FunctionLoader(self.client, self.caps)
        self.recovery = Recovery(
            client=self.client,
            checkpoint_key=self.lease.checkpoint_key,
            reader=self.reader,
            applier=self.applier,
            clock=self.clock,
            metrics=self.metrics,
            mono=mono,
            keep_lease=self.leadership.keep,
        )
        self.housekeeping = Housekeeping(
            self.reader, self.clock, mono, self._history_needed_s(), settings.publisher_lease_ms
        )
        self.cadence = Cadence(settings.health_interval, settings.health_max_rate)
        # With Sentinel a lost master is normally a failover that ends within seconds,
        # and each attempt first asks the sentinels where the master is now: retry often.
        self.backoff = Backoff(base=0.1, cap=1.0 if self.target.is_sentinel else 5.0)

        self.connected = False
        self.ever_connected = False
        self.needs_recovery = True
        self.last_published_state: str | None = None
        self.published = 0
        self.unacked: list[bytes] = []  # applied, acknowledged by the next (fenced) read
        self.checkpointed_id: bytes | None = None
        self.redis_log = RateLimitedLog(log)
        self.worked = False  # a step went through: configuration errors are retried from now

    def _history_needed_s(self) -> float:
        return max(self.settings.health_window, self.aggregator.sample_window)

    @property
    def leader(self) -> bool:
        return self.leadership.leader

    @property
    def ever_led(self) -> bool:
        return self.leadership.ever_led

    @property
    def bad_signals(self) -> int:
        return self.applier.bad_signals

    # -- the loop -----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Step until ``stop`` is set; a step in flight is cancelled at once (its entries stay
        pending for the next leader), then the lease is released."""
        self._log_start()
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

    def _log_start(self) -> None:
        s = self.settings
        log.info(
            "starting: consumer=%s redis=%s interval=%gs max_rate=%g/s window=%gs "
            "stale_after=%gs lease=%dms event_log=%s (maxlen ~%s, max age %s)",
            self.consumer,
            self.target.display(),
            s.health_interval,
            s.health_max_rate,
            s.health_window,
            s.health_stale_after,
            s.publisher_lease_ms,
            LOG_KEY,
            self.caps.maxlen or "off",
            f"{self.caps.max_age_s}s" if self.caps.max_age_s else "off",
        )

    async def run_once(self) -> float:
        """One step; returns how long the caller may idle before the next one."""
        try:
            return await self._step()
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

    async def _step(self) -> float:
        if self.leader and not self.lease.held():
            self._set_leader(False, "lease not renewed in time")
        if not self.connected:
            await self._connect()
        await self._lease_step()
        if not self.lease.held():
            self._set_leader(False, "lease held by another publisher")
            await self.leadership.announce_standby()
            self.worked = True
            return self.leadership.idle_until_acquire()
        if not self.leader:
            self._set_leader(True, self.leadership.taking_over())
        if self.needs_recovery:
            await self._recover()
        await self._read_and_apply()
        await self._maybe_publish()
        await self.housekeeping.maybe_run(self.checkpointed_id)
        self.worked = True
        return 0.0

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
        self.clock.measured(before, server, self.wall())
        if await self.reader.ensure_group(self._start_id()):
            log.info("created consumer group at %s", self._start_id())
        if self.ever_connected:
            log.info("redis reconnected; resuming from the group's position")
        # A Redis that restarted empty lost its functions too.
        await self.functions.load()
        self.connected = True
        self.ever_connected = True
        # Check at once that the lease survived the outage (Redis may have restarted empty).
        self.leadership.renew_soon()
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
        done = await self.leadership.step()
        if done.renewal_refused:
            # Expired (a pause, a Redis that lost its data) or taken: whoever led meanwhile
            # may have applied entries, so recover again if we get the lease back; what we
            # applied and did not acknowledge stays pending for them (as in _deposed).
            self.needs_recovery = True
            self.unacked.clear()
        if done.acquired:
            # Each leader (re)loads the library: the Redis it leads on may have lost it.
            await self.functions.load()

    def _deposed(self, why: str) -> None:
        """Redis refused a fenced command: whatever we applied and did not acknowledge stays
        pending for the next leader, who claims it."""
        self.lease.drop()
        self.needs_recovery = True
        self.unacked.clear()
        self._set_leader(False, why)

    def _set_leader(self, leader: bool, why: str, quiet: bool = False) -> None:
        if self.leadership.set(leader, why, quiet):
            self.cadence.reset()
            if leader:
                self.needs_recovery = True

    # -- taking over --------------------------------------------------------------------

    async def _recover(self) -> None:
        # Acknowledged by the next fenced read, once they are applied (they are now).
        self.unacked.extend(await self.recovery.run(self._start_id))
        self.needs_recovery = False

    def _start_id(self) -> str:
        """Where history that matters begins: the window's start, or after what we applied."""
        return self.clock.window_start_id(self.settings.health_window, self.applier.last_applied_id)

    # -- applying and publishing --------------------------------------------------------

    async def _read_and_apply(self) -> None:
        """One fenced read (acknowledging the last batch); when nothing is new, block until
        something is or the next thing is due."""
        result = await self.reader.read(self.settings.publisher_batch, self.unacked)
        self.unacked = []
        if result.entries:
            for eid, fields in result.entries:
                self.applier.apply(eid, fields)
            self.unacked = [eid for eid, _ in result.entries]
            return
        await self.reader.wait(result.wait_after, self._block_ms())

    def _block_ms(self) -> int:
        """How long the read may block: until the next publish, renewal or status change."""
        now = self.mono()
        wall_now = self.wall()
        state = self.aggregator.status(wall_now).state
        wake = min(
            self.cadence.next_due(now, state), self.leadership.next_renew_at, now + MAX_BLOCK_S
        )
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
        applied_id = self.applier.last_applied_id
        checkpoint = checkpoints.Checkpoint(
            last_id=applied_id.decode() if applied_id else None, counters=payload.counters
        )
        published = await self.lease.publish(
            HEALTH_EVENT, payload.to_json(), checkpoints.encode(checkpoint), self.caps
        )
        if published is None:
            raise NotLeader
        self.checkpointed_id = applied_id
        self.cadence.published(now, state)
        self.published += 1
        self.metrics.events_published.labels(state).inc()
        if state != self.last_published_state:
            notes = "; ".join(payload.status.notes) or "all clear"
            log.info(
                "status %s -> %s: %s (event %s)",
                self.last_published_state or "(none)",
                state,
                notes,
                published.event_id,
            )
            self.last_published_state = state
