"""`connectome-sse doctor URL`: check an SSE endpoint as a browser sees it, proxies and all.

Watches the gateway's probe stream through whatever lies between and prints one
line per check (``--json`` for machines); exit 1 when a check fails, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from connectome_sse import client_options
from connectome_sse.doctor.checks import failed, run_checks
from connectome_sse.doctor.observe import PROBE_SPAN, Options, UsageError, observe, probe_url
from connectome_sse.doctor.report import json_report, text_report
from connectome_sse.gateway_url import GatewayUrlError, split_gateway_url

DEFAULT_IDLE_S = 75.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "url", metavar="URL", help="the gateway or load balancer, e.g. https://sse.example.com"
    )
    parser.add_argument(
        "--idle",
        type=_seconds,
        default=DEFAULT_IDLE_S,
        metavar="S",
        help="watch the stream S seconds past the probes, to meet idle timeouts "
        f"[default {DEFAULT_IDLE_S:g}]",
    )
    parser.add_argument("--json", action="store_true", help="the verdicts as JSON")
    client_options.add_arguments(parser)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    try:
        url = probe_url(args.url)
        _, basic_auth = split_gateway_url(args.url)
        options = Options(
            idle=args.idle, client=client_options.from_args(args), basic_auth=basic_auth
        )
    except (UsageError, GatewayUrlError, client_options.UsageError) as exc:
        print(f"connectome-sse doctor: {exc}", file=sys.stderr)
        return 2
    if not args.json:
        seconds = args.idle + PROBE_SPAN
        print(f"watching {url} for about {seconds:g} s ...", file=sys.stderr, flush=True)
    observation = asyncio.run(observe(url, options))
    checks = run_checks(observation)
    report = json_report if args.json else text_report
    print(report(observation, checks), flush=True)
    return 1 if failed(checks) else 0
