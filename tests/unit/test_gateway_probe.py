"""The path probe, ``GET /api/sse?probe=1``: the app in-process, streams under a deadline."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator

import pytest

from connectome_core.settings import load_settings
from sse_gateway.app import GatewayApp, create_app
from sse_gateway.framing import Frame
from sse_gateway.probe import ProbeSchedule, probe_frame
from sse_gateway.request import probe_requested
from sse_gateway.settings import GatewaySettings
from sse_gateway.source import MemorySource
from tests.support.asgi import ASGIClient, lifespan


@pytest.fixture
async def source() -> MemorySource:
    return MemorySource()


@pytest.fixture
async def app(source: MemorySource) -> AsyncIterator[GatewayApp]:
    settings = load_settings(
        GatewaySettings, {"SSE_PING_INTERVAL": "0.2", "SSE_MAX_CONNECTIONS": "2"}
    )
    app = create_app(settings, source=source)
    async with lifespan(app):
        yield app


def probes(client: ASGIClient) -> list[dict[str, float]]:
    return [json.loads(e.data) for e in client.events() if e.event == "probe"]


async def test_a_probe_stream_sends_three_probes_a_second_apart_then_only_pings(
    app: GatewayApp, source: MemorySource
) -> None:
    source.publish("sse:connectome_health", b'{"snapshot": true}', snapshot=True)
    client = ASGIClient(app, query="probe=1").start()
    await client.wait_until(lambda c: len(probes(c)) == 3, timeout=10)
    source.publish("sse:connectome_health", b'{"live": true}')
    pings_before = sum(e.event == "ping" for e in client.events())
    await client.wait_until(lambda c: sum(e.event == "ping" for e in c.events()) > pings_before)
    await client.disconnect()

    assert client.status == 200
    assert client.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert bytes(client.body).startswith(b"retry: 3000\n\n")
    sent = probes(client)
    assert [p["n"] for p in sent] == [0, 1, 2]
    # Timers never fire early: the gaps are at least the schedule's (minus ts rounding).
    gaps = [later["ts"] - earlier["ts"] for earlier, later in itertools.pairwise(sent)]
    assert all(gap >= 0.99 for gap in gaps), gaps
    # No snapshot, no channel events: probes and pings only.
    assert {e.event for e in client.events()} == {"probe", "ping"}
    # Gateway-made events carry no id: a browser's last event id stays where it was.
    assert b"id:" not in client.body
    assert all(e.id == "" for e in client.events())


async def test_probe_streams_count_against_the_connection_limit(app: GatewayApp) -> None:
    streams = [ASGIClient(app, query="probe=1").start() for _ in range(2)]
    for stream in streams:
        await stream.wait_until(lambda c: c.status == 200)
    refused = await ASGIClient(app, query="probe=1").response()
    assert refused.status == 503
    assert "too many" in json.loads(refused.body)["error"]
    for stream in streams:
        await stream.disconnect()


async def test_a_probe_stream_that_leaves_early_stops_its_probes(app: GatewayApp) -> None:
    client = ASGIClient(app, query="probe=1").start()
    await client.wait_until(lambda c: len(probes(c)) == 1)
    await client.disconnect()
    assert app.gateway.open_streams == 0
    # The remaining timers were cancelled with the stream: nothing more is written.
    size = len(client.body)
    await asyncio.sleep(1.5)
    assert len(client.body) == size


@pytest.mark.parametrize("query", ["probe=0", "probe=yes", "probe=", "probe=1&probe=1"])
async def test_a_malformed_probe_parameter_gets_400_json(app: GatewayApp, query: str) -> None:
    client = await ASGIClient(app, query=query).response()
    assert client.status == 400
    assert "probe" in json.loads(client.body)["error"]


def test_probe_requested_reads_only_the_value_1() -> None:
    assert probe_requested([]) is False
    assert probe_requested(["1"]) is True
    with pytest.raises(ValueError):
        probe_requested(["true"])


def test_a_probe_frame_is_an_event_without_id() -> None:
    assert probe_frame(1, 1700000000.12345).data == (
        b'event: probe\ndata: {"n": 1, "ts": 1700000000.123}\n\n'
    )


class RefusingStream:
    def __init__(self) -> None:
        self.offered: list[bytes] = []

    def offer(self, frame: Frame) -> bool:
        self.offered.append(frame.data)
        return False  # full: the stream cuts itself

    def close(self, final_frame: bytes, reason: str | None = None) -> None:
        pass


async def test_a_stream_that_refuses_a_probe_gets_no_more() -> None:
    stream = RefusingStream()
    with ProbeSchedule(stream, clock=lambda: 0.0) as schedule:
        async with asyncio.timeout(5):
            while not stream.offered:
                await asyncio.sleep(0.01)
        await asyncio.sleep(1.3)  # past probe 1's time
    assert len(stream.offered) == 1
    assert schedule.sent == 0
