"""One measurement: a scenario's load against one running system, summarised in one dict.

Sequence (every step has a deadline, so a stuck system costs bounded time):
ramp the client workers up to N streams -> settle `warmup_s` -> read server
memory and Redis `connected_clients` (connections held) -> [storm: every
stream closes and reopens at once] -> publish M events at R/s, reading CPU
over first publish .. last delivery -> wait for every stream to have every
event, at most `drain_s` after the last publish -> collect raw measurements.

The ceiling (scenario g, `measure_ceiling`) ramps once, then publishes step
after step at a rising rate on the same streams, each step a measurement of
its own, until a step's fan-out p99 passes the scenario's bound or an event
is lost.

Each client worker process connects from its own loopback address
(127.0.0.1, .2, ...): one source address has about 28,000 ephemeral ports
towards the server's port, fewer than scenario f's 50,000 streams.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe
from multiprocessing.connection import wait as wait_pipes
from typing import Any

from bench.bootstrap import say as bootstrap_say
from bench.client import WorkerConfig, worker_main
from bench.procstats import cpu_seconds, tree_stats
from bench.publisher import publish_series
from bench.scenarios import Scenario
from bench.stats import delivered_per_second, delivery_summary, latency_summary, percentile
from bench.systems import RunningSystem
from connectome_sse.localrun.redis_server import RedisServer

ProfileStart = Callable[[RunningSystem, float], Callable[[], dict[str, Any]]]


@dataclass(frozen=True)
class LoadOptions:
    warmup_s: float = 2.0
    drain_s: float = 20.0
    streams_per_process: int = 8000  # below the 20,000 open-file limit of one process
    ramp_concurrency: int = 200  # connects in flight per worker process
    connect_timeout_s: float = 15.0
    storm_timeout_s: float = 60.0
    event_type: str = "connectome_health"


class WorkerHub:
    """The parent's side of the worker pipes: messages kept by kind until asked for."""

    def __init__(self, pipes: list[Pipe]) -> None:
        self.pipes = pipes
        self.inbox: dict[str, dict[int, Any]] = {}
        self.gone: set[int] = set()

    def send_all(self, message: tuple[str, Any]) -> None:
        for i, pipe in enumerate(self.pipes):
            if i not in self.gone:
                try:
                    pipe.send(message)
                except OSError:
                    self.gone.add(i)

    def wait_all(self, kind: str, timeout_s: float, among: set[int] | None = None) -> list[Any]:
        """Each worker's latest `kind` message (None for a worker that died or was late)."""
        box = self.inbox.setdefault(kind, {})
        wanted = set(range(len(self.pipes))) if among is None else among
        deadline = time.monotonic() + timeout_s
        while True:
            pending = [i for i in wanted if i not in box and i not in self.gone]
            left = deadline - time.monotonic()
            if not pending or left <= 0:
                break
            for pipe in wait_pipes([self.pipes[i] for i in pending], left):
                i = self.pipes.index(pipe)  # type: ignore[arg-type]
                try:
                    got_kind, body = self.pipes[i].recv()
                except (EOFError, OSError):
                    self.gone.add(i)
                    continue
                self.inbox.setdefault(got_kind, {})[i] = body
        return [box.get(i) for i in range(len(self.pipes))]


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if k < total % parts else 0) for k in range(parts)]


def _merge_counts(tables: list[dict[str, int]]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for table in tables:
        for key, value in table.items():
            merged[key] = merged.get(key, 0) + value
    return merged


class ClientFleet:
    """The load client's worker processes, their pipes and their ramp."""

    def __init__(self, scenario: Scenario, system: RunningSystem, opts: LoadOptions) -> None:
        self.run_id = secrets.token_hex(4)
        per_process = scenario.streams_per_process or opts.streams_per_process
        self.shares = _split(scenario.clients, max(1, math.ceil(scenario.clients / per_process)))
        self.opts = opts
        self.workers: list[Any] = []
        self.pipes: list[Pipe] = []
        ctx = mp.get_context("fork")
        for k, n in enumerate(self.shares):
            cfg = WorkerConfig(
                host="127.0.0.1",
                port=system.port,
                path=system.sse_path,
                clients=n,
                expected=scenario.events,
                run_id=self.run_id,
                event_type=opts.event_type,
                ramp_concurrency=opts.ramp_concurrency,
                connect_timeout_s=opts.connect_timeout_s,
                storm_timeout_s=opts.storm_timeout_s,
                max_life_s=900.0,
                source=f"127.0.0.{1 + k}",
                headers=system.headers,
            )
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(cfg, theirs), daemon=True)
            proc.start()
            theirs.close()  # so a dead worker reads as EOF here
            self.workers.append(proc)
            self.pipes.append(ours)
        self.hub = WorkerHub(self.pipes)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.workers]

    def ramp(self) -> tuple[list[dict[str, Any]], float]:
        """Each worker's "ready" message ({} for one that failed) and the ramp's seconds."""
        t_ramp = time.time()
        opts = self.opts
        limit = 30 + max(self.shares) / opts.ramp_concurrency * opts.connect_timeout_s
        ready = [r or {} for r in self.hub.wait_all("ready", min(600.0, limit))]
        return ready, time.time() - t_ramp

    def results(self) -> list[dict[str, Any]]:
        self.hub.send_all(("stop", None))
        return [r for r in self.hub.wait_all("result", 120) if r]

    def close(self, completed: bool) -> None:
        for proc in self.workers:
            proc.join(5 if completed else 0.1)  # interrupted: do not wait for them
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        for pipe in self.pipes:
            pipe.close()


