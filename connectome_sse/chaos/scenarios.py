"""Each fault, next to the limit it is held to.

``limits(settings, clients)`` builds each limit from a documented number or a
setting; recovery limits end with ``interval + MARGIN_S`` (one HEALTH_INTERVAL
until fresh health exists, plus delivery slack). ``inject(ctx)`` breaks the
topology and says where the recovery clock starts.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time

from connectome_core.contract import channel_for
from connectome_sse.chaos.scenario_kit import (
    MARGIN_S,
    Context,
    Injected,
    Limits,
    Scenario,
    probe_gap,
)
from connectome_sse.chaos.topology import Settings
from connectome_sse.localrun.redis_sentinel import DOWN_AFTER_MS, FAILOVER_TIMEOUT_MS
from connectome_sse.localrun.topology import SentinelTopology

# sse_gateway.redis_source and health_publisher.service: reconnect backoff capped at 5 s,
# commands (and connects) time out after 5 s, the watchdog PINGs a subscription silent
# for 5 s and gives up on it 5 s later.
BACKOFF_CAP_S = 5.0
COMMAND_TIMEOUT_S = 5.0
WATCHDOG_S = 10.0
# A subscription cut by Redis is retried at once (backoff base 0.1 s, jittered): one second.
RESUBSCRIBE_S = 1.0
# How long Redis stays down in "redis-kill" before it is restarted.
REDIS_DOWN_S = 1.0
# Redis's default, restored after "output-buffer" (redis.conf: pubsub 32mb 8mb 60).
DEFAULT_PUBSUB_LIMIT = "pubsub 33554432 8388608 60"
CUT_PUBSUB_LIMIT = "pubsub 1mb 512kb 1"
BULK_EVENT = "chaos_bulk"  # the burst's event type; clients do not select it
FILL_EVENT = "chaos_fill"  # large events the stuck clients' pipes fill with
# The reconnect storm's budget: 2 ms of one core per reconnecting client (nginx and a
# gateway both handle each), on top of the ordinary recovery limit.
STORM_MS_PER_CLIENT = 2.0


# --- Redis killed (kill -9) and restarted on the same port, its data kept (AOF) --------


def redis_kill_limits(s: Settings, clients: int) -> Limits:
    # Streams stay open while Redis is lost; gateway and publisher reconnect within one
    # capped backoff of the restart; then the next health event.
    return Limits(recovery_s=BACKOFF_CAP_S + s.interval_s + MARGIN_S, log_lost=0)


async def redis_kill(ctx: Context) -> Injected:
    await ctx.blocking(ctx.topology.redis.kill)
    await asyncio.sleep(REDIS_DOWN_S)
    await ctx.blocking(ctx.topology.redis.start)
    return Injected.now()


# --- Redis frozen (SIGSTOP) past the gateway's watchdog, then resumed ------------------


def redis_freeze_limits(s: Settings, clients: int) -> Limits:
    # After SIGCONT a process may be in a connect or a command that times out
    # (COMMAND_TIMEOUT_S), then in a capped backoff, then the next health event.
    return Limits(recovery_s=COMMAND_TIMEOUT_S + BACKOFF_CAP_S + s.interval_s + MARGIN_S)


async def redis_freeze(ctx: Context) -> Injected:
    redis = ctx.topology.redis
    redis.signal(signal.SIGSTOP)
    try:
        await asyncio.sleep(WATCHDOG_S + MARGIN_S)
    finally:
        redis.signal(signal.SIGCONT)
    return Injected.now(extra={"frozen_s": WATCHDOG_S + MARGIN_S})


# --- The gateways' subscriptions killed by Redis (CLIENT KILL TYPE pubsub) -------------


def client_kill_limits(s: Settings, clients: int) -> Limits:
    return Limits(recovery_s=RESUBSCRIBE_S + s.interval_s + MARGIN_S, log_lost=0)


async def client_kill(ctx: Context) -> Injected:
    killed_at = time.monotonic()
    async with ctx.redis() as client:
        killed = await client.client_kill_filter(_type="pubsub")
    excused = await probe_gap(ctx, killed_at)
    return Injected.now(extra={"subscriptions_killed": int(killed)}, excused=excused)


# --- Redis's pub/sub output-buffer limit cutting the gateways under a burst ------------


def output_buffer_limits(s: Settings, clients: int) -> Limits:
    # Redis discards what it had queued for a subscriber it cuts: events in the burst
    # window are excused; after it, nothing may be lost.
    return Limits(
        recovery_s=RESUBSCRIBE_S + s.interval_s + MARGIN_S,
        at_least={"output_buffer_cuts": 1},
        log_lost=0,
    )


BULK_BYTES = 100_000
BULK_BATCH = 50
BULK_MAX_S = 15.0
# redis-server's log line for each client it cuts (INFO has no counter before 7.2).
OBL_LOG_LINE = "overcoming of output buffer limits"


def _obl_cuts(ctx: Context) -> int:
    log = ctx.topology.redis.workdir / "redis.log"
    try:
        return log.read_text(errors="replace").count(OBL_LOG_LINE)
    except OSError:
        return 0


async def output_buffer(ctx: Context) -> Injected:
    body = json.dumps({"pad": "x" * BULK_BYTES})
    channel = channel_for(BULK_EVENT)
    before = _obl_cuts(ctx)
    async with ctx.redis() as client:
        await client.config_set("client-output-buffer-limit", CUT_PUBSUB_LIMIT)
        started = time.monotonic()
        sent = 0
        try:
            # Bursts until Redis has cut a subscriber (or gives up: the row then FAILs).
            while time.monotonic() - started < BULK_MAX_S and _obl_cuts(ctx) == before:
                async with client.pipeline(transaction=False) as pipe:
                    for _ in range(BULK_BATCH):
                        pipe.publish(channel, body)
                    await pipe.execute()
                sent += BULK_BATCH
        finally:
            await client.config_set("client-output-buffer-limit", DEFAULT_PUBSUB_LIMIT)
    await probe_gap(ctx, started)  # inside the burst's excused window below
    injected = Injected.now(
        extra={
            "output_buffer_cuts": _obl_cuts(ctx) - before,
            "burst_mib": (sent * BULK_BYTES) >> 20,
        }
    )
    injected.excused = ((started, injected.clock_mono + RESUBSCRIBE_S),)
    return injected


# --- A gateway killed (kill -9) behind nginx ---------------------------------------------


# The longest `retry` a client may be told to wait: the default ping interval. A
# client that stays blind longer after losing one replica is out longer than a quiet live
# stream ever is (pings say "alive" every 15 s); a larger SSE_RETRY_MS fails this scenario.
RETRY_CEILING_S = 15.0


def gateway_kill_limits(s: Settings, clients: int) -> Limits:
    # Its clients reconnect after `retry` through nginx to the other gateway; resume with
    # Last-Event-ID brings every missed event exactly once.
    retry = min(s.retry_s, RETRY_CEILING_S)
    return Limits(recovery_s=retry + s.interval_s + MARGIN_S, cut=None)


async def gateway_kill(ctx: Context) -> Injected:
    ctx.topology.expected_subscribers -= 1
    ctx.topology.gateways[0].kill_group()
    return Injected.now()


# --- The leading publisher killed (kill -9) ----------------------------------------------


def publisher_kill_limits(s: Settings, clients: int) -> Limits:
    # The standby takes over when the lease expires, then publishes within an interval.
    return Limits(recovery_s=s.lease_s + s.interval_s + MARGIN_S)


async def _leader(ctx: Context) -> int:
    async def found() -> int | None:
        index: int | None = await ctx.blocking(ctx.topology.leader)
        return index

    deadline = time.monotonic() + ctx.settings.lease_s + 5
    while (index := await found()) is None:
        if time.monotonic() > deadline:
            raise RuntimeError("no publisher holds the lease")
        await asyncio.sleep(0.1)
    return index


async def publisher_kill(ctx: Context) -> Injected:
    index = await _leader(ctx)
    ctx.topology.publishers[index].kill_group()
    return Injected.now(extra={"killed": f"publisher-{index}"})


# --- The leading publisher frozen (SIGSTOP) longer than its lease, then resumed ---------


def publisher_freeze_limits(s: Settings, clients: int) -> Limits:
    # As a kill for the takeover; after SIGCONT the old leader must not publish what it
    # computed before the freeze (stale: a ts older than one already published).
    return Limits(recovery_s=s.lease_s + s.interval_s + MARGIN_S)


async def publisher_freeze(ctx: Context) -> Injected:
    index = await _leader(ctx)
    publisher = ctx.topology.publishers[index]
    injected = Injected.now(extra={"frozen": f"publisher-{index}"})
    publisher.signal(signal.SIGSTOP)
    try:
        await asyncio.sleep(ctx.settings.lease_s + MARGIN_S)
    finally:
        publisher.signal(signal.SIGCONT)
    # Watch the resumed one for a few intervals: a stale publish would show now.
    await asyncio.sleep(3 * ctx.settings.interval_s)
    return injected


# --- 10 % of the clients stop reading --------------------------------------------------

FILL_BYTES = 32_000
FILL_RATE = 100  # events per second
FILL_S = 8.0


def slow_clients_limits(s: Settings, clients: int) -> Limits:
    # The readers see nothing of it: health keeps its cadence. The gateway's memory
    # stays bounded: at most SSE_CLIENT_BUFFER queued frames per stuck client.
    stuck = max(1, clients // 10)
    budget = s.gateway.client_buffer * FILL_BYTES * stuck / 2**20
    return Limits(recovery_s=s.interval_s + MARGIN_S, peak_rss_mib=budget + 64)


async def slow_clients(ctx: Context) -> Injected:
    stuck = list(range(max(1, len(ctx.clients) // 10)))
    for index in stuck:
        ctx.clients[index].pause()
        ctx.excluded.add(index)
    injected = Injected.now()
    body = json.dumps({"pad": "y" * FILL_BYTES})
    async with ctx.redis() as client:
        deadline = time.monotonic() + FILL_S
        while time.monotonic() < deadline:
            await client.publish(channel_for(FILL_EVENT), body)
            await asyncio.sleep(1 / FILL_RATE)
    cut = sum(1 for i in stuck if any(c.ended_at is not None for c in ctx.clients[i].connections))
    injected.extra.update({"stuck": len(stuck), "stuck_cut": cut})
    return injected


# --- Every client reconnects at once ----------------------------------------------------

STORM_CLIENTS = 5000


def storm_limits(s: Settings, clients: int) -> Limits:
    return Limits(
        recovery_s=s.interval_s + MARGIN_S + clients * STORM_MS_PER_CLIENT / 1000, cut=None
    )


async def storm(ctx: Context) -> Injected:
    injected = Injected.now()
    for client in ctx.clients:
        client.drop(reconnect_at_once=True)
    return injected


# --- Sentinel failover: the master kill -9, the old one back as a replica --------------

# After the sentinels' switch, health events resume within 5 s (a documented bound), from
# whichever publisher leads, with no process restarted.
SWITCH_TO_HEALTH_S = 5.0
# Waiting for the sentinels to agree on the new master, then for the old one to rejoin.
FAILOVER_WAIT_S = 30.0


def sentinel_failover_limits(s: Settings, clients: int) -> Limits:
    # kill -> switch: the sentinels call the master down after down-after-milliseconds and
    # promote the replica within failover-timeout (the Sentinel topology's own settings).
    # switch -> fresh health at every client: the documented 5 s, or one HEALTH_INTERVAL when
    # that is longer (fresh health cannot come sooner than the next one). Inside the 5 s:
    # the gateways ask the sentinels every 0.25 s while reconnecting and check a live
    # subscription's server every 2 s; the leader reconnects within its 1 s backoff cap and
    # keeps its replicated lease, else the standby takes over. Then MARGIN_S.
    #
    # Lost stays 0, honestly: an event is owed only when the PUBLISH answer said every
    # gateway received it (feed.Published.owed), on the old master before the kill or on
    # the new one after both gateways resubscribed there. A publish while no master takes
    # writes fails, and one on the new master before both gateways are back reaches fewer
    # than both: pub/sub keeps nothing, so neither is owed (the snapshot re-sent on
    # resubscribe covers the gap). Asynchronous replication may drop the last writes before
    # the kill (snapshot keys, signal entries), which the clients would see as a stale or
    # repeated snapshot: that is counted, and stale/dups must stay 0 too.
    down_after_s = DOWN_AFTER_MS / 1000
    failover_s = FAILOVER_TIMEOUT_MS / 1000
    recovery = down_after_s + failover_s + max(SWITCH_TO_HEALTH_S, s.interval_s) + MARGIN_S
    return Limits(recovery_s=recovery, log_silent=None)  # a write Redis lost: log_dropped


async def sentinel_failover(ctx: Context) -> Injected:
    topology = ctx.topology
    if not isinstance(topology, SentinelTopology):
        raise TypeError("sentinel-failover runs on the Sentinel topology")
    cluster = topology.cluster
    first_seq = ctx.feed.last_seq + 1
    injected = Injected.now()
    old = await ctx.blocking(cluster.kill_master)
    new = await ctx.blocking(cluster.wait_failover, FAILOVER_WAIT_S)
    switched = time.monotonic()
    # The old master comes back at once: the sentinels make it a replica of the new one,
    # and no client may notice (it is inside the measured window).
    await ctx.blocking(cluster.restart_old_master, FAILOVER_WAIT_S)
    if await ctx.blocking(cluster.master) is not new:
        raise RuntimeError("a second failover: the sentinels moved the master again")
    injected.extra.update(
        {
            "killed": old.workdir.name,
            "new_master": new.workdir.name,
            "switch_s": round(switched - injected.clock_mono, 2),
            "rejoined_s": round(time.monotonic() - injected.clock_mono, 2),
        }
    )
    # What the failover cost the feed (not owed to clients, see the limits): publishes
    # refused while no master took writes, and ones that reached fewer than both gateways.
    records = ctx.feed.since(first_seq)
    injected.extra["publish_failed"] = sum(1 for r in records if r.receivers is None)
    injected.extra["publish_partial"] = sum(
        1 for r in records if r.receivers is not None and not r.owed
    )
    return injected


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("redis-kill", "Redis kill -9, restarted (AOF)", redis_kill_limits, redis_kill),
        Scenario(
            "redis-freeze",
            f"Redis SIGSTOP {WATCHDOG_S + MARGIN_S:g} s (past the watchdog), SIGCONT",
            redis_freeze_limits,
            redis_freeze,
        ),
        Scenario(
            "client-kill",
            "CLIENT KILL TYPE pubsub (every subscription)",
            client_kill_limits,
            client_kill,
        ),
        Scenario(
            "output-buffer",
            f'client-output-buffer-limit "{CUT_PUBSUB_LIMIT}" + burst of 100 kB events',
            output_buffer_limits,
            output_buffer,
        ),
        Scenario(
            "sentinel-failover",
            "Sentinel: master kill -9, failover, old master back as replica",
            sentinel_failover_limits,
            sentinel_failover,
            sentinel=True,
        ),
        Scenario(
            "gateway-kill", "a gateway kill -9 behind nginx", gateway_kill_limits, gateway_kill
        ),
        Scenario(
            "publisher-kill", "the leading publisher kill -9", publisher_kill_limits, publisher_kill
        ),
        Scenario(
            "publisher-freeze",
            "the leading publisher SIGSTOP past its lease, SIGCONT",
            publisher_freeze_limits,
            publisher_freeze,
        ),
        Scenario(
            "slow-clients",
            f"10 % of clients stop reading; {FILL_RATE}/s events of {FILL_BYTES // 1000} kB",
            slow_clients_limits,
            slow_clients,
        ),
        Scenario(
            "storm",
            "every client reconnects at once",
            storm_limits,
            storm,
            clients=STORM_CLIENTS,
            feed_rate=1.0,
        ),
    )
}
