"""`connectome-sse listen URL`: a live SSE stream in the terminal, one readable line per event.

Reconnects like a browser (after ``retry``, with ``Last-Event-ID``); a gateway
that cannot be reached at first, or refuses the stream, is one line and exit 1.
Events go to stdout, connection notes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from types import FrameType
from urllib.parse import parse_qsl, urlencode, urlunsplit

import httpx

from connectome_core.contract import STREAM_PATH, is_valid_event_name
from connectome_sse import client_options
from connectome_sse.gateway_url import BasicCredentials, GatewayUrlError, split_gateway_url
from connectome_sse.listen_format import format_event, json_line
from connectome_sse.sse_client import EventSourceReader, GatewayError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", metavar="URL", help="gateway URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--events", help="comma-separated event types to receive (default: all)")
    parser.add_argument(
        "--json", action="store_true", help="one JSON object per event, data exactly as received"
    )
    parser.add_argument(
        "--color", choices=("auto", "always", "never"), default="auto", help="colour the status"
    )
    parser.add_argument("--count", type=_positive_int, metavar="N", help="exit after N events")
    parser.add_argument(
        "--idle-timeout",
        type=_positive_float,
        default=60.0,
        metavar="S",
        help="reconnect when nothing (not even a ping) arrived for S seconds [default 60]",
    )
    parser.add_argument(
        "--last-event-id",
        metavar="ID",
        default="",
        help="resume after this event id (as a reconnecting browser does)",
    )
    client_options.add_arguments(parser)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text!r}")
    return value


class UsageError(ValueError):
    pass


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def stream_url(url: str, events: str | None) -> str:
    """``url`` pointing at ``/api/sse`` (a bare gateway URL gets the path), with ``?events=``;
    without its user info (see :func:`credentials`)."""
    try:
        parts, _ = split_gateway_url(url)
    except GatewayUrlError as exc:
        raise UsageError(str(exc)) from None
    path = parts.path if parts.path not in ("", "/") else STREAM_PATH
    query = parse_qsl(parts.query, keep_blank_values=True)
    if events is not None:
        names = [name.strip() for name in events.split(",") if name.strip()]
        bad = [name for name in names if not is_valid_event_name(name)]
        if not names or bad:
            raise UsageError(f"--events: invalid event name {(bad or [events])[0]!r}")
        query = [(k, v) for k, v in query if k != "events"] + [("events", ",".join(names))]
    return urlunsplit((parts.scheme, parts.netloc, path, urlencode(query, safe=","), ""))


def credentials(url: str) -> BasicCredentials | None:
    """The user info of ``url`` (a proxy's Basic auth), sent as httpx's ``auth``."""
    try:
        return split_gateway_url(url)[1]
    except GatewayUrlError:
        return None


def _use_colour(choice: str) -> bool:
    if choice != "auto":
        return choice == "always"
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ


def _note(message: str) -> None:
    print(f"listen: {message}", file=sys.stderr, flush=True)


def _end_on_interrupt(signum: int, frame: FrameType | None) -> None:
    """Ctrl-C ends listen at once, with status 130.

    A KeyboardInterrupt raised wherever the interpreter happens to be can land
    inside the HTTP client's own bookkeeping (a lock taken, a connection being
    returned to its pool), and the clean-up that follows may then wait for
    ever: seen once in CI as a listen that outlived SIGINT by 30 s. There is
    nothing to clean up that the kernel does not do better (the socket closes
    with the process), so print what is printed and leave.
    """
    # A broken pipe, or a flush interrupted mid-write: nothing more to save.
    with contextlib.suppress(OSError, ValueError, RuntimeError):
        sys.stdout.flush()
    os._exit(130)


def run(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGINT, _end_on_interrupt)
    try:
        url = stream_url(args.url, args.events)
        options = client_options.from_args(args)
    except (UsageError, client_options.UsageError) as exc:
        print(f"connectome-sse listen: {exc}", file=sys.stderr)
        return 2
    colour = _use_colour(args.color)
    timeout = httpx.Timeout(10.0, read=args.idle_timeout)
    seen = 0
    with httpx.Client(
        timeout=timeout,
        headers=options.headers(),
        verify=options.verify(),
        auth=credentials(args.url),
    ) as client:
        reader = EventSourceReader(url, client, on_status=_note)
        reader.last_event_id = args.last_event_id.strip()
        try:
            for event in reader.events():
                now = time.time()
                line = json_line(event, now) if args.json else format_event(event, now, colour)
                print(line, flush=True)
                seen += 1
                if args.count is not None and seen >= args.count:
                    return 0
        except GatewayError as exc:
            print(f"connectome-sse listen: {exc}", file=sys.stderr)
            return 1
        except BrokenPipeError:
            # `listen … | head`: the reader went away, which is not an error.
            sys.stderr.close()
            return 0
    return 0
