"""Scenario g, the ceiling: the publish rate raised step by step on the same streams.

Each step is measured like a scenario of its own (`step_summary`) until a step's
fan-out p99 passes the scenario's bound or an event is lost; the result's main
figures are those of the fastest step that passed (`step_failure` is None).
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from bench.bootstrap import say as bootstrap_say
from bench.fleet import ClientFleet
from bench.load import Held, LoadRun, held_streams, held_summary
from bench.procstats import cpu_seconds, tree_stats
from bench.publisher import publish_series
from bench.stats import delivered_per_second, delivery_summary, latency_summary


def measure_ceiling(run: LoadRun) -> dict[str, Any]:
    """Step the rate up on the same streams until p99 or loss says stop."""
    scenario = run.scenario
    steps: list[dict[str, Any]] = []
    stop_reason = "every step passed"
    with held_streams(run) as (fleet, held):
        for rate in scenario.ceiling_rates:
            step = run_step(run, fleet, held, rate)
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
    return ceiling_summary(run, fleet, held, steps, stop_reason)


def run_step(run: LoadRun, fleet: ClientFleet, held: Held, rate: float) -> dict[str, Any]:
    """One step: a new measurement on the open streams, `step_s` seconds of events at `rate`."""
    import uvloop

    scenario, system, profile = run.scenario, run.system, run.profile
    hub = fleet.hub
    events = max(10, round(rate * scenario.step_s))
    run_id = secrets.token_hex(4)
    for kind in ("measuring", "report"):
        hub.inbox.pop(kind, None)
    hub.send_all(("measure", (run_id, events)))
    hub.wait_all("measuring", 30)
    hub.inbox.pop("complete", None)  # a late one of the step before came ahead of it
    srv_cpu0, cli_cpu0 = tree_stats(system.pid).cpu_s, cpu_seconds(fleet.pids)
    profile_done = profile(system, events / rate + 1.0) if profile else None
    pub = uvloop.run(
        publish_series(system.publisher(), run_id, events, rate, scenario.payload_bytes)
    )
    drain_left = pub["t_last"] + scenario.step_drain_s - time.time()
    hub.wait_all("complete", max(0.0, drain_left), held.live)
    t_end = time.time()
    srv_cpu1, cli_cpu1 = tree_stats(system.pid).cpu_s, cpu_seconds(fleet.pids)
    hub.send_all(("report", None))
    reports = [r for r in hub.wait_all("report", 60) if r]
    step = step_summary(rate, pub, reports, t_end, srv_cpu1 - srv_cpu0, cli_cpu1 - cli_cpu0)
    if profile_done is not None:
        step["profile"] = profile_done()
    return step


def ceiling_summary(
    run: LoadRun,
    fleet: ClientFleet,
    held: Held,
    steps: list[dict[str, Any]],
    stop_reason: str,
) -> dict[str, Any]:
    """The run's figures: those of the fastest step that passed, and every step."""
    passed = [s for s in steps if step_failure(s, run.scenario.ceiling_p99_ms) is None]
    best = passed[-1] if passed else None
    summary: dict[str, Any] = {
        **held_summary(run, fleet, held),
        "events": sum(s["published"] for s in steps),
        "rate": best["rate"] if best else None,
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
