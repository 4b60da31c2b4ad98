"""The gateway's side of the event log through the in-process app: log ids, gap fill after a
cut, resync when the log cannot prove continuity, resume from the log on a new replica."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from connectome_core.event_log import log_event_id
from connectome_core.settings import load_settings
from sse_gateway.app import GatewayApp, create_app
from sse_gateway.settings import GatewaySettings
from sse_gateway.source import MemorySource
from tests.support.asgi import ASGIClient, lifespan

ENV = {"SSE_PING_INTERVAL": "5", "SSE_HISTORY": "100", "SSE_LATEST_ONLY": "h"}


@pytest.fixture
async def source() -> MemorySource:
    return MemorySource()


@pytest.fixture
async def app(source: MemorySource) -> AsyncIterator[GatewayApp]:
    app = create_app(load_settings(GatewaySettings, ENV), source=source)
    async with lifespan(app):
        await app.gateway.relay.log.wait_started()
        yield app


def real(client: ASGIClient) -> list[tuple[str, str, str]]:
    return [(e.event, e.data, e.id) for e in client.events() if e.event != "ping"]


def cut(source: MemorySource) -> None:
    """The subscription is lost and made again (pub/sub delivered nothing meanwhile)."""
    source.set_up(False)
    source.set_up(True)


async def test_a_logged_event_and_its_snapshot_carry_the_log_id(
    app: GatewayApp, source: MemorySource
) -> None:
    first = source.publish_logged("a", b"one")
    client = ASGIClient(app, query="events=a").start()
    await client.wait_until(lambda c: b"one" in c.body)
    second = source.publish_logged("a", b"one")  # the same payload: another id
    await client.wait_until(lambda c: len(real(c)) == 2)
    assert real(client) == [
        ("a", "one", log_event_id(first, "a", b"one")),
        ("a", "one", log_event_id(second, "a", b"one")),
    ]
    await client.disconnect()


async def test_events_missed_during_a_cut_are_filled_in_order_once_before_live_ones(
    app: GatewayApp, source: MemorySource
) -> None:
    client = ASGIClient(app, query="events=a,h").start()
    source.publish_logged("a", b"0")
    await client.wait_until(lambda c: b"0" in c.body)
    source.set_up(False)
    for n in range(1, 4):
        source.publish_logged("a", b"%d" % n, delivered=False)
        source.publish_logged("h", b"h%d" % n, delivered=False)
    source.set_up(True)
    source.publish_logged("a", b"4")  # live, while the fill may still run
    await client.wait_until(lambda c: b"4" in c.body)
    assert [data for _, data, _ in real(client)] == ["0", "1", "2", "3", "h3", "4"]
    registry = app.gateway.metrics.registry
    assert registry is not None
    # The fill read "4" from the log too; its live copy, held behind the fill, was skipped.
    assert registry.get_sample_value("sse_log_filled_total") == 5
    assert registry.get_sample_value("sse_log_duplicates_total") == 1
    await client.disconnect()


async def test_a_log_that_lost_the_gateway_s_position_gives_resync_and_snapshots(
    app: GatewayApp, source: MemorySource
) -> None:
    client = ASGIClient(app, query="events=a").start()
    source.publish_logged("a", b"before")
    await client.wait_until(lambda c: b"before" in c.body)
    source.set_up(False)
    source.log.clear()  # Redis came back empty
    source.publish_logged("a", b"after", delivered=False)
    source.set_up(True)
    await client.wait_until(lambda c: b"after" in c.body)
    events = real(client)
    assert [e[0] for e in events] == ["a", "resync", "a"], events
    assert json.loads(events[1][1]) == {"reason": "log_gap"}
    # The next cut finds the gateway's new position in the log: no second resync.
    cut(source)
    source.publish_logged("a", b"later")
    await client.wait_until(lambda c: b"later" in c.body)
    assert [e[0] for e in real(client)].count("resync") == 1
    await client.disconnect()


async def test_a_new_replica_resumes_from_a_log_id_it_never_relayed(
    source: MemorySource,
) -> None:
    ids = [source.publish_logged("a", b"e%d" % n) for n in range(1, 6)]
    app = create_app(load_settings(GatewaySettings, ENV), source=source)
    async with lifespan(app):
        await app.gateway.relay.log.wait_started()
        resume = log_event_id(ids[1], "a", b"e2")
        client = ASGIClient(app, query="events=a", headers=[(b"last-event-id", resume.encode())])
        client.start()
        await client.wait_until(lambda c: b"e5" in c.body)
        source.publish_logged("a", b"e6")
        await client.wait_until(lambda c: b"e6" in c.body)
        assert [data for _, data, _ in real(client)] == ["e3", "e4", "e5", "e6"]
        await client.disconnect()
        # A forged digest, or an entry trimmed away: resync, like an unknown id.
        source.log.trim(2)
        for bad in (resume[:-8] + "00000000", log_event_id(ids[2], "a", b"e3")):
            client = ASGIClient(app, query="events=a", headers=[(b"last-event-id", bad.encode())])
            client.start()
            await client.wait_until(lambda c: b"e6" in c.body)
            assert real(client)[0][:2] == ("resync", '{"reason": "unknown_id"}')
            await client.disconnect()
