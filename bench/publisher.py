"""Publishing the measured events: Redis PUBLISH (gateway, naive), the same through the
event log (``--through-log``), or HTTP POST (Nchan).

`publish_series` sends `events` payloads on a drift-free schedule at `rate`
per second, stamping each with the time just before it is handed over, and
records what the transport said about receivers (PUBLISH's subscriber count,
Nchan's "active subscribers").
"""

from __future__ import annotations

import asyncio
import re
import time
import urllib.parse
from typing import Any, Protocol

from bench.payload import make_payload


class Publisher(Protocol):
    async def send(self, body: bytes) -> int:
        """Hand one event over; returns the receivers the transport reports (-1: unknown)."""
        ...

    async def aclose(self) -> None: ...


class RedisPublisher:
    def __init__(self, redis_url: str, channel: str) -> None:
        import redis.asyncio as aioredis

        self._redis = aioredis.from_url(redis_url, socket_timeout=10)
        self._channel = channel

    async def send(self, body: bytes) -> int:
        return int(await self._redis.publish(self._channel, body))

    async def aclose(self) -> None:
        await self._redis.aclose()


class LoggedPublisher:
    """The project's own publish: the logged-publish script (``event_log.PUBLISH_LUA``: log
    entry, snapshot, id marker, then the event's PUBLISH, in one atomic step), by EVALSHA.

    The script's text goes to Redis once (SCRIPT LOAD on the first NOSCRIPT), not with
    every event, so the publisher's own cost stays close to a bare PUBLISH's.
    """

    def __init__(self, redis_url: str, event: str) -> None:
        import redis.asyncio as aioredis

        from connectome_core.event_log import PUBLISH_LUA, LogCaps

        self._redis = aioredis.from_url(redis_url, socket_timeout=10)
        self._script = self._redis.register_script(PUBLISH_LUA)
        self._event = event
        self._caps = LogCaps().script_args()

    async def send(self, body: bytes) -> int:
        _, receivers = await self._script(args=[self._event, body, *self._caps])
        return int(receivers)

    async def aclose(self) -> None:
        await self._redis.aclose()


# How each kind of system gets its events, as the results and tables name it.
PUBLISH_PATHS = {"raw": "Redis PUBLISH", "log": "through the event log", "http": "HTTP POST"}


_SUBSCRIBERS = re.compile(rb"subscribers:\s*(\d+)")
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)


class HttpPublisher:
    """Keep-alive HTTP/1.1 POST to a publisher endpoint (Nchan's `nchan_publisher`)."""

    def __init__(self, url: str) -> None:
        u = urllib.parse.urlsplit(url)
        self._host = u.hostname or "127.0.0.1"
        self._port = u.port or 80
        self._head = (
            f"POST {u.path or '/'} HTTP/1.1\r\nHost: {u.netloc}\r\n"
            "Content-Type: application/json\r\nAccept: text/plain\r\n"
        )
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def send(self, body: bytes) -> int:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        assert self._reader is not None
        try:
            self._writer.write(f"{self._head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
            head = await asyncio.wait_for(self._reader.readuntil(b"\r\n\r\n"), 10)
            length = _CONTENT_LENGTH.search(head)
            reply = await self._reader.readexactly(int(length.group(1))) if length else b""
        except BaseException:
            await self.aclose()
            raise
        status = head.split(b" ", 2)[1]
        if not status.startswith(b"2"):
            raise RuntimeError(f"publisher answered HTTP {status.decode(errors='replace')}")
        found = _SUBSCRIBERS.search(reply)
        return int(found.group(1)) if found else -1

    async def aclose(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = self._reader = None


async def publish_series(
    pub: Publisher, run_id: str, events: int, rate: float, payload_bytes: int
) -> dict[str, Any]:
    receivers: list[int] = []
    sent_at: list[float] = []
    errors: dict[str, int] = {}
    worst_lag = 0.0
    start = time.time() + 0.05
    for seq in range(events):
        due = start + seq / rate
        delay = due - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        now = time.time()
        worst_lag = max(worst_lag, now - due)
        try:
            receivers.append(await pub.send(make_payload(run_id, seq, now, payload_bytes)))
            sent_at.append(now)
        except Exception as e:  # counted and reported; the series goes on
            key = f"{type(e).__name__}: {e}"[:80]
            errors[key] = errors.get(key, 0) + 1
    await pub.aclose()
    return {
        "published": len(sent_at),
        "publish_errors": errors,
        "publish_lag_ms_max": round(worst_lag * 1e3, 1),
        "receivers_min": min(receivers, default=None),
        "receivers_max": max(receivers, default=None),
        "t_first": sent_at[0] if sent_at else time.time(),
        "t_last": sent_at[-1] if sent_at else time.time(),
    }
