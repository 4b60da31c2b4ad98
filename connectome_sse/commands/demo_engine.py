"""`connectome-sse demo-engine`: a simulated connectome engine writing signals into Redis.

With the publisher's default HEALTH_WINDOW (300 s) a violation keeps the status
down for five minutes, so a demo is best watched with a short window, e.g.
``HEALTH_WINDOW=15`` for the publisher (what ``connectome-sse up`` passes).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import sys

from connectome_core.logs import setup_logging
from connectome_core.redis_connect import startup_problem
from connectome_core.redis_target import RedisTarget
from connectome_core.settings import (
    RedisSettings,
    SettingsError,
    add_setting_flags,
    settings_from_args,
)
from connectome_sse.demo.engine import run_engine
from connectome_sse.demo.scenario import TICKS_PER_SECOND, DemoConfig, DemoScenario


def _positive_or_zero(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def _positive(text: str) -> float:
    value = _positive_or_zero(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _maxlen(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 100:
        raise argparse.ArgumentTypeError(f"must be >= 100, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # REDIS_URL (without a password: that stays in the environment or a file), TLS, LOG_FORMAT.
    add_setting_flags(parser, RedisSettings)
    parser.add_argument(
        "--speed",
        choices=tuple(TICKS_PER_SECOND),
        default="x1",
        help="runner speed the engine reports and ticks at (default x1)",
    )
    parser.add_argument(
        "--tick-rate",
        type=_positive,
        default=2.0,
        help="ticks per second at x1 (default 2); x2 and x3 multiply it",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument(
        "--violation-every",
        type=_positive_or_zero,
        default=30.0,
        metavar="SECONDS",
        help="misbehave every SECONDS, cycling epoch mismatch, query write, stall, DMZ "
        "violation; the first after half a period (default 30; 0: never)",
    )
    parser.add_argument(
        "--stall-seconds",
        type=_positive_or_zero,
        default=14.0,
        help="length of a stall, longer than HEALTH_STALE_AFTER to be seen (default 14; "
        "0: no stalls)",
    )
    parser.add_argument(
        "--maxlen",
        type=_maxlen,
        default=1_000_000,
        help="safety cap: trim the stream to ~N entries (the publisher trims by time)",
    )
    parser.add_argument(
        "--duration",
        type=_positive_or_zero,
        default=0.0,
        help="stop after this many seconds (default 0: run until stopped)",
    )
    parser.add_argument("--playthrough-id", default="", help="default: derived from the seed")
    parser.add_argument("--log-level", default="info", help="log level (default info)")


async def _main(args: argparse.Namespace, target: RedisTarget, config: DemoConfig) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    problem = await startup_problem(target)
    if problem is not None:  # a setting must change: retrying cannot help
        print(f"demo-engine: cannot start: {problem}", file=sys.stderr)
        return 1
    written = await run_engine(
        DemoScenario(config), target, stop, maxlen=args.maxlen, duration=args.duration
    )
    if written == 0:
        # Never exit 0 having done nothing: a script waiting on it must know.
        print(
            f"demo-engine: wrote nothing: Redis at {target.display()} never took a signal",
            file=sys.stderr,
        )
        return 1
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(RedisSettings, args)
        target = settings.redis_target()
    except SettingsError as exc:
        print(f"demo-engine: bad setting: {exc}", file=sys.stderr)
        return 2
    setup_logging(args.log_level, settings.log_format)
    config = DemoConfig(
        speed=args.speed,
        tick_rate=args.tick_rate,
        violation_every=args.violation_every,
        stall_seconds=args.stall_seconds,
        seed=args.seed if args.seed is not None else random.randrange(2**31),
        playthrough_id=args.playthrough_id,
    )
    return asyncio.run(_main(args, target, config))