def measure(
    scenario: Scenario,
    system: RunningSystem,
    redis_server: RedisServer,
    opts: LoadOptions,
    profile: ProfileStart | None = None,
) -> dict[str, Any]:
    import uvloop

    idle = tree_stats(system.pid)
    completed = False
    fleet = ClientFleet(scenario, system, opts)
    run_id, procs, hub = fleet.run_id, len(fleet.shares), fleet.hub
    try:
        worker_pids = fleet.pids

        ready, ramp_s = fleet.ramp()
        connected = sum(r.get("connected", 0) for r in ready)
        connect_s = sorted(x for r in ready for x in r.get("connect_s", ()))
        time.sleep(opts.warmup_s)
        held = tree_stats(system.pid)
        redis_clients = redis_server.connected_clients()

        storm: dict[str, Any] = {}
        if scenario.storm:
            hub.send_all(("storm", time.time() + 0.5))
            storms = [s or {} for s in hub.wait_all("storm", opts.storm_timeout_s + 30)]
            back = sorted(x for s in storms for x in s.get("back_s", ()))
            closed = sum(s.get("closed", 0) for s in storms)
            reconnected = sum(s.get("reconnected", 0) for s in storms)
            storm = {
                "storm_closed": closed,
                "storm_reconnected": reconnected,
                "storm_s": round(back[-1], 2) if back and reconnected == closed else None,
                "storm_p50_s": _round(percentile(back, 0.5), 3),
                "storm_p99_s": _round(percentile(back, 0.99), 3),
                "storm_attempts": sum(s.get("attempts", 0) for s in storms),
                "storm_failures": _merge_counts([s.get("failures", {}) for s in storms]),
            }
            connected = reconnected
            time.sleep(opts.warmup_s)

        live = {i for i, r in enumerate(ready) if r.get("connected")}
        hub.inbox.pop("complete", None)
        srv_cpu0, cli_cpu0, redis_cpu0 = (
            tree_stats(system.pid).cpu_s,
            cpu_seconds(worker_pids),
            redis_server.cpu_seconds(),
        )
        profile_done = profile(system, scenario.publish_s + 1.0) if profile else None
        pub = uvloop.run(
            publish_series(
                system.publisher(), run_id, scenario.events, scenario.rate, scenario.payload_bytes
            )
        )
        hub.wait_all("complete", max(0.0, pub["t_last"] + opts.drain_s - time.time()), live)
        t_end = time.time()
        end = tree_stats(system.pid)
        cli_cpu1, redis_cpu1 = cpu_seconds(worker_pids), redis_server.cpu_seconds()
        profiled = profile_done() if profile_done else None
        results = fleet.results()
        completed = True
    finally:
        fleet.close(completed)

    published = pub["published"]
    window = max(t_end - pub["t_first"], 1e-6)
    got = [g for r in results for g in r["got"]]
    delivered = sum(got)
    last_rx = max((r["last_rx"] for r in results), default=0.0)
    summary: dict[str, Any] = {
        "scenario": scenario.name,
        "system": system.name,
        "clients": scenario.clients,
        "events": scenario.events,
        "rate": scenario.rate,
        "payload_bytes": scenario.payload_bytes,
        "client_procs": procs,
        "connected": connected,
        "connect_failures": _merge_counts([r.get("failures", {}) for r in ready]),
        "ramp_s": round(ramp_s, 2),
        **_prefixed_ms(connect_s, "connect_ms"),
        **storm,
        **{k: v for k, v in pub.items() if not k.startswith("t_")},
        "delivered": delivered,
        "delivered_per_s": delivered_per_second(delivered, pub["t_first"], last_rx, scenario.rate),
        **delivery_summary(got, published),
        "dups": sum(r["dups"] for r in results),
        "reorders": sum(r["reorders"] for r in results),
        "dropped_streams": sum(r["dropped"] for r in results),
        "drop_reasons": _merge_counts([r["drop_reasons"] for r in results]),
        "foreign_events": sum(r["foreign"] for r in results),
        "other_event_types": _merge_counts([r["other_types"] for r in results]),
        "protocol_errors": _merge_counts([r["protocol_errors"] for r in results]),
        **latency_summary((x for r in results for x in r["lat_kernel"]), "lat_ms"),
        **latency_summary((x for r in results for x in r["lat_app"]), "app_lat_ms"),
        "window_s": round(window, 2),
        "server_procs": len(held.pids),
        "server_rss_idle_mb": round(idle.rss_kb / 1024, 1),
        "server_rss_mb": round(held.rss_kb / 1024, 1),
        "server_pss_mb": round(held.pss_kb / 1024, 1),
        "server_rss_end_mb": round(end.rss_kb / 1024, 1),
        "kb_per_conn": round((held.rss_kb - idle.rss_kb) / connected, 1) if connected else None,
        "server_cpu_pct": round(100 * (end.cpu_s - srv_cpu0) / window, 1),
        "client_cpu_pct": round(100 * (cli_cpu1 - cli_cpu0) / window, 1),
        "redis_cpu_pct": round(100 * (redis_cpu1 - redis_cpu0) / window, 1),
        "redis_connected_clients": redis_clients,
        "parse_cache_hit_pct": _hit_pct(results),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }
    if profiled is not None:
        summary["profile"] = profiled
    return summary


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


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


