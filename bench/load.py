"""One measurement: a scenario's load against one running system, summarised in one dict.

Ramp up to N streams, settle, read memory and Redis connections held, [storms:
every stream but the bystanders reopens at once, twice (`bench.storm`)], publish M
events at R/s, wait for every stream to have them (at most `drain_s`), then collect.
Every step has a deadline.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from bench.fleet import ClientFleet, LoadOptions, merge_counts
from bench.procstats import TreeStats, cpu_seconds, tree_stats
from bench.publisher import publish_series
from bench.scenarios import Scenario
from bench.stats import delivered_per_second, delivery_summary, latency_summary, percentile
from bench.storm import storms
from bench.systems import RunningSystem
from connectome_sse.localrun.redis_server import RedisServer

ProfileStart = Callable[[RunningSystem, float], Callable[[], dict[str, Any]]]


@dataclass(frozen=True)
class LoadRun:
    """One measurement's inputs: the scenario, the system under load, its Redis, the options."""

    scenario: Scenario
    system: RunningSystem
    redis_server: RedisServer
    opts: LoadOptions
    profile: ProfileStart | None = None


@dataclass
class Held:
    """The streams after the ramp and the warm-up, and what holding them costs."""

    ready: list[dict[str, Any]]  # each worker's "ready" message ({} for one that failed)
    ramp_s: float
    connected: int
    connect_s: list[float]
    idle: TreeStats  # the server before the ramp
    held: TreeStats  # the server holding the streams
    redis_clients: int
    live: set[int]  # the workers that hold streams


@contextlib.contextmanager
def held_streams(run: LoadRun) -> Iterator[tuple[ClientFleet, Held]]:
    """The scenario's client fleet holding its streams; its workers ended after the block
    (not waited for if the block failed)."""
    idle = tree_stats(run.system.pid)
    fleet = ClientFleet(run.scenario, run.system, run.opts)
    completed = False
    try:
        yield fleet, hold_streams(fleet, run.system, run.redis_server, idle)
        completed = True
    finally:
        fleet.close(completed)


def hold_streams(
    fleet: ClientFleet, system: RunningSystem, redis_server: RedisServer, idle: TreeStats
) -> Held:
    """Ramp the fleet up, let it settle, read what the server and Redis hold."""
    ready, ramp_s = fleet.ramp()
    time.sleep(fleet.opts.warmup_s)
    return Held(
        ready=ready,
        ramp_s=ramp_s,
        connected=sum(r.get("connected", 0) for r in ready),
        connect_s=sorted(x for r in ready for x in r.get("connect_s", ())),
        idle=idle,
        held=tree_stats(system.pid),
        redis_clients=redis_server.connected_clients(),
        live={i for i, r in enumerate(ready) if r.get("connected")},
    )


