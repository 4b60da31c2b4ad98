"""`connectome-sse token`: print a stream token signed with ``SSE_AUTH_SECRET``.

The secret comes from the environment or ``SSE_AUTH_SECRET_FILE``, never a flag
(``ps`` shows command lines). The token alone goes to stdout, so
``TOKEN=$(connectome-sse token)`` works.
"""

from __future__ import annotations

import argparse
import os
import sys

from connectome_core.contract import is_valid_event_name
from connectome_core.secret_files import SecretFileError, secret_from_environ
from connectome_core.tokens import MIN_SECRET_BYTES, TokenVerifier

SECRET_ENV = "SSE_AUTH_SECRET"
DEFAULT_TTL = 3600
MAX_TTL = 366 * 24 * 3600


def _ttl(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 0 < value <= MAX_TTL:
        raise argparse.ArgumentTypeError(
            f"must be a whole number of seconds, 1..{MAX_TTL}, got {text!r}"
        )
    return value


def _events(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    bad = [name for name in names if not is_valid_event_name(name)]
    if bad:
        raise argparse.ArgumentTypeError(f"invalid event name {bad[0]!r}")
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--events",
        type=_events,
        metavar="a,b",
        help="event types the token may receive (default: all); an empty list: pings only",
    )
    parser.add_argument(
        "--ttl",
        type=_ttl,
        default=DEFAULT_TTL,
        metavar="SECONDS",
        help=f"seconds until the token expires; its streams end then [default {DEFAULT_TTL}]",
    )
    parser.add_argument("--sub", metavar="NAME", help="who the token is for (logged on connect)")


def run(args: argparse.Namespace) -> int:
    try:
        secret = secret_from_environ(os.environ, SECRET_ENV)
    except SecretFileError as exc:
        print(f"connectome-sse token: {exc}", file=sys.stderr)
        return 2
    if not secret:
        print(
            f"connectome-sse token: {SECRET_ENV} (or {SECRET_ENV}_FILE) is not set",
            file=sys.stderr,
        )
        return 2
    key = secret.encode()
    if len(key) < MIN_SECRET_BYTES:
        where = f"{SECRET_ENV}_FILE" if os.environ.get(f"{SECRET_ENV}_FILE") else SECRET_ENV
        print(
            f"connectome-sse token: {where}: must be at least {MIN_SECRET_BYTES} bytes",
            file=sys.stderr,
        )
        return 2
    token = TokenVerifier(key).mint(ttl=args.ttl, sub=args.sub, events=args.events)
    print(token)
    return 0
