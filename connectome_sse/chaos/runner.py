"""Playing the scenarios on one topology: clients up, fault, measure, restore.

Each scenario gets fresh browser-like clients; one that cannot even start is a
FAIL row with its reason, and the run goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from connectome_core.tokens import TokenVerifier
from connectome_sse.chaos.feed import RAW_EVENT, SEQ_EVENT, HealthWatch, SeqFeed
from connectome_sse.chaos.figures import Figures, Window, measure
from connectome_sse.chaos.rss import rss_mib
from connectome_sse.chaos.scenario_kit import (
    FEED_RATE,
    STREAM_PATH,
    Context,
    Injected,
    Limits,
    Scenario,
)
from connectome_sse.chaos.scenarios import redis_kill, redis_kill_limits
from connectome_sse.chaos.topology import Settings
from connectome_sse.localrun.browser import BrowserClient, ClientFleet
from connectome_sse.localrun.topology import Topology

READY_S = 60.0  # every client connected, with health and a numbered event
# After the last client has fresh health: watch this long for later gaps and stale health.
TAIL_INTERVALS = 3
# Past the recovery limit, keep waiting this long (or as long again as the limit) so the
# figure says by how much it missed.
OVERRUN_S = 10.0
SETTLE_S = 5.0  # numbered events in flight reach the clients
# A token that outlives any run (its expiry would end the streams, which is not a fault).
TOKEN_TTL_S = 24 * 3600


@dataclass
class Row:
    name: str
    fault: str
    limits: Limits
    figures: Figures = field(default_factory=Figures)
    verdict: str = "FAIL"  # PASS or FAIL
    reasons: list[str] = field(default_factory=list)


def verdict(limits: Limits, figures: Figures) -> list[str]:
    """Why the figures miss the limits; empty when they hold."""
    reasons = []
    if limits.recovery_s is not None:
        if figures.recovery_s is None:
            reasons.append(f"recovery never: {figures.never_back} clients without fresh health")
        elif figures.recovery_s > limits.recovery_s:
            reasons.append(f"recovery {figures.recovery_s:g} s > {limits.recovery_s:g} s")
    for name in (
        *("lost", "duplicates", "reordered", "never_back", "stale", "cut"),
        *("log_lost", "log_silent", "log_duplicates", "log_reordered"),
    ):
        limit, value = getattr(limits, name), getattr(figures, name)
        if limit is not None and value > limit:
            reasons.append(f"{name} {value} > {limit}")
    if limits.peak_rss_mib is not None and figures.peak_rss_mib > limits.peak_rss_mib:
        reasons.append(f"peak RSS {figures.peak_rss_mib:.0f} MiB > {limits.peak_rss_mib:.0f} MiB")
    growth = figures.extra.get("rss_growth_mib")
    if (
        limits.rss_growth_mib is not None
        and isinstance(growth, int | float)
        and growth > limits.rss_growth_mib
    ):
        reasons.append(f"RSS grew {growth:g} MiB > {limits.rss_growth_mib:g} MiB")
    for name, least in limits.at_least.items():
        value = figures.extra.get(name, 0)
        if not isinstance(value, int | float) or value < least:
            reasons.append(f"{name} {value} < {least:g} (the fault did not happen)")
    return reasons


async def _poll(predicate: Callable[[], bool], deadline: float) -> None:
    """Until ``predicate`` holds or the deadline passes (then the figures tell how it went)."""
    # The clients' records change in this loop's own tasks: nothing to wait on but time.
    while not predicate() and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.1)


def stream_headers(settings: Settings) -> dict[str, str]:
    """A bearer token for the clients when the gateways require one (SSE_AUTH_SECRET set)."""
    secret = settings.gateway.auth_secret
    if not secret:
        return {}
    token = TokenVerifier(secret.encode()).mint(ttl=TOKEN_TTL_S, sub="connectome-sse-chaos")
    return {"Authorization": f"Bearer {token}"}


class RssSampler:
    """The largest gateway RSS (MiB) seen while it runs."""

    def __init__(self, pids: Callable[[], Sequence[int]]) -> None:
        self.pids = pids
        self.peak = 0.0
        self.last = 0.0

    def sample(self) -> float:
        self.last = max((rss_mib(pid) for pid in self.pids()), default=0.0)
        self.peak = max(self.peak, self.last)
        return self.last

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(0.25)


class Runner:
    def __init__(self, topology: Topology, settings: Settings, clients: int) -> None:
        self.topology = topology
        self.settings = settings
        self.clients = clients
        self.feed = SeqFeed(topology.redis_url, lambda: topology.expected_subscribers)
        self.watch = HealthWatch(topology.redis_url)
        self._background: list[asyncio.Task[None]] = []
        self.headers = stream_headers(settings)

    async def __aenter__(self) -> Runner:
        self._background = [
            asyncio.create_task(self.feed.run()),
            asyncio.create_task(self.watch.run()),
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.feed.close()

    def _fleet(self, count: int) -> ClientFleet:
        # Browsers come from many addresses: spread the clients so the gateways' limit of
        # streams per client address (SSE_MAX_STREAMS_PER_CLIENT) sees distinct browsers.
        limit = int(getattr(self.settings.gateway, "max_streams_per_client", 0))
        per_source = min(100, limit) if limit > 0 else 100  # 0: no limit
        return ClientFleet(
            "127.0.0.1",
            self.topology.port,
            STREAM_PATH,
            count,
            resume=True,
            seq_event=SEQ_EVENT,
            more_seq_events=(RAW_EVENT,),
            per_source=per_source,
            headers=self.headers,
        )

    async def _ready(self, clients: Sequence[BrowserClient], timeout: float) -> str:
        """Empty when every client holds a stream with health and a numbered event of
        each sequence (a raw one is always live: its loss is counted from there)."""

        def ready(client: BrowserClient) -> bool:
            last = client.last
            return (
                last is not None
                and last.ended_at is None
                and bool(last.seqs and last.health and last.more_seqs.get(RAW_EVENT))
            )

        deadline = time.monotonic() + timeout
        while not all(ready(c) for c in clients):
            if time.monotonic() > deadline:
                waiting = sum(1 for c in clients if not ready(c))
                try:
                    self.topology.check_running()
                except RuntimeError as exc:
                    return f"{waiting} of {len(clients)} clients not streaming: {exc}"
                return f"{waiting} of {len(clients)} clients not streaming after {timeout:g} s"
            await asyncio.sleep(0.1)
        return ""

    async def play(self, scenario: Scenario) -> Row:
        count = scenario.clients or self.clients
        fault = scenario.fault if scenario.clients is None else f"{scenario.fault} ({count})"
        row = Row(scenario.name, fault, scenario.limits(self.settings, count))

        async def body(ctx: Context, rss: RssSampler) -> None:
            ctx.rss_baseline_mib = rss.sample()
            row.figures = await self._measure(scenario, ctx, row.limits, rss)

        return await self._run(row, count, READY_S + count / 100, scenario.feed_rate, body)

    async def _run(
        self,
        row: Row,
        count: int,
        ready_timeout: float,
        feed_rate: float,
        body: Callable[[Context, RssSampler], Awaitable[None]],
    ) -> Row:
        """What every scenario shares: ``count`` clients streaming at ``feed_rate`` events/s,
        the gateways' RSS sampled, ``body`` (which fills ``row.figures`` and may set
        ``row.limits``), the verdict, and the topology restored, whatever happened."""
        self.feed.rate = feed_rate
        fleet = self._fleet(count)
        rss = RssSampler(self.topology.gateway_pids)
        fleet.start()
        sampler = asyncio.create_task(rss.run())
        try:
            problem = await self._ready(fleet.clients, ready_timeout)
            if problem:
                row.reasons = [problem]
                return row
            ctx = Context(self.topology, self.settings, fleet.clients, self.feed, self.watch)
            await body(ctx, rss)
            row.reasons = verdict(row.limits, row.figures)
            crashed = fleet.crashed()
            if crashed:
                row.reasons.append(f"client task crashed: {crashed[0]!r}")
            row.verdict = "FAIL" if row.reasons else "PASS"
            return row
        except Exception as exc:  # a scenario that breaks is a FAIL row, never a lost run
            row.reasons.append(f"{type(exc).__name__}: {exc}")
            return row
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            await fleet.stop()
            try:
                await asyncio.to_thread(self.topology.restore)
            except Exception as exc:
                row.verdict = "FAIL"
                row.reasons.append(f"topology not restored: {exc}")

    async def _measure(
        self, scenario: Scenario, ctx: Context, limits: Limits, rss: RssSampler
    ) -> Figures:
        started = time.monotonic()
        first_seq = self.feed.last_seq + 1
        injected = await scenario.inject(ctx)
        counted = [c for i, c in enumerate(ctx.clients) if i not in ctx.excluded]
        limit = limits.recovery_s or 30.0
        budget = limit + max(OVERRUN_S, limit)
        await self._until_fresh(counted, injected, injected.clock_mono + budget)
        await asyncio.sleep(TAIL_INTERVALS * self.settings.interval_s)
        last_seq = self.feed.last_seq
        await self._until_seq(counted, last_seq, time.monotonic() + SETTLE_S)
        window = Window(
            started=started,
            clock_mono=injected.clock_mono,
            clock_wall=injected.clock_wall,
            observed_until=time.monotonic(),
            first_seq=first_seq,
            last_seq=last_seq,
            excused=injected.excused,
        )
        figures = measure(
            counted,
            self.feed.since(first_seq),
            window,
            self.watch.backwards(started),
            raw_records=self.feed.raw_since(first_seq),
        )
        figures.peak_rss_mib = round(rss.peak, 1)
        figures.extra.update(injected.extra)
        dropped = await self.feed.dropped_from_log(first_seq, last_seq)
        figures.extra["log_dropped"] = "unknown" if dropped is None else dropped
        return figures

    async def _until_fresh(
        self, clients: Sequence[BrowserClient], injected: Injected, deadline: float
    ) -> None:
        def fresh(client: BrowserClient) -> bool:
            return any(
                at >= injected.clock_mono and ts >= injected.clock_wall
                for connection in client.connections
                for at, ts in connection.health
            )

        await _poll(lambda: all(fresh(c) for c in clients), deadline)

    async def _until_seq(self, clients: Sequence[BrowserClient], seq: int, deadline: float) -> None:
        def has(client: BrowserClient) -> bool:
            return any(
                seq in c.seqs[-50:] or (c.seqs and c.seqs[-1] > seq) for c in client.connections
            )

        await _poll(lambda: all(has(c) for c in clients), deadline)

    async def soak(self, seconds: float) -> Row:
        """``seconds`` of steady load with one Redis restart halfway; RSS at start, middle, end."""
        fault = f"{seconds / 60:g} min of load, one Redis restart halfway"
        base = redis_kill_limits(self.settings, self.clients)
        row = Row("soak", fault, base)

        async def body(ctx: Context, rss: RssSampler) -> None:
            started = time.monotonic()
            first_seq = self.feed.last_seq + 1
            start_rss = rss.sample()
            await asyncio.sleep(seconds / 2)
            middle_rss = rss.sample()
            injected = await redis_kill(ctx)
            await asyncio.sleep(max(0.0, started + seconds - time.monotonic()))
            end_rss = rss.sample()
            last_seq = self.feed.last_seq
            await self._until_seq(ctx.clients, last_seq, time.monotonic() + SETTLE_S)
            window = Window(
                started, injected.clock_mono, injected.clock_wall, time.monotonic(),
                first_seq, last_seq,
            )  # fmt: skip
            row.figures = measure(
                ctx.clients,
                self.feed.since(first_seq),
                window,
                self.watch.backwards(started),
                raw_records=self.feed.raw_since(first_seq),
            )
            row.figures.peak_rss_mib = round(rss.peak, 1)
            row.figures.extra.update(
                {
                    "rss_start_mib": round(start_rss, 1),
                    "rss_middle_mib": round(middle_rss, 1),
                    "rss_end_mib": round(end_rss, 1),
                    "rss_growth_mib": round(end_rss - middle_rss, 1),
                }
            )
            # Memory must not keep growing: the second half may add at most 10 % (16 MiB
            # at least) to what the first half reached.
            row.limits = Limits(
                recovery_s=base.recovery_s, rss_growth_mib=round(max(16.0, middle_rss * 0.1), 1)
            )

        # The scenarios' standard feed rate: the soak must not inherit the last
        # scenario's (the storm's is 1 event/s).
        return await self._run(row, self.clients, READY_S, FEED_RATE, body)
