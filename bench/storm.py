"""Scenario e's storms, as the parent runs them: every stream but the bystanders reopens at once.

The first storm is bare: how long until every stream is back, and the server's
CPU-seconds per reopened stream. The second runs under a publish series that starts
before it: the bystanders' (streams kept open) fan-out while the others reconnect,
beside their fan-out just before, when all was quiet.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from bench.fleet import ClientFleet, WorkerHub, merge_counts, split_evenly
from bench.procstats import tree_stats
from bench.publisher import publish_series
from bench.scenarios import Scenario
from bench.stats import percentile
from bench.systems import RunningSystem

QUIET_LEAD_S = 1.5  # publishing before the second storm: the bystanders' quiet fan-out
WATCH_RATE = 10.0  # events a second during the second storm
WATCH_S = 4.5  # how long that series lasts (the quiet lead included)
PROFILE_S = 4.0  # --profile in e: seconds sampled from just before the bare storm

ProfileStart = Callable[[RunningSystem, float], Callable[[], dict[str, Any]]]


def storm(
    hub: WorkerHub, keep: list[int], system: RunningSystem, timeout_s: float
) -> dict[str, Any]:
    """Every stream but each worker's first `keep` closed and reopened at once; how long
    until each streams again, and what it cost the server."""
    at = time.time() + 0.5
    before = tree_stats(system.pid)
    for i, pipe in enumerate(hub.pipes):
        if i not in hub.gone:
            pipe.send(("storm", (at, keep[i], False)))
    storms = [s or {} for s in hub.wait_all("storm", timeout_s + 30)]
    after = tree_stats(system.pid)
    cpu_s, sys_s = after.cpu_s - before.cpu_s, after.sys_s - before.sys_s
    hub.inbox.pop("storm", None)
    back = sorted(x for s in storms for x in s.get("back_s", ()))
    closed = sum(s.get("closed", 0) for s in storms)
    reconnected = sum(s.get("reconnected", 0) for s in storms)
    return {
        "storm_closed": closed,
        "storm_reconnected": reconnected,
        "storm_s": round(back[-1], 2) if back and reconnected == closed else None,
        "storm_p50_s": _round(percentile(back, 0.5), 3),
        "storm_p99_s": _round(percentile(back, 0.99), 3),
        "storm_attempts": sum(s.get("attempts", 0) for s in storms),
        "storm_failures": merge_counts([s.get("failures", {}) for s in storms]),
        "storm_cpu_s": round(cpu_s, 3),
        "storm_cpu_us_per_stream": round(cpu_s / reconnected * 1e6) if reconnected else None,
        # The kernel's share (accept, reads, writes, closes): the part no server code avoids.
        "storm_sys_us_per_stream": round(sys_s / reconnected * 1e6) if reconnected else None,
    }


def watched_storm(
    fleet: ClientFleet, keep: list[int], system: RunningSystem, scenario: Scenario
) -> dict[str, Any]:
    """A second storm under a publish series: the bystanders' fan-out p99 before it
    (quiet) and while the others reconnect."""
    hub = fleet.hub
    run_id = fleet.run_id + "w"
    events = round(WATCH_RATE * WATCH_S)
    hub.send_all(("measure", (run_id, events)))
    hub.wait_all("measuring", 30)
    hub.inbox.pop("measuring", None)
    published: dict[str, Any] = {}

    def publish() -> None:
        import uvloop

        series = publish_series(
            system.publisher(), run_id, events, WATCH_RATE, scenario.payload_bytes
        )
        published.update(uvloop.run(series))

    publisher = threading.Thread(target=publish, name="storm-publisher", daemon=True)
    at = time.time() + QUIET_LEAD_S
    publisher.start()
    for i, pipe in enumerate(hub.pipes):
        if i not in hub.gone:
            pipe.send(("storm", (at, keep[i], True)))
    storms = [s or {} for s in hub.wait_all("storm", fleet.opts.storm_timeout_s + 30)]
    hub.inbox.pop("storm", None)
    back = max((x for s in storms for x in s.get("back_s", ())), default=0.0)
    publisher.join(WATCH_S + 30)
    time.sleep(0.5)  # the last events' receipts
    hub.send_all(("watched", None))
    watched = [w or {} for w in hub.wait_all("watched", 60)]
    hub.inbox.pop("watched", None)
    quiet, during = [], []
    for w in watched:
        for sent, lat in zip(w.get("sent", ()), w.get("lat", ()), strict=True):
            if sent < at:
                quiet.append(lat)
            elif sent <= at + back:
                during.append(lat)
    quiet_p99, during_p99 = _p99_ms(quiet), _p99_ms(during)
    return {
        "watch_storm_s": round(back, 2),
        "watch_quiet_samples": len(quiet),
        "watch_storm_samples": len(during),
        "watch_quiet_p99_ms": quiet_p99,
        "watch_storm_p99_ms": during_p99,
        "watch_storm_x_quiet": (
            round(during_p99 / quiet_p99, 2) if quiet_p99 and during_p99 is not None else None
        ),
        "watch_published": published.get("published"),
    }


def storms(
    fleet: ClientFleet, system: RunningSystem, scenario: Scenario, profile: ProfileStart | None
) -> dict[str, Any]:
    """Scenario e's two storms, then every stream measuring the scenario's own series again.
    With `profile`, the bare storm is the one sampled."""
    keep = split_evenly(scenario.bystanders, len(fleet.pipes))
    timeout = fleet.opts.storm_timeout_s
    profiled = profile(system, PROFILE_S) if profile is not None else None
    bare = storm(fleet.hub, keep, system, timeout)
    if profiled is not None:
        bare["profile"] = profiled()
    time.sleep(fleet.opts.warmup_s)
    watched = watched_storm(fleet, keep, system, scenario)
    time.sleep(fleet.opts.warmup_s)
    fleet.hub.send_all(("measure", (fleet.run_id, scenario.events)))
    fleet.hub.wait_all("measuring", 30)
    fleet.hub.inbox.pop("measuring", None)
    return {**bare, **watched, "storm_bystanders": scenario.bystanders}


def _p99_ms(values: list[float]) -> float | None:
    value = percentile(sorted(values), 0.99)
    return None if value is None else round(value * 1e3, 1)


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
