"""What a chaos scenario is made of: its limits, its context, what its fault reports."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from connectome_sse.chaos.feed import HealthWatch, SeqFeed, redis_client
from connectome_sse.chaos.topology import Settings
from connectome_sse.localrun.browser import BrowserClient
from connectome_sse.localrun.topology import Topology

MARGIN_S = 2.0
FEED_RATE = 10.0  # numbered events per second during a scenario, unless it says otherwise
# Clients take health, the numbered events (logged and raw) and the fill events; never
# the bulk burst.
STREAM_PATH = "/api/sse?events=connectome_health,chaos_seq,chaos_raw,chaos_fill"


@dataclass(frozen=True)
class Limits:
    """The most each figure may be; None: not held to a limit in this scenario."""

    recovery_s: float | None = None
    lost: int | None = 0
    duplicates: int | None = 0
    reordered: int | None = 0
    never_back: int | None = 0
    stale: int | None = 0
    cut: int | None = 0
    peak_rss_mib: float | None = None
    # Growth of the gateways' RSS over the second half of the soak.
    rss_growth_mib: float | None = None
    # The logged sequence's figures (figures.log_and_raw); None: reported, not held. A
    # loss may be excused where Redis itself lost the write (a failover); a silent one,
    # a repeat or a reordering never.
    log_lost: int | None = None
    log_silent: int | None = 0
    log_duplicates: int | None = 0
    log_reordered: int | None = 0
    # Scenario-specific figures that must hold (name -> least value).
    at_least: dict[str, float] = field(default_factory=dict)


@dataclass
class Injected:
    """What ``inject`` reports: where the recovery clock starts, what the figures exclude."""

    clock_mono: float
    clock_wall: float
    excused: tuple[tuple[float, float], ...] = ()
    extra: dict[str, float | int | str] = field(default_factory=dict)

    @classmethod
    def now(cls, **kwargs: Any) -> Injected:
        return cls(time.monotonic(), time.time(), **kwargs)


@dataclass
class Context:
    """What a scenario may touch."""

    topology: Topology
    settings: Settings
    clients: list[BrowserClient]
    feed: SeqFeed
    watch: HealthWatch
    # Clients left out of the figures (the stuck ones of "slow-clients").
    excluded: set[int] = field(default_factory=set)
    rss_baseline_mib: float = 0.0

    async def blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking step (a process start, a wait) without stalling the clients."""
        return await asyncio.to_thread(fn, *args)

    def redis(self) -> aioredis.Redis:
        return redis_client(self.topology.redis_url, 5.0)


async def probe_gap(ctx: Context, cut_at: float) -> tuple[tuple[float, float], ...]:
    """Numbered events right after a cut (``feed.probe_gap``): what the log must fill.

    Returns the window from ``cut_at`` to the last of them, for the pub/sub figure to
    excuse: Redis may still count a subscription it is closing among a PUBLISH's
    receivers (seen after CLIENT KILL), so "every gateway received it" is not proof there.
    """
    await ctx.feed.probe_gap()
    return ((cut_at, time.monotonic()),)


Inject = Callable[[Context], Awaitable[Injected]]
LimitsFor = Callable[[Settings, int], Limits]


@dataclass(frozen=True)
class Scenario:
    name: str
    fault: str
    limits: LimitsFor
    inject: Inject
    clients: int | None = None  # None: --clients
    feed_rate: float = FEED_RATE
    # Runs on the Sentinel topology (master, replica, three sentinels), not the plain one.
    sentinel: bool = False
