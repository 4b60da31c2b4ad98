"""`python3 -m bench`: run the standard scenarios against every system, print one table.

Starts its own redis-server on a free port, then for each scenario and each
system: flush Redis, start the system, measure, stop it, append the result to
`bench/results/<time>.jsonl`. Prints the markdown table on stdout, progress on
stderr. Every process it starts is stopped when it ends, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

from bench import bootstrap
from bench.scenarios import ALL_SYSTEMS, SCENARIOS

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python3 -m bench",
        description="SSE fan-out benchmark: the gateway beside Nchan and a naive baseline.",
        epilog="Scenarios: "
        + "; ".join(f"{s.name}: {s.title}" for s in SCENARIOS.values())
        + ". Example: python3 -m bench --scenarios a,b --systems nchan,gateway-2w",
    )
    p.add_argument("--scenarios", default="a,b,c,d,e", help="comma-separated (default: all)")
    p.add_argument(
        "--systems",
        default=",".join(ALL_SYSTEMS),
        help="comma-separated from nchan, gateway-<N>w, naive (= naive-2w), naive-<N>w; "
        "each scenario runs those it can (default: %(default)s)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs of each pair; the table shows medians (%(default)s)",
    )
    p.add_argument("--clients", type=int, help="override every scenario's client count")
    p.add_argument("--events", type=int, help="override every scenario's event count")
    p.add_argument("--rate", type=float, help="override every scenario's publish rate")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds between ramp and publishing")
    p.add_argument("--drain", type=float, default=20.0, help="max seconds to wait after publishing")
    p.add_argument("--streams-per-process", type=int, default=8000, help="load client split")
    p.add_argument("--profile", action="store_true", help="py-spy the gateway while it publishes")
    p.add_argument(
        "--profile-native", action="store_true", help="with --profile: C frames too (slows it)"
    )
    p.add_argument("--out", type=Path, help="JSONL file to append to (default: results/<time>)")
    p.add_argument("--no-install", action="store_true", help="never apt-get or pip install")
    p.add_argument("--table", nargs="+", type=Path, help="only print the table of JSONL files")
    return p


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _git_head() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=bootstrap.REPO_DIR,
            timeout=5,
        )
        return out.stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def _read_jsonl(paths: list[Path]) -> list[dict[str, Any]]:
    rows = []
    for path in paths:
        for line in path.read_text().splitlines():
            if line.strip():
                rows.append(json.loads(line))
    return rows


def plan(args: argparse.Namespace) -> list[tuple[str, list[str], list[str]]]:
    """(scenario, systems to run, systems left out with why) for each chosen scenario."""
    from bench.systems import canonical_name, gateway_available

    wanted = [canonical_name(s.strip()) for s in args.systems.split(",") if s.strip()]
    have_gateway = gateway_available()
    out = []
    for name in (s.strip() for s in args.scenarios.split(",") if s.strip()):
        if name not in SCENARIOS:
            raise SystemExit(f"bench: unknown scenario {name!r} (one of {', '.join(SCENARIOS)})")
        scen = SCENARIOS[name]
        run, skipped = [], []
        for system in wanted:
            if system.startswith("gateway") and not have_gateway:
                skipped.append(f"{system} (sse_gateway.cli not installed yet)")
            elif system not in scen.systems and args.clients is None:
                skipped.append(f"{system} (not run in {name}: see bench/scenarios.py)")
            else:
                run.append(system)
        out.append((name, run, skipped))
    return out


def rotated(items: list[str], by: int) -> list[str]:
    """`items` rotated left by `by`, so no system always runs first."""
    if not items:
        return []
    k = by % len(items)
    return items[k:] + items[:k]


def run_one(scen, system_name: str, redis_server, opts, profile) -> dict[str, Any]:
    """Start the system, measure, stop it. A failure becomes a result with an `error`."""
    from bench.load import measure
    from bench.systems import start_system

    redis_server.flush()
    system = None
    try:
        system = start_system(system_name, redis_server)
        return measure(scen, system, redis_server, opts, profile)
    except Exception as e:  # one failed run must not end the others
        return {"scenario": scen.name, "system": system_name, "error": str(e)}
    finally:
        if system is not None:
            system.stop()


def one_line(result: dict[str, Any]) -> str:
    if "error" in result:
        return f"failed: {result['error']}"
    return (
        f"{result['connected']:,} streams, p99 {result['lat_ms_p99']} ms, "
        f"CPU {result['server_cpu_pct']} %, lost {result['lost']}, dups {result['dups']}"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.table:
        from bench.report import render

        print(render(_read_jsonl(args.table)))
        return 0

    schedule = plan(args)
    need_nchan = any("nchan" in systems for _, systems, _ in schedule)
    if not args.no_install:
        bootstrap.ensure_debian_packages(need_nchan)
        bootstrap.ensure_python_packages(need_py_spy=args.profile)
    nofile = bootstrap.raise_open_files()

    from bench.load import LoadOptions
    from bench.profile import format_hot_spots, start_profile
    from bench.report import render
    from bench.systems import RedisServer, ServerProcess

    signal.signal(signal.SIGTERM, _on_sigterm)
    # Ctrl-C must stop the run (and everything it started) even where SIGINT came in ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out or RESULTS_DIR / f"{stamp}.jsonl"
    opts = LoadOptions(
        warmup_s=args.warmup, drain_s=args.drain, streams_per_process=args.streams_per_process
    )
    say = bootstrap.say
    commit = _git_head()
    say(
        f"commit {commit}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}, "
        f"open-file limit {nofile}; results -> {out}"
    )
    results: list[dict[str, Any]] = []
    t_start = time.monotonic()
    redis_server = RedisServer()
    try:
        redis_server.start()
        for rep in range(args.repeat):
            for scen_name, systems, skipped in schedule:
                for why in skipped if rep == 0 else []:
                    say(f"{scen_name}: skipping {why}")
                scen = replace(
                    SCENARIOS[scen_name],
                    clients=args.clients or SCENARIOS[scen_name].clients,
                    events=args.events or SCENARIOS[scen_name].events,
                    rate=args.rate or SCENARIOS[scen_name].rate,
                )
                for system_name in rotated(systems, rep):
                    say(f"{scen.name} ({scen.title}): {system_name}, run {rep + 1}/{args.repeat}")
                    profile = (
                        start_profile(
                            RESULTS_DIR, f"{stamp}-{scen.name}", native=args.profile_native
                        )
                        if args.profile and system_name.startswith("gateway")
                        else None
                    )
                    result = run_one(scen, system_name, redis_server, opts, profile)
                    result.update(repeat=rep + 1, started=stamp, commit=commit)
                    results.append(result)
                    with out.open("a") as f:
                        f.write(json.dumps(result) + "\n")
                    say("  " + one_line(result))
                    if "profile" in result:
                        say("  hot spots:\n" + format_hot_spots(result["profile"]))
    except KeyboardInterrupt:
        say("interrupted; stopping everything")
        return 130
    finally:
        ServerProcess.stop_all()
        redis_server.stop()
    say(f"done in {time.monotonic() - t_start:.0f} s; results in {out}")
    print(
        f"`python3 -m bench {' '.join(argv if argv is not None else sys.argv[1:])}` "
        f"at commit {commit}, {stamp}\n"
    )
    print(render(results))
    return 0
