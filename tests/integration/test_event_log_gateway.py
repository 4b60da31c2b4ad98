"""The gateway side of the event log, black box: real redis-server, real gateway processes,
events published through the log by ``connectome-sse publish --lines`` and the library.

Cut subscriptions are filled from the log (every event once, in order, with its log id);
a replica started after the events resumes a client from a log id; a log id trimmed away
is answered with ``resync`` ``unknown_id``. Run with ``-s`` for the figures.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from connectome_core.event_log import LOG_KEY, parse_log_event_id
from connectome_sse.localrun.redis_server import RedisServer
from connectome_sse.localrun.sse_clients import StreamRecorder, open_streams
from connectome_sse.localrun.wait import until
from tests.conftest import StartGateway
from tests.support.event_log_streams import (
    LinesProcess,
    SubscriptionCutter,
    Tally,
    logged_ids,
    open_resuming,
    publish_lines,
    publish_notes,
    received,
    resyncs,
    settle,
    tally,
)

pytestmark = pytest.mark.integration

EVENTS = 300
RATE = 100.0  # lines per second
CUT_EVERY = 0.5  # seconds between two CLIENT KILL TYPE pubsub


def seq_numbers(stream: StreamRecorder) -> list[int]:
    return [int(data.removeprefix("n=")) for data in stream.of("seq")]


def wrong_ids(stream: StreamRecorder, expected: dict[str, str]) -> list[tuple[str, str]]:
    """(data, id) of each seq event whose id is not the log id of its entry."""
    return [(e.data, e.id) for e in stream.events if e.event == "seq" and e.id != expected[e.data]]


async def test_subscription_cut_every_half_second_loses_nothing_and_doubles_nothing(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(redis_server.url).wait_ready()
    lines = [f"n={n}" for n in range(1, EVENTS + 1)]
    async with open_streams(gateway.url + "/api/sse?events=seq,done", 3) as streams:
        await until(lambda: gateway.metric("sse_open_streams") == 3, what="three streams open")
        feed = LinesProcess(redis_server.url, "seq")
        try:
            with redis_server.client() as killer, SubscriptionCutter(killer, CUT_EVERY) as cutter:
                await asyncio.to_thread(feed.feed, lines, RATE)
                status = await asyncio.to_thread(feed.finish)
        finally:
            feed.kill()
        assert status == 0, feed.err
        assert cutter.kills >= 4, f"only {cutter.kills} subscriptions cut"
        await until(lambda: gateway.status("/readyz") == 200, what="subscribed again")
        # Published after every seq event: once it is on a stream, so is everything before.
        await publish_notes(redis_server.url, "1", event="done")
        await settle(lambda: all(s.of("done") for s in streams), timeout=15)
        with redis_server.client() as client:
            expected = logged_ids(client, "seq")
        tallies = [tally(seq_numbers(s), range(1, EVENTS + 1)) for s in streams]
        print(
            f"\n{EVENTS} seq events at {RATE:.0f}/s through publish --lines, "
            f"{cutter.kills} subscription cuts (every {CUT_EVERY}s), filled from the log: "
            f"{gateway.metric('sse_log_filled_total'):.0f}; per stream: "
            + "; ".join(t.line() for t in tallies)
        )
        # What the publisher printed is what the log holds: the ids to expect.
        assert sorted(feed.printed_ids().values()) == sorted(expected.values())
        assert len(expected) == EVENTS
        for stream, counted in zip(streams, tallies, strict=True):
            assert counted == Tally(received=EVENTS), counted.detail()
            assert [e.data for e in received(stream)][:EVENTS] == lines
            assert wrong_ids(stream, expected) == []
            assert resyncs(stream) == []
            assert not stream.ended


async def test_a_replica_started_after_the_events_resumes_from_a_log_id(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    e1, e2, e3, e4, e5 = await publish_notes(redis_server.url, "e1", "e2", "e3", "e4", "e5")
    gateway = start_gateway(redis_server.url).wait_ready()
    url = gateway.url + "/api/sse?events=note"
    async with open_resuming(url, e2.event_id) as stream:
        assert stream.status == 200
        (e6,) = await publish_notes(redis_server.url, "e6")  # live, after the opening
        await until(lambda: "e6" in stream.of("note"), what="the live e6")
        got = [(e.event, e.data, e.id) for e in received(stream)]
        # e3..e5 from the log (no snapshot of e5 besides), then e6 live: each once, in order.
        after = {"e3": e3, "e4": e4, "e5": e5, "e6": e6}
        expected = [("note", data, p.event_id) for data, p in after.items()]
        assert got == expected
        assert resyncs(stream) == []
    assert all(parse_log_event_id(p.event_id) is not None for p in (e1, e2, e3, e4, e5, e6))


async def test_a_resume_from_a_trimmed_log_id_gets_resync_unknown_id(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    lines = [f"n={n}" for n in range(1, 321)]
    printed = publish_lines(
        redis_server.url, "note", lines, env={"EVENT_LOG_MAXLEN": "10"}
    ).printed_ids()
    first, kept = printed[1], printed[318]
    with redis_server.client() as client:
        first_sid = first.split(".")[0]
        # The ~ trim removes whole stream nodes: the first entry has really gone.
        assert client.xrange(LOG_KEY, first_sid, first_sid) == []
        assert client.xlen(LOG_KEY) < 300
        kept_sid = kept.split(".")[0]
        assert len(client.xrange(LOG_KEY, kept_sid, kept_sid)) == 1  # the control's id is kept
    gateway = start_gateway(redis_server.url).wait_ready()
    url = gateway.url + "/api/sse?events=note"
    async with open_resuming(url, first) as trimmed:
        await until(lambda: trimmed.of("note"), what="the snapshot after the resync")
        got = [(e.event, e.data) for e in received(trimmed)]
        assert [event for event, _ in got] == ["resync", "note"], got
        assert json.loads(got[0][1]) == {"reason": "unknown_id"}
        assert got[1][1] == "n=320"  # the snapshot
    # The control: an id still in the log resumes, on the same gateway.
    async with open_resuming(url, kept) as resumed:
        await until(lambda: "n=320" in resumed.of("note"), what="the resumed events")
        assert [e.data for e in received(resumed)] == ["n=319", "n=320"]
        assert [e.id for e in received(resumed)] == [printed[319], printed[320]]
