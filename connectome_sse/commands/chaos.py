"""`connectome-sse chaos [SCENARIO...]`: inject faults into a local topology, print what they cost.

One row per scenario (fault, limit, figures, PASS or FAIL); exit 1 when one
fails, 2 when the run cannot start. See docs/cli.md, "chaos".
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import shutil
import signal
import sys
import time
from pathlib import Path

from connectome_core.logs import setup_logging
from connectome_core.settings import SettingsError
from connectome_sse.chaos.report import table, write_json
from connectome_sse.chaos.runner import Row, Runner
from connectome_sse.chaos.scenario_kit import Scenario
from connectome_sse.chaos.scenarios import SCENARIOS, STORM_CLIENTS
from connectome_sse.chaos.topology import Settings, chaos_topology
from connectome_sse.localrun.nginx import TemplateNotFound, find_template
from connectome_sse.localrun.topology import Topology

SOAK = "soak"
DEFAULT_CLIENTS = 100
SOAK_SECONDS = 600.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    names = [*SCENARIOS, SOAK]
    parser.add_argument(
        "scenarios",
        nargs="*",
        metavar="SCENARIO",
        help=f"scenarios to run (default: all but the soak): {', '.join(names)}",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the rows as JSON")
    parser.add_argument(
        "--clients", type=int, default=DEFAULT_CLIENTS, metavar="N",
        help=f"streaming clients per scenario (default {DEFAULT_CLIENTS})",
    )  # fmt: skip
    parser.add_argument(
        "--storm-clients", type=int, default=STORM_CLIENTS, metavar="N",
        help=f"clients of the reconnect storm (default {STORM_CLIENTS})",
    )  # fmt: skip
    parser.add_argument(
        "--soak", action="store_true", help="also run the soak: 10 minutes, one Redis restart"
    )
    parser.add_argument("--soak-seconds", type=float, default=SOAK_SECONDS, help=argparse.SUPPRESS)
    parser.add_argument(
        "--nginx-template", type=Path, metavar="PATH",
        help="services/nginx/nginx.conf.template (found in the repository by default)",
    )  # fmt: skip


def chosen(args: argparse.Namespace) -> tuple[list[Scenario], bool]:
    """The scenarios to play, and whether the soak runs; unknown names raise ValueError."""
    names = list(args.scenarios)
    unknown = [n for n in names if n not in SCENARIOS and n != SOAK]
    if unknown:
        raise ValueError(
            f"unknown scenario {', '.join(unknown)} (known: {', '.join([*SCENARIOS, SOAK])})"
        )
    soak = args.soak or SOAK in names
    picked = [n for n in names if n != SOAK]
    if not names:
        picked = list(SCENARIOS)
    scenarios = [SCENARIOS[n] for n in picked]
    scenarios = [
        dataclasses.replace(s, clients=args.storm_clients) if s.clients is not None else s
        for s in scenarios
    ]
    return scenarios, soak


def run(args: argparse.Namespace) -> int:
    try:
        scenarios, soak = chosen(args)
        if args.clients < 1 or args.storm_clients < 1:
            raise ValueError("--clients and --storm-clients must be at least 1")
        settings = Settings.from_environ()
        find_template(args.nginx_template)
        for program in ("redis-server", "nginx", "openssl"):
            if shutil.which(program) is None:
                raise ValueError(f"{program} is not installed (not on PATH)")
    except (ValueError, SettingsError, TemplateNotFound) as exc:
        print(f"chaos: {exc}", file=sys.stderr)
        return 2
    setup_logging("info", settings.gateway.log_format)
    # SIGTERM ends the run like Ctrl-C, so the topology's processes are stopped too.
    signal.signal(signal.SIGTERM, _interrupt)
    # The Sentinel scenarios get a topology of their own, started after the plain one stops.
    plain = [s for s in scenarios if not s.sentinel]
    on_sentinel = [s for s in scenarios if s.sentinel]
    plays: list[tuple[bool, list[Scenario], bool]] = []  # (on Sentinel, scenarios, soak)
    if plain or soak:
        plays.append((False, plain, soak))
    if on_sentinel:
        plays.append((True, on_sentinel, False))
    rows: list[Row] = []
    broken = False
    for sentinel, group, with_soak in plays:
        topology = chaos_topology(settings, args.nginx_template, sentinel)
        played = _on(topology, settings, group, with_soak, args)
        if played is None:
            broken = True  # the rows played so far are still printed
            break
        rows += played
    order = {s.name: i for i, s in enumerate(scenarios)}
    rows.sort(key=lambda row: order.get(row.name, len(order)))  # the soak last
    ok = all(row.verdict != "FAIL" for row in rows)
    if broken and not rows:
        return 2
    print(table(rows))
    if args.json is not None:
        meta = {
            "clients": args.clients,
            "storm_clients": args.storm_clients,
            "settings": {
                "SSE_RETRY_MS": settings.gateway.retry_ms,
                "SSE_PING_INTERVAL": settings.gateway.ping_interval,
                "SSE_CLIENT_BUFFER": settings.gateway.client_buffer,
                "HEALTH_INTERVAL": settings.publisher.health_interval,
                "PUBLISHER_LEASE_MS": settings.publisher.publisher_lease_ms,
            },
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        write_json(args.json, rows, meta)
    if broken:
        return 2
    return 0 if ok else 1


def _on(
    topology: Topology,
    settings: Settings,
    scenarios: list[Scenario],
    soak: bool,
    args: argparse.Namespace,
) -> list[Row] | None:
    """The rows of ``scenarios`` played on ``topology``; None when it could not run."""
    rows: list[Row] = []
    ok = False
    try:
        print(f"chaos: starting the topology in {topology.workdir}", file=sys.stderr)
        topology.start()
        topology.wait_health(settings.first_health_s)
        rows = asyncio.run(_play(topology, settings, args.clients, scenarios, soak, args))
        ok = all(row.verdict != "FAIL" for row in rows)
    except Exception as exc:
        print(f"chaos: the topology failed: {exc}\n{topology.logs()}", file=sys.stderr)
        return None
    finally:
        topology.stop()
        if ok:
            shutil.rmtree(topology.workdir, ignore_errors=True)
        else:
            print(f"chaos: logs kept in {topology.workdir}", file=sys.stderr)
    return rows


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


async def _play(
    topology: Topology,
    settings: Settings,
    clients: int,
    scenarios: list[Scenario],
    soak: bool,
    args: argparse.Namespace,
) -> list[Row]:
    rows = []
    async with Runner(topology, settings, clients) as runner:
        for scenario in scenarios:
            print(f"chaos: {scenario.name} ...", file=sys.stderr, flush=True)
            row = await runner.play(scenario)
            print(f"chaos: {scenario.name}: {row.verdict}", file=sys.stderr, flush=True)
            rows.append(row)
        if soak:
            print(f"chaos: soak, {args.soak_seconds:g} s ...", file=sys.stderr, flush=True)
            rows.append(await runner.soak(args.soak_seconds))
    return rows
