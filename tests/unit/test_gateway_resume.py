"""Ids, resume, reserved names and the publisher's health freshness through the in-process app."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from connectome_core.settings import load_settings
from sse_gateway.app import GatewayApp, create_app
from sse_gateway.history import event_id
from sse_gateway.settings import GatewaySettings
from sse_gateway.source import MemorySource
from tests.support.asgi import ASGIClient, lifespan


@pytest.fixture
async def source() -> MemorySource:
    return MemorySource()


@pytest.fixture
async def app(source: MemorySource) -> AsyncIterator[GatewayApp]:
    env = {"SSE_PING_INTERVAL": "0.1", "SSE_HEALTH_STALE_AFTER": "0.5", "SSE_HISTORY": "100"}
    app = create_app(load_settings(GatewaySettings, env), source=source)
    async with lifespan(app):
        yield app


def real(client: ASGIClient) -> list[tuple[str, str, str]]:
    return [(e.event, e.data, e.id) for e in client.events() if e.event != "ping"]


async def test_events_carry_content_ids_and_snapshots_the_id_of_their_message(
    app: GatewayApp, source: MemorySource
) -> None:
    source.publish("sse:a", b"one", snapshot=True)
    client = ASGIClient(app, query="events=a").start()
    await client.wait_until(lambda c: b"one" in c.body)
    source.publish("sse:a", b"two")
    await client.wait_until(lambda c: b"two" in c.body)
    assert real(client) == [
        ("a", "one", event_id("a", b"one")),
        ("a", "two", event_id("a", b"two")),
    ]
    await client.disconnect()


async def test_resume_replays_exactly_what_was_missed_then_live(
    app: GatewayApp, source: MemorySource
) -> None:
    for n in range(3):
        source.publish("sse:a", b"%d" % n, snapshot=True)
    header = [(b"last-event-id", event_id("a", b"0").encode())]
    client = ASGIClient(app, query="events=a", headers=header).start()
    await client.wait_until(lambda c: b"2" in c.body)
    source.publish("sse:a", b"3")
    await client.wait_until(lambda c: b"3" in c.body)
    assert [data for _, data, _ in real(client)] == ["1", "2", "3"]
    await client.disconnect()
    by_query = ASGIClient(app, query="events=a&lastEventId=" + event_id("a", b"2")).start()
    await by_query.wait_until(lambda c: c.status == 200)
    source.publish("sse:a", b"4")
    await by_query.wait_until(lambda c: b"4" in c.body)
    assert [data for _, data, _ in real(by_query)] == ["3", "4"]
    await by_query.disconnect()


async def test_an_unknown_or_ambiguous_id_gets_resync_then_the_snapshots(
    app: GatewayApp, source: MemorySource
) -> None:
    source.publish("sse:a", b"dup", snapshot=True)
    source.publish("sse:a", b"dup", snapshot=True)
    for last in ("0123456789abcdef", event_id("a", b"dup")):
        client = ASGIClient(app, headers=[(b"last-event-id", last.encode())]).start()
        await client.wait_until(lambda c: b"dup" in c.body)
        events = real(client)
        assert events[0][:2] == ("resync", '{"reason": "unknown_id"}')
        assert events[0][2] == ""  # gateway-made: no id
        assert events[1][:2] == ("a", "dup")
        await client.disconnect()


async def test_probe_streams_get_no_replay_and_no_resync(
    app: GatewayApp, source: MemorySource
) -> None:
    source.publish("sse:a", b"x", snapshot=True)
    client = ASGIClient(app, query="probe=1", headers=[(b"last-event-id", b"nope")]).start()
    await client.wait_until(lambda c: b"probe" in c.body)
    assert [e for e, _, _ in real(client)] == ["probe"]
    await client.disconnect()


@pytest.mark.parametrize("name", ["ping", "resync", "health_stale", "probe"])
async def test_reserved_names_are_dropped_from_channels_and_snapshots(
    app: GatewayApp, source: MemorySource, name: str
) -> None:
    source.snapshots[name] = b"forged snapshot"
    client = ASGIClient(app).start()
    await client.wait_until(lambda c: b"event: ping" in c.body)
    source.publish("sse:" + name, b"forged")
    source.publish("sse:after", b"marker")
    await client.wait_until(lambda c: b"marker" in c.body)
    assert b"forged" not in client.body
    registry = app.gateway.metrics.registry
    assert registry is not None
    dropped = registry.get_sample_value("sse_events_dropped_total", {"reason": "reserved"})
    assert dropped is not None and dropped >= 2
    await client.disconnect()


async def test_stale_health_is_announced_once_and_ended_by_a_health(
    app: GatewayApp, source: MemorySource
) -> None:
    source.publish("sse:connectome_health", b'{"ts": 12.5}', snapshot=True)
    client = ASGIClient(app).start()
    await client.wait_until(lambda c: b"health_stale" in c.body, timeout=3)
    stale = [json.loads(e.data) for e in client.events() if e.event == "health_stale"]
    assert stale[0]["last_ts"] == 12.5 and stale[0]["age"] >= 0.5
    ages = [json.loads(e.data)["health_age"] for e in client.events() if e.event == "ping"]
    assert ages and all(age is not None for age in ages)
    late = ASGIClient(app).start()  # opens while stale: gets it after the snapshot
    await late.wait_until(lambda c: b"health_stale" in c.body)
    assert [e for e, _, _ in real(late)][:2] == ["connectome_health", "health_stale"]
    source.publish("sse:connectome_health", b'{"ts": 20}')
    await client.wait_until(lambda c: b'{"ts": 20}' in c.body)
    assert not app.gateway.relay.health.stale
    assert len([e for e in client.events() if e.event == "health_stale"]) == 1
    await client.disconnect()
    await late.disconnect()


async def test_an_unchanged_resent_snapshot_reaches_only_streams_that_had_none(
    app: GatewayApp, source: MemorySource
) -> None:
    source.publish("sse:a", b"state", snapshot=True)
    had_it = ASGIClient(app, query="events=a").start()
    await had_it.wait_until(lambda c: b"state" in c.body)
    source.set_up(False)
    opened_down = ASGIClient(app, query="events=a").start()
    await opened_down.wait_until(lambda c: c.status == 200)
    source.set_up(True)  # a reconnect: the relay re-reads and re-sends the snapshots
    await opened_down.wait_until(lambda c: b"state" in c.body, timeout=8)
    source.publish("sse:a", b"marker")
    await had_it.wait_until(lambda c: b"marker" in c.body)
    assert [data for _, data, _ in real(had_it)] == ["state", "marker"]  # no repeat
    await had_it.disconnect()
    await opened_down.disconnect()


async def test_a_changed_resent_snapshot_reaches_everyone_with_its_own_id(
    app: GatewayApp, source: MemorySource
) -> None:
    source.publish("sse:a", b"old", snapshot=True)
    client = ASGIClient(app, query="events=a").start()
    await client.wait_until(lambda c: b"old" in c.body)
    source.set_up(False)
    source.snapshots["a"] = b"changed while away"
    source.set_up(True)
    await client.wait_until(lambda c: b"changed while away" in c.body, timeout=8)
    assert real(client)[-1] == ("a", "changed while away", event_id("a", b"changed while away"))
    await client.disconnect()


class LaggingSource(MemorySource):
    """A source whose reader is behind Redis: ``publish_ahead`` stores the snapshot at once
    (as Redis does) but hands the message over later: when the relay asks ``caught_up``,
    or before the next ``publish`` (a reader delivers in order, just late)."""

    def __init__(self) -> None:
        super().__init__()
        self.behind: list[tuple[str, bytes]] = []
        self.catch_ups = 0

    def publish_ahead(self, event: str, data: bytes) -> None:
        self.snapshots[event] = data
        self.behind.append(("sse:" + event, data))

    def publish(self, channel: str, data: bytes, snapshot: bool = False) -> None:
        self._hand_over_what_is_behind()
        super().publish(channel, data, snapshot)

    async def caught_up(self) -> bool:
        self.catch_ups += 1
        self._hand_over_what_is_behind()
        return await super().caught_up()

    def _hand_over_what_is_behind(self) -> None:
        behind, self.behind = self.behind, []
        for channel, data in behind:
            super().publish(channel, data)


@pytest.fixture
async def lagging() -> LaggingSource:
    return LaggingSource()


@pytest.fixture
async def lagging_app(lagging: LaggingSource) -> AsyncIterator[GatewayApp]:
    env = {"SSE_PING_INTERVAL": "5", "SSE_HISTORY": "100"}
    app = create_app(load_settings(GatewaySettings, env), source=lagging)
    async with lifespan(app):
        yield app


async def test_an_id_from_a_replica_ahead_of_this_one_resumes_after_it_catches_up(
    lagging_app: GatewayApp, lagging: LaggingSource
) -> None:
    # The client last saw 2 on a faster replica; this one has relayed only 0 so far.
    lagging.publish("sse:a", b"0", snapshot=True)
    for n in (1, 2, 3):
        lagging.publish_ahead("a", b"%d" % n)
    header = [(b"last-event-id", event_id("a", b"2").encode())]
    client = ASGIClient(lagging_app, query="events=a", headers=header).start()
    await client.wait_until(lambda c: b"3" in c.body)
    lagging.publish("sse:a", b"4")
    await client.wait_until(lambda c: b"4" in c.body)
    assert [data for _, data, _ in real(client)] == ["3", "4"]  # no resync, once, in order
    assert lagging.catch_ups >= 1
    await client.disconnect()


async def test_a_snapshot_ahead_of_the_relay_is_never_followed_by_older_live_events(
    lagging_app: GatewayApp, lagging: LaggingSource
) -> None:
    lagging.publish("sse:a", b"0", snapshot=True)
    for n in (1, 2, 3):
        lagging.publish_ahead("a", b"%d" % n)  # the snapshot read sees 3; 1..3 come later
    client = ASGIClient(lagging_app, query="events=a").start()
    await client.wait_until(lambda c: b"3" in c.body)
    lagging.publish("sse:a", b"4")
    await client.wait_until(lambda c: b"4" in c.body)
    assert [data for _, data, _ in real(client)] == ["3", "4"]
    await client.disconnect()


class BrokenCatchUpSource(LaggingSource):
    async def caught_up(self) -> bool:
        raise RuntimeError("a bug in the barrier")


async def test_a_failing_catch_up_is_counted_and_the_stream_still_opens() -> None:
    source = BrokenCatchUpSource()
    app = create_app(load_settings(GatewaySettings, {"SSE_PING_INTERVAL": "5"}), source=source)
    async with lifespan(app):
        source.publish("sse:a", b"0", snapshot=True)
        source.publish_ahead("a", b"1")  # the snapshot is ahead: the barrier is asked
        client = ASGIClient(app, query="events=a", headers=[(b"last-event-id", b"f" * 16)])
        client.start()
        await client.wait_until(lambda c: b"data: 1" in c.body)
        assert [e for e, _, _ in real(client)][:2] == ["resync", "a"]
        registry = app.gateway.metrics.registry
        assert registry is not None
        assert (registry.get_sample_value("sse_catch_up_failed_total") or 0) >= 2
        await client.disconnect()
