"""The relay's own robustness: supervised tasks, truthful readiness, quiet logs, one fate."""

from __future__ import annotations

import asyncio
import json
import logging
from unittest.mock import ANY

import pytest

from connectome_core.settings import load_settings
from connectome_sse.localrun.wait import until
from sse_gateway.app import create_app
from sse_gateway.framing import Frame
from sse_gateway.health_watch import HealthWatch
from sse_gateway.history import event_id
from sse_gateway.hub import Hub
from sse_gateway.metrics import GatewayMetrics
from sse_gateway.opener import StreamOpener
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


def strict_json(text: str | bytes) -> object:
    """``json.loads`` that refuses NaN and Infinity, as a browser's ``JSON.parse`` does."""

    def refuse(constant: str) -> object:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def replay_after(relay: Relay, last_id: str, events: frozenset[str] | None) -> list[Frame] | None:
    """What a stream resuming after ``last_id`` would be replayed from this relay's history."""
    return StreamOpener(relay, relay.source, relay.metrics).replay_after(last_id, events)


def published(relay: Relay, event: str, data: bytes) -> str:
    relay.on_message("sse:" + event, data)
    return event_id(event, data)


def test_regression_a_resume_never_reveals_an_event_outside_the_stream_s_events() -> None:
    relay = make_relay(MemorySource(), Hub())
    public = published(relay, "public", b"p0")
    secret = published(relay, "secret_ops", b"launch codes")
    published(relay, "public", b"p1")
    assert replay_after(relay, public, frozenset({"public"})) is not None  # its own: replayed
    # Someone allowed only `public` who guesses a secret payload: the same answer as a
    # wrong guess, whether the guess is right or not.
    assert replay_after(relay, secret, frozenset({"public"})) is None
    assert (
        replay_after(relay, event_id("secret_ops", b"wrong guess"), frozenset({"public"})) is None
    )
    assert replay_after(relay, secret, None) is not None  # a stream allowed everything resumes


def test_regression_a_type_evicted_whole_by_the_byte_cap_forces_a_resync() -> None:
    # Health n1, x, health n2, then enough z to push x (the only one of its type) out.
    relay = Relay(Hub(), MemorySource(), GatewayMetrics(), max_event_bytes=2 << 20, ping_interval=5)
    first = published(relay, "connectome_health", b'{"ts": 1}')
    published(relay, "x", b"x" * 1_000_000)
    published(relay, "connectome_health", b'{"ts": 2}')
    for n in range(33):
        published(relay, "z", b"%02d" % n + b"z" * 1_000_000)
    assert relay.history.newest_id("x") is None  # x has left the history
    assert replay_after(relay, first, None) is None  # a replay without x would be a silent gap


@pytest.mark.parametrize(
    "payload",
    [b'{"ts": 1' + b"0" * 400 + b"}", b'{"ts": NaN}', b'{"ts": -Infinity}', b'{"ts": 1e400}'],
)
def test_regression_a_health_with_an_unusable_ts_has_one_fate_and_strict_json(
    payload: bytes,
) -> None:
    hub, live = Hub(), Recorder()
    relay = make_relay(MemorySource(), hub)
    before = published(relay, "connectome_health", b'{"ts": 1.5}')
    with hub.subscription(live):
        relay.on_message("sse:connectome_health", payload)
    replay = replay_after(relay, before, None)
    assert replay is not None
    replayed = [f.data for f in replay]
    assert replayed == live.frames  # relayed live and replayed alike
    assert len(live.frames) == 1 and payload in live.frames[0]
    # The ts cannot be told: treated as absent, and what the gateway writes stays JSON.
    stale = relay.health.stale_frame().data
    assert strict_json(stale.split(b"data: ", 1)[1]) == {"age": ANY, "last_ts": None}
    strict_json(relay.ping_frame().split(b"data: ", 1)[1])


def test_regression_a_bug_in_the_history_never_splits_a_message_s_fate() -> None:
    hub, live = Hub(), Recorder()
    relay = make_relay(MemorySource(), hub)
    before = published(relay, "a", b"0")
    add = relay.history.add

    def broken(event: str, frame: Frame) -> None:
        add(event, frame)  # in the history, and then a bug
        raise RuntimeError("a bug in the history")

    relay.history.add = broken  # type: ignore[method-assign]
    with hub.subscription(live):
        relay.on_message("sse:a", b"1")
    assert live.frames and live.frames[0].endswith(b"data: 1\n\n")  # relayed live
    assert replay_after(relay, before, None) is None  # and no replay can skip it: resync


def test_streams_opening_in_the_same_tenth_of_a_second_share_one_stale_frame() -> None:
    clock = [100.0]
    watch = HealthWatch(stale_after=5.0, clock=lambda: clock[0])
    clock[0] += 7.01
    first = watch.stale_frame()
    assert watch.stale_frame() is first
    clock[0] += 0.2
    later = watch.stale_frame()
    assert later is not first and b'"age": 7.2' in later.data
