"""Redis restarted under a running gateway with an open stream, black box (event log).

Restarted empty (no persistence): the gateway cannot prove continuity, so the stream gets
``resync`` ``log_gap`` and then the snapshots, never a silent gap. Restarted with its
data kept, after events were published through the log while the gateway was not
subscribed: the stream gets every one of them, in order, once, and no ``resync``.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from connectome_sse.localrun.redis_server import RedisServer
from connectome_sse.localrun.sse_clients import open_streams
from connectome_sse.localrun.wait import until
from tests.conftest import StartGateway
from tests.support.event_log_streams import logged_ids, publish_notes, received, resyncs

pytestmark = pytest.mark.integration


async def test_redis_back_empty_gives_resync_log_gap_then_the_snapshots(
    own_redis: RedisServer, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(own_redis.url).wait_ready()
    async with open_streams(gateway.url + "/api/sse?events=note", 1) as (stream,):
        await until(lambda: gateway.metric("sse_open_streams") == 1, what="the stream open")
        await publish_notes(own_redis.url, "e1", "e2")
        await until(lambda: stream.of("note") == ["e1", "e2"], what="e1 and e2 relayed")
        before = len(received(stream))

        own_redis.restart()  # kill -9 and start on the same port: nothing persisted
        await until(
            lambda: (
                gateway.metric("sse_redis_reconnects_total") >= 1
                and gateway.status("/readyz") == 200
            ),
            what="the gateway subscribed to the new Redis",
        )
        # A snapshot-bearing event on the Redis that came back empty.
        await publish_notes(own_redis.url, "after")
        await until(lambda: "after" in stream.of("note"), what="the event after the restart")

        after = [(e.event, e.data) for e in received(stream)[before:]]
        print(f"\nafter a restart empty, the stream got: {after}")
        assert [json.loads(data) for data in resyncs(stream)] == [{"reason": "log_gap"}], after
        assert after[0][0] == "resync", after  # first, before anything of the new Redis
        assert [e for e in after if e[0] == "note"] == [("note", "after")]
        assert not stream.ended


async def test_redis_back_with_its_data_fills_what_was_logged_while_unsubscribed(
    tmp_path: Path, start_gateway: StartGateway
) -> None:
    # Every write fsynced: the log survives the kill -9 as on a production Redis with AOF.
    server = RedisServer(
        tmp_path / "redis", extra_args=("--appendonly", "yes", "--appendfsync", "always")
    ).start()
    try:
        gateway = start_gateway(server.url).wait_ready()
        async with open_streams(gateway.url + "/api/sse?events=note", 1) as (stream,):
            await until(lambda: gateway.metric("sse_open_streams") == 1, what="the stream open")
            await publish_notes(server.url, "e1")
            await until(lambda: stream.of("note") == ["e1"], what="e1 relayed")
            # Stopped, the gateway cannot subscribe to the Redis that comes back: e2..e6 are
            # published there through the log while it is not subscribed (as in a backoff).
            gateway.signal(signal.SIGSTOP)
            try:
                server.restart()
                await publish_notes(server.url, "e2", "e3", "e4", "e5", "e6")
                with server.client() as client:
                    expected = logged_ids(client, "note")
                assert list(expected) == ["e1", "e2", "e3", "e4", "e5", "e6"]  # data kept
            finally:
                gateway.signal(signal.SIGCONT)
            await until(lambda: "e6" in stream.of("note"), timeout=20, what="e6 on the stream")
            # One more, live: nothing of the fill may come after it, nor twice before it.
            (e7,) = await publish_notes(server.url, "e7")
            await until(lambda: "e7" in stream.of("note"), what="the live e7")
            expected["e7"] = e7.event_id

            got = [(e.event, e.data, e.id) for e in received(stream)]
            print(f"\nafter a restart with data kept, the stream got: {[g[1] for g in got]}")
            assert got == [("note", data, ident) for data, ident in expected.items()]
            assert resyncs(stream) == []
            assert not stream.ended
        assert gateway.metric("sse_redis_reconnects_total") >= 1
    finally:
        server.stop()
