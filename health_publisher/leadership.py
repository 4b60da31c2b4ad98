"""Who leads: the lease's renew and acquire schedule, leader transitions, standby reports."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from health_publisher.lease import LeaderLease
from health_publisher.metrics import PublisherMetrics
from health_publisher.reader import NotLeader
from health_publisher.settings import PublisherSettings

log = logging.getLogger("health_publisher")

STANDBY_REPORT_S = 30.0  # a standby looks up who leads at most this often


def lease_holder_name(token: bytes | None) -> str | None:
    """The consumer name in a lease token (``<consumer>:<random>``), for log lines."""
    if token is None:
        return None
    return token.decode("utf-8", "replace").rsplit(":", 1)[0]


@dataclass
class LeaseStep:
    """What one lease step did: a renewal Redis refused, a lease just acquired."""

    renewal_refused: bool = False
    acquired: bool = False


class Leadership:
    """The lease on a schedule: renewed every ``renew_every`` s while held, tried every
    ``acquire_every`` s while not; ``leader`` is what this publisher acts as."""

    def __init__(
        self,
        lease: LeaderLease,
        metrics: PublisherMetrics,
        consumer: str,
        *,
        renew_every: float,
        acquire_every: float,
        mono: Callable[[], float],
    ) -> None:
        self.lease = lease
        self.metrics = metrics
        self.consumer = consumer
        self.renew_every = renew_every
        self.acquire_every = acquire_every
        self.mono = mono
        self.leader = False
        self.ever_led = False
        self.next_renew_at = 0.0
        self.next_acquire_at = 0.0
        self.next_standby_report_at = 0.0
        self.standby_reported_holder: str | None = None

    @classmethod
    def for_settings(
        cls,
        lease: LeaderLease,
        metrics: PublisherMetrics,
        settings: PublisherSettings,
        mono: Callable[[], float],
    ) -> Leadership:
        lease_s = settings.lease_seconds
        return cls(
            lease,
            metrics,
            settings.consumer_name,
            renew_every=lease_s / 3.0,
            # A standby polls often (SET NX is cheap): it takes over well within lease +
            # interval.
            acquire_every=max(0.05, min(settings.health_interval, lease_s / 3.0) / 4.0),
            mono=mono,
        )

    def held(self) -> bool:
        return self.lease.held()

    def renew_soon(self) -> None:
        """Renew (or learn that the lease is gone) at the next step."""
        self.next_renew_at = 0.0

    async def step(self) -> LeaseStep:
        """Renew when due, or try to acquire when the lease is not ours."""
        now = self.mono()
        done = LeaseStep()
        if self.lease.held(now) and not await self.renew_if_due():
            done.renewal_refused = True
            log.warning("lease renewal refused: it expired or another publisher holds it")
        if not self.lease.held(now) and now >= self.next_acquire_at:
            self.next_acquire_at = now + self.acquire_every
            if await self.lease.acquire():
                self.next_renew_at = now + self.renew_every
                done.acquired = True
        return done

    async def renew_if_due(self) -> bool:
        """Renew the lease if its renewal is due; False when Redis refused it."""
        now = self.mono()
        if now < self.next_renew_at:
            return True
        self.next_renew_at = now + self.renew_every
        return await self.lease.renew()

    async def keep(self) -> None:
        """During long work (a replay): renew when due, and stop at once when refused."""
        if not await self.renew_if_due():
            raise NotLeader

    def idle_until_acquire(self) -> float:
        return max(0.0, self.next_acquire_at - self.mono())

    async def announce_standby(self) -> None:
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

    def taking_over(self) -> str:
        """Why we lead now, for the log line (whom we take over from, when we know)."""
        previous, self.standby_reported_holder = self.standby_reported_holder, None
        self.next_standby_report_at = 0.0
        if previous:
            return f"lease acquired: taking over from {previous}"
        return "lease acquired"

    def set(self, leader: bool, why: str, quiet: bool = False) -> bool:
        """Act as leader or not; True when that changed (logged and counted)."""
        if leader == self.leader:
            return False
        self.leader = leader
        self.metrics.leader.set(1 if leader else 0)
        self.metrics.leadership_changes.inc()
        if leader:
            self.ever_led = True
            log.info("leadership gained (%s); consumer=%s", why, self.consumer)
        elif not quiet:
            log.warning("leadership lost (%s); standing by", why)
        else:
            log.info("leadership left (%s)", why)
        return True
