"""`connectome-sse publish EVENT DATA`: publish one event the proper way (snapshot + channel).

DATA is the event's text, or ``-`` to read it from stdin. For ``connectome_health``
it must be a schema-1 payload (``--raw`` skips the check); a missing ``ts`` is
set to now and ``schema`` defaults to 1, so a hand-written payload can be short.
The validated payload is published as compact JSON with its wire names.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

from pydantic import ValidationError
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from connectome_core.contract import HEALTH_EVENT, is_valid_event_name
from connectome_core.payload import parse_health_payload
from connectome_core.publishing import publish_event
from connectome_core.redis_connect import async_client, explain_error
from connectome_core.redis_target import RedisTarget
from connectome_core.settings import SettingsError, add_setting_flags, settings_from_args
from connectome_sse.cli_redis import CliRedisSettings

HELP = "publish one event: SET sse:last:EVENT and PUBLISH sse:EVENT in one MULTI"

DEFAULT_MAX_EVENT_BYTES = 1_048_576


class PublishError(Exception):
    """Why the event was not published; one line. ``status`` is the exit status."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("event", metavar="EVENT", help="event name, [A-Za-z0-9_.-]{1,64}")
    parser.add_argument("data", metavar="DATA", help="the event's data, or - to read stdin")
    parser.add_argument(
        "--raw", action="store_true", help="publish DATA as it is, without validating it"
    )
    add_setting_flags(parser, CliRedisSettings)


def validation_summary(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err["loc"]) or "payload"
        parts.append(f"{where}: {err['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def prepare(event: str, data: str, raw: bool, max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> str:
    """The text to publish for ``event``, or a PublishError saying what is wrong with it."""
    if not is_valid_event_name(event):
        raise PublishError(f"invalid event name {event!r}: use 1 to 64 of A-Z a-z 0-9 _ . -")
    if event == HEALTH_EVENT and not raw:
        data = _health_json(data)
    size = len(data.encode("utf-8", errors="surrogateescape"))
    if size > max_bytes:
        raise PublishError(
            f"data is {size} bytes; gateways drop events over {max_bytes} (SSE_MAX_EVENT_BYTES)"
        )
    return data


def _health_json(data: str) -> str:
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise PublishError(f"{HEALTH_EVENT} data is not JSON: {exc}") from None
    if isinstance(document, dict) and "ts" not in document:
        document["ts"] = round(time.time(), 3)
    try:
        payload = parse_health_payload(json.dumps(document))
    except ValidationError as exc:
        raise PublishError(
            f"{HEALTH_EVENT} data is not a schema-1 payload: {validation_summary(exc)} "
            "(--raw publishes it anyway)"
        ) from None
    return payload.to_json()


def _read_data(data: str) -> str:
    if data != "-":
        return data
    raw = sys.stdin.buffer.read()
    try:
        return raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise PublishError("stdin is not valid UTF-8") from None


def _max_event_bytes() -> int:
    try:
        return int(os.environ.get("SSE_MAX_EVENT_BYTES", DEFAULT_MAX_EVENT_BYTES))
    except ValueError:
        return DEFAULT_MAX_EVENT_BYTES


async def _publish(target: RedisTarget, event: str, data: str) -> int:
    # One try: a one-shot command answers at once (redis-py would retry a refused
    # connection, password or handshake 3 times, backing off, before the one line).
    client = async_client(
        target, socket_connect_timeout=3, socket_timeout=5, retry=Retry(NoBackoff(), retries=0)
    )
    try:
        return await publish_event(client, event, data)
    except (RedisError, OSError) as exc:
        # One line naming the setting to fix: unreachable, bad certificate, NOPERM...
        raise PublishError(await explain_error(exc, target), status=1) from None
    finally:
        await client.aclose()


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(CliRedisSettings, args)
        text = prepare(args.event, _read_data(args.data), args.raw, _max_event_bytes())
        receivers = asyncio.run(_publish(settings.redis_target(), args.event, text))
    except SettingsError as exc:
        print(f"connectome-sse publish: {exc}", file=sys.stderr)
        return 2
    except PublishError as exc:
        print(f"connectome-sse publish: {exc}", file=sys.stderr)
        return exc.status
    size = len(text.encode("utf-8", errors="surrogateescape"))
    plural = "" if receivers == 1 else "s"
    print(
        f"published {args.event} ({size} bytes): snapshot sse:last:{args.event} set, "
        f"{receivers} subscriber{plural} on sse:{args.event}"
    )
    return 0
