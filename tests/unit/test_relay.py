"""The relay's own robustness (issue 16): supervised tasks, truthful readiness, quiet logs."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from connectome_sse.localrun.wait import until
from connectome_sse.settings import load_settings
from sse_gateway.app import create_app
from sse_gateway.framing import Frame
from sse_gateway.hub import Hub
from sse_gateway.metrics import GatewayMetrics
from sse_gateway.relay import Relay
from sse_gateway.settings import GatewaySettings
from sse_gateway.source import MemorySource, SourceListener
from tests.support.asgi import ASGIClient, lifespan
from tests.support.subscribers import Recorder


class DyingSource(MemorySource):
    """Its first ``run`` raises (a bug in the reader); the next waits for ``allow``."""

    def __init__(self) -> None:
        super().__init__()
        self.runs = 0
        self.allow = asyncio.Event()

    async def run(self, listener: SourceListener) -> None:
        self.runs += 1
        if self.runs == 1:
            listener.on_connected()
            await asyncio.sleep(0)
            raise RuntimeError("a bug in the reader")
        await self.allow.wait()
        await super().run(listener)


def make_relay(source: MemorySource, hub: Hub, ping: float = 0.05) -> Relay:
    return Relay(hub, source, GatewayMetrics(), max_event_bytes=1000, ping_interval=ping)


def redis_field(frame: bytes) -> str:
    data = frame.split(b"data: ", 1)[1].strip()
    return str(json.loads(data)["redis"])


async def test_regression_a_reader_that_dies_is_restarted_and_readiness_says_so() -> None:
    hub, client = Hub(), Recorder()
    source = DyingSource()
    relay = make_relay(source, hub)
    with hub.subscription(client):
        relay.start()
        try:
            await until(lambda: source.runs == 2, what="the reader restarted")
            # Dead and not yet back: not ready, and the pings say so.
            assert not relay.ready and not relay.redis_up
            await until(lambda: len(client.frames) >= 2, what="pings while the reader is down")
            assert redis_field(client.frames[-1]) == "down"
            source.allow.set()
            await until(lambda: relay.ready, what="ready again")
            source.publish("sse:e", b"after")
            relayed = b"event: e\ndata: after\n\n"  # after its id: line
            await until(lambda: any(f.endswith(relayed) for f in client.frames), what="relayed")
        finally:
            await relay.stop()


async def test_regression_a_failing_ping_tick_does_not_end_the_pings() -> None:
    class FlakyHub(Hub):
        def __init__(self) -> None:
            super().__init__()
            self.ticks = 0

        def broadcast(self, frame: Frame) -> int:
            self.ticks += 1
            if self.ticks == 1:
                raise RuntimeError("a bug in a writer")
            return super().broadcast(frame)

    hub, client = FlakyHub(), Recorder()
    relay = make_relay(MemorySource(), hub)
    with hub.subscription(client):
        relay.start()
        try:
            await until(lambda: len(client.frames) >= 2, what="pings after a failed tick")
            assert relay.ready
        finally:
            await relay.stop()


def test_regression_a_flood_of_bad_messages_logs_one_line_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    relay = make_relay(MemorySource(), Hub())
    relay.drop_log.clock = lambda: now[0]
    with caplog.at_level(logging.WARNING, logger="sse_gateway.relay"):
        for _ in range(500):
            relay.on_message("sse:e", b"\xff\xfe")
        assert len(caplog.records) == 1
        now[0] += 60
        relay.on_message("sse:e", b"\xff")
    assert len(caplog.records) == 2
    assert "(499 similar lines suppressed)" in caplog.records[-1].getMessage()
    assert relay.metrics.registry is not None
    dropped = relay.metrics.registry.get_sample_value(
        "sse_events_dropped_total", {"reason": "invalid_utf8"}
    )
    assert dropped == 501


async def test_regression_readyz_is_503_while_the_reader_is_dead() -> None:
    source = DyingSource()
    settings = load_settings(GatewaySettings, {"SSE_PING_INTERVAL": "0.05"})
    app = create_app(settings, source=source)
    async with lifespan(app):
        await until(lambda: source.runs == 2, what="the reader restarted")
        ready = await ASGIClient(app, path="/readyz").response()
        assert ready.status == 503
        assert json.loads(ready.body)["redis"] == "down"
        source.allow.set()
        await until(lambda: app.gateway.ready, what="ready again")
        ready = await ASGIClient(app, path="/readyz").response()
        assert ready.status == 200
