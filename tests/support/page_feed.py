"""Numbered payloads published for the pages the way the project publishes (snapshot + channel)."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid

import redis.asyncio as aioredis

from connectome_core.publishing import publish_event
from connectome_sse.localrun.wait import wait_for


class Feed(threading.Thread):
    """Publishes ``payloads`` as ``event`` through the project's path, one every ``interval`` s."""

    def __init__(self, redis_url: str, event: str, payloads: list[str], interval: float) -> None:
        super().__init__(daemon=True)
        self.redis_url, self.event, self.payloads, self.interval = (
            redis_url, event, payloads, interval,
        )  # fmt: skip
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._publish())
        except BaseException as exc:
            self.error = exc

    async def _publish(self) -> None:
        client = aioredis.Redis.from_url(self.redis_url)
        try:
            for data in self.payloads:
                await publish_event(client, self.event, data)
                self.sent += 1
                await asyncio.sleep(self.interval)
        finally:
            await client.aclose()

    def wait_sent(self, count: int) -> None:
        wait_for(lambda: self.sent >= count, 20, what=f"{count} events published")

    def finish(self) -> None:
        self.join(60)
        assert self.error is None, f"publishing failed: {self.error!r}"
        assert self.sent == len(self.payloads)


def payloads(event: str, count: int) -> list[str]:
    """``count`` distinct payloads (distinct ids), marked with this run."""
    run = uuid.uuid4().hex[:8]
    return [json.dumps({"event": event, "n": n, "run": run}) for n in range(count)]


def publish(redis_url: str, event: str, datas: list[str], interval: float = 0.0) -> None:
    feed = Feed(redis_url, event, datas, interval)
    feed.start()
    feed.finish()
