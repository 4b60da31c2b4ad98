"""`connectome-sse publish EVENT DATA` and `publish --lines EVENT`: events through the event log.

Each event is one atomic step: log entry, snapshot, id marker and channel
(``connectome_core.publishing``). DATA is the event's text, or ``-`` for stdin.
``connectome_health`` data must be a schema-1 payload unless ``--raw``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import ClassVar, TextIO

import redis.asyncio as aioredis
from pydantic import Field, ValidationError
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoPermissionError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from connectome_core.backoff import Backoff
from connectome_core.contract import DEFAULT_MAX_EVENT_BYTES, HEALTH_EVENT
from connectome_core.event_log import LOG_KEY
from connectome_core.log_settings import EventLogSettings
from connectome_core.payload import parse_health_payload
from connectome_core.publishing import Published, check_event_name, publish_logged, publish_many
from connectome_core.redis_connect import async_client, explain_error
from connectome_core.settings import SettingsError, add_setting_flags, settings_from_args
from connectome_sse.cli_redis import CliRedisSettings
from connectome_sse.lines_recovery import already_logged, log_tail
from connectome_sse.stdin_lines import Line, line_batches

HELP = (
    "publish events the proper way: event log, snapshot sse:last:EVENT and channel "
    "sse:EVENT in one atomic step"
)
# Receivers of a PUBLISH are subscriptions: one per gateway process, whatever its clients.
RECEIVERS_NOTE = "gateway processes, not browser clients"
# A cut of a working connection (a restart, a failover): --lines waits for Redis again.
CUT_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)


class PublishSettings(EventLogSettings, CliRedisSettings):
    # Not owning SSE_: the gateway's other settings may share this environment.
    owned_prefixes: ClassVar[tuple[str, ...]] = ()

    max_event_bytes: int = Field(
        DEFAULT_MAX_EVENT_BYTES,
        ge=1,
        validation_alias="SSE_MAX_EVENT_BYTES",
        description="refuse data larger than this: gateways would drop it",
    )


class PublishError(Exception):
    """Why the event was not published; one line. ``status`` is the exit status."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "event", metavar="EVENT", nargs="?", help="event name, [A-Za-z0-9_.-]{1,64}"
    )
    parser.add_argument(
        "data", metavar="DATA", nargs="?", help="the event's data, or - to read stdin"
    )
    parser.add_argument(
        "--lines",
        metavar="EVENT",
        help="publish one EVENT per line of stdin, as each line arrives (tail -f ... |)",
    )
    parser.add_argument(
        "--raw", action="store_true", help="publish the data as it is, without validating it"
    )
    add_setting_flags(parser, PublishSettings)


