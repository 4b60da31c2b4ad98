"""Latest-only frames for slow clients, the send timeout, and the connect window."""

from __future__ import annotations

import asyncio

from sse_gateway.framing import Frame
from sse_gateway.stream_writer import StreamWriter
from tests.support.asgi import ASGIClient


def health(n: int) -> Frame:
    return Frame(b"h%d\n\n" % n, f"id{n}", "health")


async def test_a_stalled_client_keeps_only_the_newest_latest_only_frame_and_is_not_cut() -> None:
    client = ASGIClient(app=None)  # type: ignore[arg-type]
    await client.receive()
    conflated: list[int] = []
    writer = StreamWriter(client.send, limit=2, on_conflate=lambda: conflated.append(1))
    writer.release([])
    client.paused = True
    assert writer.offer(health(0))  # stalls
    for n in range(1, 1000):
        assert writer.offer(health(n))
    assert writer.offer(Frame(b"e\n\n"))
    assert not writer.cut
    assert len(conflated) == 998
    client.resume()
    await asyncio.wait_for(writer.wait_flushed(), 5)
    assert bytes(client.body) == b"h0\n\nh999\n\ne\n\n"


async def test_a_client_that_takes_no_bytes_is_cut_after_the_send_timeout() -> None:
    client = ASGIClient(app=None)  # type: ignore[arg-type]
    await client.receive()
    writer = StreamWriter(client.send, limit=2, send_timeout=0.2)
    writer.release([])
    client.paused = True
    writer.offer(health(0))
    writer.offer(health(1))
    await asyncio.wait_for(writer.wait_flushed(), 5)
    assert writer.cut and writer.timed_out and writer.closed


async def test_a_live_frame_that_repeats_an_opening_frame_is_dropped() -> None:
    client = ASGIClient(app=None)  # type: ignore[arg-type]
    await client.receive()
    writer = StreamWriter(client.send, limit=10)
    snapshot = Frame(b"snap\n\n", "same")
    writer.offer(Frame(b"snap\n\n", "same"))  # the same event, live, while holding
    writer.offer(Frame(b"later\n\n", "other"))
    writer.release([snapshot])
    assert bytes(client.body) == b"snap\n\nlater\n\n"


def relayed(event: str, n: int) -> Frame:
    return Frame(b"%s%d\n\n" % (event.encode(), n), f"{event}{n}", None, event)


async def test_after_snapshots_a_type_s_queued_frames_up_to_its_snapshot_are_dropped() -> None:
    # A replica behind Redis: its snapshot read saw a2 while a1 and a2 still waited to be
    # relayed. They are older than (or the same as) the snapshot; b's snapshot came before
    # the stream subscribed, so every queued b is newer.
    client = ASGIClient(app=None)  # type: ignore[arg-type]
    await client.receive()
    writer = StreamWriter(client.send, limit=10)
    for frame in [relayed("a", 1), relayed("b", 1), relayed("a", 2), Frame(b"ping\n\n")]:
        writer.offer(frame)
    writer.offer(relayed("b", 2))
    writer.offer(relayed("a", 3))
    writer.release([relayed("a", 2), relayed("b", 0)])
    assert bytes(client.body) == b"a2\n\nb0\n\nb1\n\nping\n\nb2\n\na3\n\n"


async def test_after_a_replay_every_queued_frame_with_an_id_is_dropped_but_pings_stay() -> None:
    # The replay was taken from the history after the queued frames were relayed.
    client = ASGIClient(app=None)  # type: ignore[arg-type]
    await client.receive()
    writer = StreamWriter(client.send, limit=10)
    writer.offer(relayed("a", 5))
    writer.offer(Frame(b"ping\n\n"))
    writer.offer(relayed("a", 6))
    writer.release([relayed("a", 5), relayed("a", 6)], replayed=True)
    assert bytes(client.body) == b"a5\n\na6\n\nping\n\n"
