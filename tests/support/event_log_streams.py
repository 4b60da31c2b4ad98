"""Black-box helpers for the gateway side of the event log: publishing through the log
from outside (``connectome-sse publish --lines`` as a real process, a retrying EVAL that
follows a failover), cutting the gateway's subscription, and judging what streams got.

``Tally`` says what a stream received of a numbered sequence (received, duplicates,
reordered, missing) so a test can print it and assert on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from connectome_core.contract import HEALTH_STALE_EVENT, PING_EVENT
from connectome_core.event_log import LOG_KEY, log_event_id
from connectome_core.publishing import Published, publish_logged, publish_many
from connectome_sse.localrun.processes import console_script
from connectome_sse.localrun.sse_clients import StreamRecorder
from connectome_sse.sse_client import ServerEvent

PUBLISHED_LINE = re.compile(r"^line (\d+): published as (\S+) ", re.MULTILINE)
# What a stream gets whatever happens to the log: left out of "what did it receive".
BACKGROUND = frozenset({PING_EVENT, HEALTH_STALE_EVENT})


class LinesProcess:
    """``connectome-sse publish --lines EVENT`` as a real process on ``url``, fed by the test."""

    def __init__(self, url: str, event: str, env: Mapping[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            console_script("connectome-sse", "publish", "--lines", event),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={"REDIS_URL": url, "PATH": "/usr/bin:/bin", **(env or {})},
        )
        self.out = ""
        self.err = ""

    def feed(self, lines: Sequence[str], rate: float | None = None) -> None:
        """Write ``lines``, ``rate`` per second (all at once when None), then end stdin."""
        assert self.process.stdin is not None
        start = time.monotonic()
        for n, line in enumerate(lines):
            if rate is not None:
                due = start + n / rate  # pacing a load generator, not waiting for a result
                while (now := time.monotonic()) < due:
                    time.sleep(min(due - now, 0.002))
            self.process.stdin.write(line.encode() + b"\n")
            self.process.stdin.flush()

    def finish(self, timeout: float = 30.0) -> int:
        """Close stdin, wait for the end; the exit status (stdout, stderr kept)."""
        out, err = self.process.communicate(timeout=timeout)
        self.out, self.err = out.decode(), err.decode()
        return self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate(timeout=10)

    def printed_ids(self) -> dict[int, str]:
        """Line number -> the log id the command printed for it."""
        return {int(n): ident for n, ident in PUBLISHED_LINE.findall(self.out)}


def publish_lines(
    url: str, event: str, lines: Sequence[str], env: Mapping[str, str] | None = None
) -> LinesProcess:
    """Every line published at once through ``publish --lines``; fails unless all were."""
    process = LinesProcess(url, event, env)
    try:
        process.feed(lines)
        status = process.finish()
    finally:
        process.kill()
    assert status == 0, process.err
    assert len(process.printed_ids()) == len(lines), process.err
    return process


async def publish_notes(url: str, *data: str, event: str = "note") -> list[Published]:
    """``event`` events through the log, in one pipeline, as the library publishes them."""
    client = aioredis.Redis.from_url(url, socket_timeout=5)
    try:
        results = await publish_many(client, [(event, d) for d in data])
    finally:
        await client.aclose()
    published = [r for r in results if isinstance(r, Published)]
    assert len(published) == len(data), results
    return published


class SubscriptionCutter:
    """A thread sending ``CLIENT KILL TYPE pubsub`` every ``every`` s until ``stop()``."""

    def __init__(self, client: redis.Redis, every: float) -> None:
        self.client = client
        self.every = every
        self.kills = 0  # subscriptions cut
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            killed = self.client.client_kill_filter(_type="pubsub")  # CLIENT KILL TYPE pubsub
            assert isinstance(killed, int)
            self.kills += killed

    def __enter__(self) -> SubscriptionCutter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def logged_ids(client: redis.Redis, event: str) -> dict[str, str]:
    """Data -> log id of every entry of ``event`` in the log (data unique per entry)."""
    entries: Any = client.xrange(LOG_KEY)
    ids: dict[str, str] = {}
    for sid, fields in entries:
        if fields[b"event"].decode() == event:
            data = fields[b"data"].decode()
            assert data not in ids, f"{data!r} logged twice"
            ids[data] = log_event_id(sid, event, data)
    return ids


def received(stream: StreamRecorder) -> list[ServerEvent]:
    """What the stream got but pings and health_stale, in order."""
    return [e for e in stream.events if e.event not in BACKGROUND]


def resyncs(stream: StreamRecorder) -> list[str]:
    return stream.of("resync")


@dataclass
class Tally:
    """What one stream received of a numbered sequence."""

    received: int = 0
    duplicates: int = 0  # arrivals of a number already received
    reordered: int = 0  # first arrivals of a number below one already received
    missing: list[int] = field(default_factory=list)  # expected, never received
    twice: list[int] = field(default_factory=list)  # numbers received more than once

    def line(self) -> str:
        return (
            f"received {self.received}, duplicates {self.duplicates}, reordered "
            f"{self.reordered}, missing {len(self.missing)}"
        )

    def detail(self) -> str:
        """``line()`` and the first numbers missing and received twice (an assertion's text)."""
        return f"{self.line()}; missing {self.missing[:20]}; twice {self.twice[:20]}"


def tally(got: Iterable[int], expected: Iterable[int]) -> Tally:
    result = Tally()
    seen: set[int] = set()
    highest: int | None = None
    for n in got:
        result.received += 1
        if n in seen:
            result.duplicates += 1
            if n not in result.twice:
                result.twice.append(n)
            continue
        if highest is not None and n < highest:
            result.reordered += 1
        seen.add(n)
        highest = n if highest is None else max(highest, n)
    result.missing = sorted(set(expected) - seen)
    return result


async def settle(predicate: Callable[[], object], timeout: float) -> bool:
    """Like ``until``, but answers False at the deadline instead of failing: the test then
    prints its figures before asserting on them."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


@contextlib.asynccontextmanager
async def open_resuming(url: str, last_event_id: str) -> AsyncIterator[StreamRecorder]:
    """One stream on ``url`` sending ``Last-Event-ID``, its response head received."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0, read=None)) as client:
        stream = StreamRecorder(client, url, headers={"Last-Event-ID": last_event_id})
        task = asyncio.create_task(stream.run())
        try:
            async with asyncio.timeout(30):
                await stream.opened.wait()
            yield stream
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


class RetriedLoggedPublish:
    """An ``EventSink`` (``SeqPublisher``'s) publishing through the log with EVAL and
    retrying until a master confirms: through a Sentinel client it follows a failover.

    A failed EVAL may still have run (the reply was lost with the old master). Before each
    retry the log on the current master is searched for the data: found, it counts as
    published and is not sent again. Not found, it is sent again, and its data is noted in
    ``uncertain``: the lost attempt may have reached a gateway from the old master before
    the kill without reaching the new master, so one extra copy of exactly that data is
    the publisher's doing, not a gateway's fault.
    """

    RECENT = 50  # entries searched: the publisher waits on each event, so it is among these

    def __init__(self, client: aioredis.Redis, pause: float = 0.05) -> None:
        self.client = client
        self.pause = pause
        self.uncertain: set[str] = set()
        self.found_after_failure = 0  # failed EVALs that had run after all
        self.attempts_failed = 0

    async def publish_event(self, event: str, data: str) -> int:
        failed = False
        while True:
            try:
                if failed and await self._logged(event, data):
                    self.found_after_failure += 1
                    return 0
                if failed:
                    self.uncertain.add(data)
                return (await publish_logged(self.client, event, data)).receivers
            except (RedisError, OSError):
                failed = True
                self.attempts_failed += 1
                await asyncio.sleep(self.pause)

    async def _logged(self, event: str, data: str) -> bool:
        entries: Any = await self.client.xrevrange(LOG_KEY, count=self.RECENT)
        wanted = {b"event": event.encode(), b"data": data.encode()}
        return any(fields == wanted for _, fields in entries)