def validation_summary(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err["loc"]) or "payload"
        parts.append(f"{where}: {err['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def check_event(event: str) -> None:
    try:
        check_event_name(event)
    except ValueError as exc:
        raise PublishError(str(exc)) from None


def prepare(event: str, data: str, raw: bool, max_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> str:
    """The text to publish for ``event``, or a PublishError saying what is wrong with it."""
    check_event(event)
    if not data:
        raise PublishError("the data is empty: nothing published (an event needs data)")
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


def _client(settings: PublishSettings) -> aioredis.Redis:
    # One try: a one-shot command answers at once (redis-py would retry a refused
    # connection, password or handshake 3 times, backing off, before the one line).
    return async_client(
        settings.redis_target(),
        socket_connect_timeout=3,
        socket_timeout=5,
        retry=Retry(NoBackoff(), retries=0),
    )


async def _publish(settings: PublishSettings, event: str, data: str) -> Published:
    client = _client(settings)
    try:
        return await publish_logged(client, event, data, settings.log_caps())
    except (RedisError, OSError) as exc:
        # One line naming the setting to fix: unreachable, bad certificate, NOPERM...
        raise PublishError(await explain_error(exc, settings.redis_target()), 1) from None
    finally:
        await client.aclose()


def _subscribers(count: int) -> str:
    return f"{count} subscriber{'' if count == 1 else 's'}"


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(PublishSettings, args)
        if args.lines is not None:
            if args.event is not None:
                raise PublishError("--lines EVENT takes the data from stdin: no EVENT DATA")
            check_event(args.lines)
            return asyncio.run(LinePublisher(settings, args.lines, args.raw).run())
        if args.event is None or args.data is None:
            raise PublishError("give EVENT DATA (DATA - reads stdin), or --lines EVENT")
        check_event(args.event)
        text = prepare(args.event, _read_data(args.data), args.raw, settings.max_event_bytes)
        published = asyncio.run(_publish(settings, args.event, text))
    except (SettingsError, PublishError) as exc:
        print(f"connectome-sse publish: {exc}", file=sys.stderr)
        return exc.status if isinstance(exc, PublishError) else 2
    size = len(text.encode("utf-8", errors="surrogateescape"))
    print(
        f"published {args.event} ({size} bytes) as {published.event_id}: logged in {LOG_KEY}, "
        f"snapshot sse:last:{args.event} set, {_subscribers(published.receivers)} on "
        f"sse:{args.event} ({RECEIVERS_NOTE})"
    )
    return 0


class LinePublisher:
    """``--lines EVENT``: every line of stdin as one event, published as it arrives, over
    one connection (a pipeline when several lines came together). A bad line is reported
    and skipped; the exit status says whether any was."""

    def __init__(
        self,
        settings: PublishSettings,
        event: str,
        raw: bool,
        out: TextIO | None = None,
        err: TextIO | None = None,
    ) -> None:
        self.settings = settings
        self.event = event
        self.raw = raw
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.published = 0
        self.refused = 0
        # The log's newest entry this command knows to be before its unconfirmed lines;
        # None: the log cannot be read (no ACL for it), so a cut stops the command.
        self.after: str | None = None

    async def run(self, fd: int | None = None) -> int:
        client = _client(self.settings)
        try:
            # Connect now, not at the first line: under `tail -f` that may be hours away,
            # and a wrong URL or password should say so at once.
            pool = client.connection_pool
            await pool.release(await pool.get_connection())  # type: ignore[no-untyped-call]
            try:
                self.after = await log_tail(client)
            except NoPermissionError:
                self.after = None
            async for lines in line_batches(
                sys.stdin.fileno() if fd is None else fd, self.settings.max_event_bytes
            ):
                ready = [(line, text) for line in lines if (text := self._prepare(line))]
                if ready:
                    await self._publish_through_cuts(client, ready)
        except (RedisError, OSError) as exc:
            why = await explain_error(exc, self.settings.redis_target())
            self._say(self.err, f"{why} (stopped after {self.published} lines published)")
            return 1
        finally:
            await client.aclose()
        self._say(
            self.err,
            f"{self.published} lines published as {self.event} events, {self.refused} refused "
            f"(subscribers are {RECEIVERS_NOTE})",
        )
        return 2 if self.refused else 0

    async def _publish_through_cuts(
        self, client: aioredis.Redis, ready: list[tuple[Line, str]]
    ) -> None:
        """Publish ``ready``; when Redis is cut, wait for it, then send again only the lines
        the log does not hold (a lost reply is not a lost publish)."""
        backoff = Backoff(base=0.1, cap=2.0)
        lost = False
        while ready:
            try:
                if lost:
                    ready = await self._skip_logged(client, ready)
                    self._say(self.err, f"Redis is back; sending {len(ready)} lines")
                    lost = False
                await self._publish(client, ready)
                return
            except CUT_ERRORS as exc:
                if self.after is None:
                    raise  # the log cannot be checked: sending again might double a line
                if not lost:
                    why = await explain_error(exc, self.settings.redis_target())
                    self._say(self.err, f"{why}; waiting for Redis ({len(ready)} lines wait)")
                lost = True
                await asyncio.sleep(backoff.next_delay())

    async def _skip_logged(
        self, client: aioredis.Redis, ready: list[tuple[Line, str]]
    ) -> list[tuple[Line, str]]:
        assert self.after is not None
        found = await already_logged(client, self.after, self.event, [t for _, t in ready])
        for (line, _), (stream_id, event_id) in zip(ready, found, strict=False):
            self.published += 1
            self.after = stream_id
            self._say(self.out, f"line {line.number}: published as {event_id} (before the cut)")
        return ready[len(found) :]

    async def _publish(self, client: aioredis.Redis, ready: list[tuple[Line, str]]) -> None:
        results = await publish_many(
            client, [(self.event, text) for _, text in ready], self.settings.log_caps()
        )
        for (line, text), result in zip(ready, results, strict=True):
            if isinstance(result, NoPermissionError):
                raise result  # every line would fail the same way: one line, exit 1
            if isinstance(result, Exception):
                self._refuse(line, f"Redis refused it: {result}")
                continue
            self.published += 1
            self.after = result.stream_id
            size = len(text.encode("utf-8"))
            self._say(
                self.out,
                f"line {line.number}: published as {result.event_id} ({size} bytes, "
                f"{_subscribers(result.receivers)})",
            )

    def _prepare(self, line: Line) -> str | None:
        """The line's text to publish, or None (reported) for a bad one; blank lines are
        skipped quietly."""
        limit = self.settings.max_event_bytes
        if line.data is None:
            self._refuse(line, f"{line.size} bytes; gateways drop events over {limit}")
            return None
        if not line.data:
            return None
        try:
            return prepare(self.event, line.data.decode("utf-8"), self.raw, limit)
        except UnicodeDecodeError:
            self._refuse(line, "not valid UTF-8")
        except PublishError as exc:
            self._refuse(line, str(exc))
        return None

    def _refuse(self, line: Line, why: str) -> None:
        self.refused += 1
        self._say(self.err, f"line {line.number} skipped: {why}")

    def _say(self, stream: TextIO, text: str) -> None:
        # Flushed per line: under `tail -f` a reader must see each line when it happens.
        print(f"connectome-sse publish: {text}" if stream is self.err else text, file=stream)
        stream.flush()