def measure_ceiling(
    scenario: Scenario,
    system: RunningSystem,
    redis_server: RedisServer,
    opts: LoadOptions,
    profile: ProfileStart | None = None,
) -> dict[str, Any]:
    """Scenario g: step the rate up on the same streams until p99 or loss says stop.

    Each step is measured like a scenario of its own (`step_summary`); the
    result's main figures are those of the fastest step that passed (p99 within
    `scenario.ceiling_p99_ms`, nothing lost, the publisher on schedule).
    """
    import uvloop

    idle = tree_stats(system.pid)
    completed = False
    fleet = ClientFleet(scenario, system, opts)
    hub = fleet.hub
    steps: list[dict[str, Any]] = []
    stop_reason = "every step passed"
    try:
        ready, ramp_s = fleet.ramp()
        connected = sum(r.get("connected", 0) for r in ready)
        connect_s = sorted(x for r in ready for x in r.get("connect_s", ()))
        time.sleep(opts.warmup_s)
        held = tree_stats(system.pid)
        redis_clients = redis_server.connected_clients()
        live = {i for i, r in enumerate(ready) if r.get("connected")}
        for rate in scenario.ceiling_rates:
            events = max(10, round(rate * scenario.step_s))
            run_id = secrets.token_hex(4)
            for kind in ("measuring", "report"):
                hub.inbox.pop(kind, None)
            hub.send_all(("measure", (run_id, events)))
            hub.wait_all("measuring", 30)
            hub.inbox.pop("complete", None)  # a late one of the step before came ahead of it
            srv_cpu0, cli_cpu0 = tree_stats(system.pid).cpu_s, cpu_seconds(fleet.pids)
            publish_s = events / rate
            profile_done = profile(system, publish_s + 1.0) if profile else None
            pub = uvloop.run(
                publish_series(system.publisher(), run_id, events, rate, scenario.payload_bytes)
            )
            drain_left = pub["t_last"] + scenario.step_drain_s - time.time()
            hub.wait_all("complete", max(0.0, drain_left), live)
            t_end = time.time()
            srv_cpu1, cli_cpu1 = tree_stats(system.pid).cpu_s, cpu_seconds(fleet.pids)
            hub.send_all(("report", None))
            reports = [r for r in hub.wait_all("report", 60) if r]
            step = step_summary(rate, pub, reports, t_end, srv_cpu1 - srv_cpu0, cli_cpu1 - cli_cpu0)
            if profile_done is not None:
                step["profile"] = profile_done()
            steps.append(step)
            bootstrap_say(
                f"  g step {rate:g}/s: p99 {step['lat_ms_p99']} ms, lost {step['lost']}, "
                f"{step['delivered_per_s']} deliv/s, CPU {step['server_cpu_pct']} %"
            )
            why = step_failure(step, scenario.ceiling_p99_ms)
            if why is not None:
                stop_reason = f"{rate:g}/s: {why}"
                break
        fleet.results()
        completed = True
    finally:
        fleet.close(completed)

    passed = [s for s in steps if step_failure(s, scenario.ceiling_p99_ms) is None]
    best = passed[-1] if passed else None
    summary: dict[str, Any] = {
        "scenario": scenario.name,
        "system": system.name,
        "clients": scenario.clients,
        "events": sum(s["published"] for s in steps),
        "rate": best["rate"] if best else None,
        "payload_bytes": scenario.payload_bytes,
        "client_procs": len(fleet.shares),
        "connected": connected,
        "connect_failures": _merge_counts([r.get("failures", {}) for r in ready]),
        "ramp_s": round(ramp_s, 2),
        **_prefixed_ms(connect_s, "connect_ms"),
        "server_procs": len(held.pids),
        "server_rss_idle_mb": round(idle.rss_kb / 1024, 1),
        "server_rss_mb": round(held.rss_kb / 1024, 1),
        "kb_per_conn": round((held.rss_kb - idle.rss_kb) / connected, 1) if connected else None,
        "redis_connected_clients": redis_clients,
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "ceiling_stop": stop_reason,
        "steps": steps,
    }
    if best is None:
        summary.update(lost=steps[0]["lost"] if steps else 0, dups=0)
        return summary
    summary.update(
        {k: best[k] for k in best if k.startswith(("lat_ms_", "app_lat_ms_"))},
        delivered_per_s=best["delivered_per_s"],
        ceiling_events_per_s=best["events_per_s"],
        deliveries_per_cpu_s=best["deliveries_per_cpu_s"],
        server_cpu_pct=best["server_cpu_pct"],
        client_cpu_pct=best["client_cpu_pct"],
        lost=best["lost"],
        dups=best["dups"],
        dropped_streams=best["dropped_streams"],
        clients_with_loss=best["clients_with_loss"],
    )
    return summary


