"""`python3 -m bench`: run the standard scenarios against every system, print one table.

For each scenario and system on its own redis-server: flush, start, measure,
stop, append to `bench/results/<time>.jsonl`; the table on stdout, progress on
stderr; everything started is stopped, also on Ctrl-C. `--before <commit>` runs
that commit's gateway (a git worktree under /tmp) in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from bench import bootstrap
from bench.scenarios import ALL_SYSTEMS, BEFORE_SYSTEMS, SCENARIOS, WIDE_SYSTEMS, Scenario

if TYPE_CHECKING:  # imported when run: the bench's own packages may be installed only then
    from bench.fleet import LoadOptions
    from connectome_sse.localrun.redis_server import RedisServer

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python3 -m bench",
        description="SSE fan-out benchmark: the gateway beside Nchan and a naive baseline.",
        epilog="Scenarios: "
        + "; ".join(f"{s.name}: {s.title}" for s in SCENARIOS.values())
        + ". Example: python3 -m bench --scenarios a,b --systems nchan,gateway-2w",
    )
    p.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help="comma-separated (default: all)"
    )
    p.add_argument(
        "--systems",
        help="comma-separated from nchan (= nchan-2w), nchan-<N>w, gateway-<N>w, "
        "gateway-<N>w-before (needs --before), naive (= naive-2w), naive-<N>w, "
        "floor-<N>w (bench/floor_app.py: the least a Python server pays); each "
        f"scenario runs those it can (default: {','.join(ALL_SYSTEMS)}, and with --before "
        f"{','.join(s for s in (*BEFORE_SYSTEMS, *WIDE_SYSTEMS) if s.endswith('-before'))})",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs of each pair; the table shows medians (%(default)s)",
    )
    p.add_argument(
        "--repeat-fg",
        type=int,
        help="runs of each pair in the long scenarios f and g (default: as --repeat)",
    )
    p.add_argument(
        "--before",
        metavar="COMMIT",
        help="also run the gateway of COMMIT (systems gateway-<N>w-before), for a "
        "before/after in one run",
    )
    p.add_argument("--clients", type=int, help="override every scenario's client count")
    p.add_argument("--events", type=int, help="override every scenario's event count")
    p.add_argument("--rate", type=float, help="override every scenario's publish rate")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds between ramp and publishing")
    p.add_argument("--drain", type=float, default=20.0, help="max seconds to wait after publishing")
    p.add_argument("--streams-per-process", type=int, default=8000, help="load client split")
    p.add_argument(
        "--through-log",
        action="store_true",
        help="publish to the Redis-fed systems (gateway, naive) through the event log "
        "(EVALSHA of the logged-publish script: log entry, snapshot, id marker, PUBLISH) "
        "instead of a bare PUBLISH; their rows are named <system>-log. Nchan: HTTP as always",
    )
    p.add_argument("--profile", action="store_true", help="py-spy the gateway while it publishes")
    p.add_argument(
        "--profile-native", action="store_true", help="with --profile: C frames too (slows it)"
    )
    p.add_argument("--profile-rate", type=int, default=100, help="with --profile: samples a second")
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

    systems = args.systems or ",".join(
        [*ALL_SYSTEMS, *(s for s in (*BEFORE_SYSTEMS, *WIDE_SYSTEMS) if s.endswith("-before"))]
        if args.before
        else ALL_SYSTEMS
    )
    wanted = [canonical_name(s.strip()) for s in systems.split(",") if s.strip()]
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
            elif system.endswith("-before") and not args.before:
                skipped.append(f"{system} (no --before commit)")
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


def run_one(
    scen,
    system_name: str,
    redis_server,
    opts,
    profile,
    before_tree: Path | None = None,
    through_log: bool = False,
) -> dict[str, Any]:
    """Start the system, measure, stop it. A failure becomes a result with an `error`."""
    from bench.ceiling import measure_ceiling
    from bench.load import LoadRun, measure
    from bench.systems import start_system

    redis_server.flush()
    system = None
    try:
        system = start_system(
            system_name, redis_server, before_tree=before_tree, through_log=through_log
        )
        how = measure_ceiling if scen.ceiling_rates else measure
        return how(LoadRun(scen, system, redis_server, opts, profile))
    except Exception as e:  # one failed run must not end the others
        return {"scenario": scen.name, "system": system_name, "error": str(e)}
    finally:
        if system is not None:
            system.stop()


def one_line(result: dict[str, Any]) -> str:
    if "error" in result:
        return f"failed: {result['error']}"
    if "ceiling_stop" in result:
        return (
            f"{result['connected']:,} streams, ceiling {result.get('ceiling_events_per_s')} "
            f"events/s ({result.get('delivered_per_s')} deliv/s, "
            f"{result.get('deliveries_per_cpu_s')} per CPU-s); stopped at {result['ceiling_stop']}"
        )
    return (
        f"{result['connected']:,} streams, p99 {result['lat_ms_p99']} ms, "
        f"CPU {result['server_cpu_pct']} %, lost {result['lost']}, dups {result['dups']}"
    )


def checkout(commit: str) -> Path:
    """A git worktree of `commit` under /tmp (made once, reused by later runs)."""
    full = subprocess.run(
        ["git", "rev-parse", "--verify", f"{commit}^{{commit}}"],
        capture_output=True, text=True, cwd=bootstrap.REPO_DIR, check=False,
    )  # fmt: skip
    if full.returncode != 0:
        raise SystemExit(f"bench: --before {commit!r} is not a commit of this repository")
    tree = Path(f"/tmp/bench-before-{full.stdout.strip()[:12]}")
    if not (tree / "sse_gateway").is_dir():
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(tree), full.stdout.strip()],
            cwd=bootstrap.REPO_DIR, check=True, capture_output=True,
        )  # fmt: skip
    return tree


def repeats_of(scen_name: str, args: argparse.Namespace) -> int:
    if scen_name in ("f", "g") and args.repeat_fg is not None:
        return int(args.repeat_fg)
    return int(args.repeat)


@dataclass
class BenchRun:
    """One invocation's schedule, options and results; each result appended to `out` as made."""

    args: argparse.Namespace
    before_tree: Path | None
    stamp: str = field(default_factory=lambda: time.strftime("%Y%m%d-%H%M%S"))
    commit: str = field(default_factory=lambda: _git_head())
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def out(self) -> Path:
        return self.args.out or RESULTS_DIR / f"{self.stamp}.jsonl"

    def options(self) -> LoadOptions:
        from bench.fleet import LoadOptions

        args = self.args
        return LoadOptions(
            warmup_s=args.warmup, drain_s=args.drain, streams_per_process=args.streams_per_process
        )

    def scenario(self, name: str) -> Scenario:
        """The scenario, with the command line's overrides."""
        args, scen = self.args, SCENARIOS[name]
        return replace(
            scen,
            clients=args.clients or scen.clients,
            bystanders=scen.bystanders * args.clients // scen.clients
            if args.clients
            else scen.bystanders,
            events=args.events or scen.events,
            rate=args.rate or scen.rate,
        )

    def run_schedule(
        self, schedule: list[tuple[str, list[str], list[str]]], redis_server: RedisServer
    ) -> None:
        """Every scenario against each of its systems, `--repeat` rounds, systems rotated."""
        say, opts = bootstrap.say, self.options()
        rounds = max(repeats_of(name, self.args) for name, _, _ in schedule) if schedule else 0
        for rep in range(rounds):
            for scen_name, systems, skipped in schedule:
                for why in skipped if rep == 0 else []:
                    say(f"{scen_name}: skipping {why}")
                if rep >= repeats_of(scen_name, self.args):
                    continue
                scen = self.scenario(scen_name)
                for system_name in rotated(systems, rep):
                    say(
                        f"{scen.name} ({scen.title}): {system_name}, "
                        f"run {rep + 1}/{repeats_of(scen.name, self.args)}"
                    )
                    self.one(scen, system_name, rep, redis_server, opts)

    def one(
        self,
        scen: Scenario,
        system_name: str,
        rep: int,
        redis_server: RedisServer,
        opts: LoadOptions,
    ) -> None:
        """One measurement, kept, written and said."""
        from bench.profile import format_hot_spots, start_profile

        args, say = self.args, bootstrap.say
        profile = (
            start_profile(
                RESULTS_DIR,
                f"{self.stamp}-{scen.name}",
                rate_hz=args.profile_rate,
                native=args.profile_native,
            )
            if args.profile and system_name.startswith("gateway")
            else None
        )
        from bench.systems import publish_path

        result = run_one(
            scen, system_name, redis_server, opts, profile, self.before_tree, args.through_log
        )
        result.update(
            repeat=rep + 1,
            started=self.stamp,
            commit=self.commit,
            publish=publish_path(system_name, args.through_log),
        )
        if system_name.endswith("-before"):
            result["code_commit"] = args.before
        self.results.append(result)
        with self.out.open("a") as f:
            f.write(json.dumps(result) + "\n")
        say("  " + one_line(result))
        if "profile" in result:
            say("  hot spots:\n" + format_hot_spots(result["profile"]))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.table:
        from bench.report import render

        print(render(_read_jsonl(args.table)))
        return 0

    schedule = plan(args)
    before_tree = checkout(args.before) if args.before else None
    need_nchan = any("nchan" in systems for _, systems, _ in schedule)
    if not args.no_install:
        bootstrap.ensure_debian_packages(need_nchan)
        bootstrap.ensure_python_packages(need_py_spy=args.profile)
    nofile = bootstrap.raise_open_files()

    from bench.report import render
    from bench.systems import ServerProcess, bench_redis

    signal.signal(signal.SIGTERM, _on_sigterm)
    # Ctrl-C must stop the run (and everything it started) even where SIGINT came in ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    run = BenchRun(args, before_tree)
    say = bootstrap.say
    say(
        f"commit {run.commit}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}, "
        f"open-file limit {nofile}; results -> {run.out}"
        + (f"; before: {args.before} in {before_tree}" if before_tree else "")
    )
    t_start = time.monotonic()
    redis_server = bench_redis()
    try:
        redis_server.start()
        run.run_schedule(schedule, redis_server)
    except KeyboardInterrupt:
        say("interrupted; stopping everything")
        return 130
    finally:
        ServerProcess.stop_all()
        redis_server.stop()
    say(f"done in {time.monotonic() - t_start:.0f} s; results in {run.out}")
    print(
        f"`python3 -m bench {' '.join(argv if argv is not None else sys.argv[1:])}` "
        f"at commit {run.commit}, {run.stamp}\n"
    )
    print(render(run.results))
    return 0