def held_summary(run: LoadRun, fleet: ClientFleet, held: Held) -> dict[str, Any]:
    """The figures every measurement has: who it measured and what the streams cost."""
    rss_kb, idle_kb = held.held.rss_kb, held.idle.rss_kb
    return {
        "scenario": run.scenario.name,
        "system": run.system.name,
        "clients": run.scenario.clients,
        "payload_bytes": run.scenario.payload_bytes,
        "client_procs": len(fleet.shares),
        "connected": held.connected,
        "connect_failures": merge_counts([r.get("failures", {}) for r in held.ready]),
        "ramp_s": round(held.ramp_s, 2),
        **_prefixed_ms(held.connect_s, "connect_ms"),
        "server_procs": len(held.held.pids),
        "server_rss_idle_mb": round(idle_kb / 1024, 1),
        "server_rss_mb": round(rss_kb / 1024, 1),
        "kb_per_conn": round((rss_kb - idle_kb) / held.connected, 1) if held.connected else None,
        "redis_connected_clients": held.redis_clients,
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


@dataclass
class Delivery:
    """The measured events published and delivered, and the CPU it took everyone."""

    pub: dict[str, Any]
    results: list[dict[str, Any]]
    t_end: float
    end: TreeStats
    server_cpu_s: float
    client_cpu_s: float
    redis_cpu_s: float
    profiled: dict[str, Any] | None


def publish_and_collect(run: LoadRun, fleet: ClientFleet, held: Held) -> Delivery:
    """Publish the scenario's events, wait for them everywhere (bounded), collect the results."""
    import uvloop

    scenario, system, redis_server = run.scenario, run.system, run.redis_server
    fleet.hub.inbox.pop("complete", None)
    srv_cpu0, cli_cpu0, redis_cpu0 = (
        tree_stats(system.pid).cpu_s,
        cpu_seconds(fleet.pids),
        redis_server.cpu_seconds(),
    )
    profile_done = run.profile(system, scenario.publish_s + 1.0) if run.profile else None
    pub = uvloop.run(
        publish_series(
            system.publisher(), fleet.run_id, scenario.events, scenario.rate, scenario.payload_bytes
        )
    )
    drain_left = pub["t_last"] + fleet.opts.drain_s - time.time()
    fleet.hub.wait_all("complete", max(0.0, drain_left), held.live)
    t_end = time.time()
    end = tree_stats(system.pid)
    cli_cpu1, redis_cpu1 = cpu_seconds(fleet.pids), redis_server.cpu_seconds()
    profiled = profile_done() if profile_done else None
    return Delivery(
        pub=pub,
        results=fleet.results(),
        t_end=t_end,
        end=end,
        server_cpu_s=end.cpu_s - srv_cpu0,
        client_cpu_s=cli_cpu1 - cli_cpu0,
        redis_cpu_s=redis_cpu1 - redis_cpu0,
        profiled=profiled,
    )


def measure(run: LoadRun) -> dict[str, Any]:
    """Ramp, [storm], publish the scenario's events, collect; the run's figures."""
    with held_streams(run) as (fleet, held):
        stormed: dict[str, Any] = {}
        if run.scenario.storm:  # a profile samples the storm, not the publishing
            stormed = storms(fleet, run.system, run.scenario, run.profile)
            held.connected = stormed["storm_reconnected"] + run.scenario.bystanders
            run = replace(run, profile=None)
        delivery = publish_and_collect(run, fleet, held)
    summary = {
        **held_summary(run, fleet, held),
        "events": run.scenario.events,
        "rate": run.scenario.rate,
        "server_pss_mb": round(held.held.pss_kb / 1024, 1),
        **stormed,
        **delivery_figures(run.scenario, delivery),
    }
    if delivery.profiled is not None:
        summary["profile"] = delivery.profiled
    return summary


def delivery_figures(scenario: Scenario, delivery: Delivery) -> dict[str, Any]:
    """What arrived, how late, and what it cost, over first publish .. last delivery."""
    pub, results = delivery.pub, delivery.results
    window = max(delivery.t_end - pub["t_first"], 1e-6)
    got = [g for r in results for g in r["got"]]
    delivered = sum(got)
    last_rx = max((r["last_rx"] for r in results), default=0.0)
    return {
        **{k: v for k, v in pub.items() if not k.startswith("t_")},
        "delivered": delivered,
        "delivered_per_s": delivered_per_second(delivered, pub["t_first"], last_rx, scenario.rate),
        **delivery_summary(got, pub["published"]),
        "dups": sum(r["dups"] for r in results),
        "reorders": sum(r["reorders"] for r in results),
        "dropped_streams": sum(r["dropped"] for r in results),
        "drop_reasons": merge_counts([r["drop_reasons"] for r in results]),
        "foreign_events": sum(r["foreign"] for r in results),
        "other_event_types": merge_counts([r["other_types"] for r in results]),
        "protocol_errors": merge_counts([r["protocol_errors"] for r in results]),
        **latency_summary((x for r in results for x in r["lat_kernel"]), "lat_ms"),
        **latency_summary((x for r in results for x in r["lat_app"]), "app_lat_ms"),
        "window_s": round(window, 2),
        "server_rss_end_mb": round(delivery.end.rss_kb / 1024, 1),
        "server_cpu_pct": round(100 * delivery.server_cpu_s / window, 1),
        "client_cpu_pct": round(100 * delivery.client_cpu_s / window, 1),
        "redis_cpu_pct": round(100 * delivery.redis_cpu_s / window, 1),
        "parse_cache_hit_pct": _hit_pct(results),
    }


def _prefixed_ms(sorted_seconds: list[float], prefix: str) -> dict[str, float | None]:
    return {
        f"{prefix}_p50": _ms(sorted_seconds, 0.5),
        f"{prefix}_p99": _ms(sorted_seconds, 0.99),
    }


def _ms(sorted_seconds: list[float], q: float) -> float | None:
    value = percentile(sorted_seconds, q)
    return None if value is None else round(value * 1e3, 1)


def _hit_pct(results: list[dict[str, Any]]) -> float | None:
    hits = sum(r["cache_hits"] for r in results)
    total = hits + sum(r["cache_misses"] for r in results)
    return round(100 * hits / total, 1) if total else None