def step_summary(
    rate: float,
    pub: dict[str, Any],
    reports: list[dict[str, Any]],
    t_end: float,
    server_cpu_s: float,
    client_cpu_s: float,
) -> dict[str, Any]:
    """One ceiling step: delivery, latency and CPU over first publish .. last delivery."""
    published = pub["published"]
    got = [g for r in reports for g in r["got"]]
    delivered = sum(got)
    last_rx = max((r["last_rx"] for r in reports), default=0.0)
    window = max(t_end - pub["t_first"], 1e-6)
    sent_s = max(pub["t_last"] - pub["t_first"], 1e-6)
    per_s = delivered_per_second(delivered, pub["t_first"], last_rx, rate)
    return {
        "rate": rate,
        "published": published,
        "publish_rate": round((published - 1) / sent_s, 1) if published > 1 else None,
        "publish_lag_ms_max": pub["publish_lag_ms_max"],
        "delivered": delivered,
        "delivered_per_s": per_s,
        "events_per_s": round(per_s / len(got), 1) if per_s and got else None,
        **delivery_summary(got, published),
        "dups": sum(r["dups"] for r in reports),
        "dropped_streams": sum(r["dropped"] for r in reports),
        **latency_summary((x for r in reports for x in r["lat_kernel"]), "lat_ms"),
        **latency_summary((x for r in reports for x in r["lat_app"]), "app_lat_ms"),
        "server_cpu_pct": round(100 * server_cpu_s / window, 1),
        "client_cpu_pct": round(100 * client_cpu_s / window, 1),
        "deliveries_per_cpu_s": round(delivered / server_cpu_s) if server_cpu_s > 0 else None,
    }


def step_failure(step: dict[str, Any], p99_bound_ms: float) -> str | None:
    """Why a ceiling step does not count as kept up with; None when it does."""
    if step["lost"] or step["dropped_streams"]:
        return f"{step['lost']} deliveries lost, {step['dropped_streams']} streams dropped"
    if step["lat_ms_p99"] is None or step["lat_ms_p99"] > p99_bound_ms:
        return f"p99 {step['lat_ms_p99']} ms > {p99_bound_ms:g} ms"
    # A publisher that fell behind its schedule measured a lower rate than the step's.
    if step["publish_rate"] is not None and step["publish_rate"] < 0.9 * step["rate"]:
        return f"the publisher reached only {step['publish_rate']}/s"
    return None
