"""The stream writer: synchronous writes while the client keeps up, bounded buffering when not."""

from __future__ import annotations

import asyncio

from sse_gateway.framing import Frame
from sse_gateway.stream_writer import COALESCED_BYTES, StreamWriter
from tests.support.asgi import ASGIClient


async def _started(client: ASGIClient) -> StreamWriter:
    await client.receive()  # consume the request, as the endpoint does
    writer = StreamWriter(client.send, limit=3)
    writer.release([Frame(b"first\n\n")])
    return writer


async def test_frames_are_written_synchronously_when_the_client_keeps_up() -> None:
    client = ASGIClient(app=None)  # type: ignore[arg-type]
    writer = await _started(client)
    assert writer.offer(Frame(b"a\n\n"))
    # No await in between: the bytes are already "on the wire".
    assert bytes(client.body) == b"first\n\na\n\n"
    writer.close(b"retry: 10\n\n")
    assert client.complete
    assert bytes(client.body).endswith(b"retry: 10\n\n")


async def test_frames_queue_while_holding_and_follow_the_snapshot() -> None:
    client = ASGIClient(app=None)  # type: ignore[arg-type]
    writer = StreamWriter(client.send, limit=10)
    writer.offer(Frame(b"live1\n\n"))
    writer.offer(Frame(b"live2\n\n"))
    assert bytes(client.body) == b""
    writer.release([Frame(b"snap\n\n")])
    assert bytes(client.body) == b"snap\n\nlive1\n\nlive2\n\n"


async def test_a_stalled_client_buffers_up_to_the_limit_then_is_cut() -> None:
    client = ASGIClient(app=None)  # type: ignore[arg-type]
    writer = await _started(client)
    client.paused = True
    assert writer.offer(Frame(b"1\n\n"))  # this send stalls and continues in a flusher
    assert writer.offer(Frame(b"2\n\n"))
    assert writer.offer(Frame(b"3\n\n"))
    assert writer.offer(Frame(b"4\n\n"))
    assert not writer.offer(Frame(b"5\n\n"))  # a 4th frame waiting behind the stall: cut
    assert writer.cut and writer.closed
    client.resume()
    await asyncio.wait_for(writer.wait_flushed(), 5)
    # The stalled write completes, the queued frames are dropped, the stream ends.
    assert bytes(client.body) == b"first\n\n1\n\n"
    assert client.complete


async def test_a_stall_that_clears_flushes_everything_in_one_write_in_order() -> None:
    client = ASGIClient(app=None)  # type: ignore[arg-type]
    writer = await _started(client)
    client.paused = True
    writer.offer(Frame(b"1\n\n"))
    writer.offer(Frame(b"2\n\n"))
    writer.offer(Frame(b"3\n\n"))
    client.resume()
    await asyncio.wait_for(writer.wait_flushed(), 5)
    assert bytes(client.body) == b"first\n\n1\n\n2\n\n3\n\n"
    assert not writer.closed
    writer.offer(Frame(b"4\n\n"))
    assert bytes(client.body).endswith(b"3\n\n4\n\n")


class FakeDirectBody:
    """A server that takes chunk-framed bytes directly unless its transport is paused."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.paused = False
        self.aborted = False

    def write(self, frame: Frame) -> bool:
        if self.paused:
            return False
        self.written += frame.chunk
        return True

    def abort(self) -> None:
        self.aborted = True


async def test_direct_body_takes_the_prebuilt_chunk_and_send_takes_over_when_paused() -> None:
    client = ASGIClient(app=None)  # type: ignore[arg-type]
    await client.receive()
    direct = FakeDirectBody()
    writer = StreamWriter(client.send, limit=3, direct=direct)
    writer.release([Frame(b"first\n\n")])
    writer.offer(Frame(b"a\n\n"))
    # The chunks, built once per event; the opening takes the same path.
    assert bytes(direct.written) == b"7\r\nfirst\n\n\r\n3\r\na\n\n\r\n"
    direct.paused = client.paused = True
    writer.offer(Frame(b"b\n\n"))  # the direct write is refused: send stalls, a flusher waits
    writer.offer(Frame(b"c\n\n"))
    direct.paused = False
    writer.offer(Frame(b"d\n\n"))  # still behind the stalled send: queued, order kept
    client.resume()
    await asyncio.wait_for(writer.wait_flushed(), 5)
    assert bytes(client.body) == b"b\n\n"  # then the server took bytes directly again
    assert bytes(direct.written).endswith(b"3\r\nc\n\n\r\n3\r\nd\n\n\r\n")
    writer.offer(Frame(b"e\n\n"))
    assert bytes(direct.written).endswith(b"3\r\ne\n\n\r\n")


async def test_cutting_a_stalled_client_aborts_its_connection() -> None:
    client = ASGIClient(app=None)  # type: ignore[arg-type]
    await client.receive()
    direct = FakeDirectBody()
    writer = StreamWriter(client.send, limit=1, direct=direct)
    writer.release([])
    direct.paused = client.paused = True
    assert writer.offer(Frame(b"1\n\n"))
    assert writer.offer(Frame(b"2\n\n"))
    assert not writer.offer(Frame(b"3\n\n"))
    assert direct.aborted
    await client.disconnect()
    await asyncio.wait_for(writer.wait_flushed(), 5)


async def test_regression_queued_bytes_are_bounded_not_only_frames() -> None:
    """With 1 MiB events, 256 queued frames were once 256 MiB per client."""
    client = ASGIClient(app=None)  # type: ignore[arg-type]
    await client.receive()
    writer = StreamWriter(client.send, limit=100, max_bytes=1024)
    writer.release([])
    client.paused = True
    assert writer.offer(Frame(b"x" * 600))  # stalls in a flusher
    assert writer.offer(Frame(b"y" * 600))  # queued: 600 bytes
    assert not writer.offer(Frame(b"z" * 600))  # 1200 bytes would wait: cut
    assert writer.cut


async def test_one_frame_larger_than_the_byte_bound_is_still_taken() -> None:
    client = ASGIClient(app=None)  # type: ignore[arg-type]
    await client.receive()
    writer = StreamWriter(client.send, limit=100, max_bytes=1024)
    writer.release([])
    client.paused = True
    assert writer.offer(Frame(b"x" * 10))
    assert writer.offer(Frame(b"y" * 5000))  # alone in the queue: an event is never unsendable
    assert not writer.cut


async def test_regression_frames_held_behind_the_snapshot_do_not_count_against_the_limit() -> None:
    """A slow snapshot read must not cut a healthy new client."""
    client = ASGIClient(app=None)  # type: ignore[arg-type]
    await client.receive()
    writer = StreamWriter(client.send, limit=2, max_bytes=1 << 20)
    for seq in range(10):  # the snapshot read is slow: ten events arrive meanwhile
        assert writer.offer(Frame(b"%d\n\n" % seq))
    assert not writer.cut
    writer.release([Frame(b"snap\n\n")])
    assert bytes(client.body) == b"snap\n\n" + b"".join(b"%d\n\n" % n for n in range(10))
    # Once live, the client's own limit applies again.
    client.paused = True
    assert writer.offer(Frame(b"a\n\n"))
    assert writer.offer(Frame(b"b\n\n"))
    assert writer.offer(Frame(b"c\n\n"))
    assert not writer.offer(Frame(b"d\n\n"))


async def test_held_frames_are_still_bounded_in_bytes() -> None:
    client = ASGIClient(app=None)  # type: ignore[arg-type]
    await client.receive()
    writer = StreamWriter(client.send, limit=2, max_bytes=1024)
    assert writer.offer(Frame(b"x" * 600))
    assert not writer.offer(Frame(b"y" * 600))
    assert writer.cut


async def test_regression_a_write_that_raises_closes_only_this_stream() -> None:
    """uvloop raises on a write to a closed transport; it must not escape."""

    class GoneDirectBody(FakeDirectBody):
        def write(self, frame: Frame) -> bool:
            raise RuntimeError("unable to perform operation on <TCPTransport closed=True>")

    client = ASGIClient(app=None)  # type: ignore[arg-type]
    await client.receive()
    direct = GoneDirectBody()
    writer = StreamWriter(client.send, limit=3, direct=direct)
    writer.release([])
    assert writer.offer(Frame(b"a\n\n"))  # no exception reaches the caller (the hub)
    assert writer.closed and not writer.cut
    assert direct.aborted
    assert writer.offer(Frame(b"b\n\n"))  # a closed writer takes (and drops) frames


class RecordingClient(ASGIClient):
    """Records each body ``send`` gets, as the object it got."""

    def __init__(self) -> None:
        super().__init__(app=None)  # type: ignore[arg-type]
        self.bodies: list[bytes] = []

    async def send(self, message: dict[str, object]) -> None:
        self.bodies.append(message.get("body", b""))  # type: ignore[arg-type]
        await super().send(message)


async def test_regression_an_opening_that_cannot_wait_within_the_byte_bound_cuts_the_client() -> (
    None
):
    client = ASGIClient(app=None)  # type: ignore[arg-type]
    await client.receive()
    writer = StreamWriter(client.send, limit=100, max_bytes=1024)
    client.paused = True
    writer.release([Frame(b"x" * 600), Frame(b"y" * 600), Frame(b"z" * 600)])
    # The first stalls in its write; 1200 bytes would wait behind it.
    assert writer.cut and writer.closed
    client.resume()
    await asyncio.wait_for(writer.wait_flushed(), 5)
    assert bytes(client.body) == b"x" * 600
    assert client.complete


async def test_an_opening_frame_larger_than_the_bound_still_waits_alone() -> None:
    client = ASGIClient(app=None)  # type: ignore[arg-type]
    await client.receive()
    writer = StreamWriter(client.send, limit=100, max_bytes=1024)
    client.paused = True
    writer.release([Frame(b"a\n\n"), Frame(b"b" * 5000)])
    assert not writer.cut
    client.resume()
    await asyncio.wait_for(writer.wait_flushed(), 5)
    assert bytes(client.body) == b"a\n\n" + b"b" * 5000
    assert (writer.frames, writer.bytes_sent) == (2, 5003)


async def test_the_opening_waits_within_the_bytes_and_not_the_frame_limit() -> None:
    client = ASGIClient(app=None)  # type: ignore[arg-type]
    await client.receive()
    writer = StreamWriter(client.send, limit=2, max_bytes=1 << 20)
    client.paused = True
    writer.release([Frame(b"%d\n\n" % n) for n in range(10)])
    assert not writer.cut
    # Live frames behind it: the client's own limit counts them alone.
    assert writer.offer(Frame(b"a\n\n"))
    assert writer.offer(Frame(b"b\n\n"))
    assert not writer.offer(Frame(b"c\n\n"))
    assert writer.cut


async def test_large_frames_are_written_frame_by_frame_never_joined() -> None:
    client = RecordingClient()
    await client.receive()
    writer = StreamWriter(client.send, limit=100, max_bytes=1 << 20)
    client.paused = True
    opening = [Frame(b"%d" % n * 40_000) for n in range(5)]
    writer.release(opening)
    live = Frame(b"live\n\n")
    writer.offer(live)
    client.resume()
    await asyncio.wait_for(writer.wait_flushed(), 5)
    sent = [*opening, live]
    assert len(client.bodies) == len(sent)
    assert all(body is frame.data for body, frame in zip(client.bodies, sent, strict=True))
    assert (writer.frames, writer.bytes_sent) == (6, 200_006)


async def test_small_opening_frames_go_out_in_few_bounded_writes() -> None:
    client = RecordingClient()
    await client.receive()
    writer = StreamWriter(client.send, limit=100, max_bytes=1 << 20)
    opening = [Frame(b"%04d\n\n" % n * 100) for n in range(300)]  # 600 bytes each
    writer.release(opening)
    assert bytes(client.body) == b"".join(frame.data for frame in opening)
    assert len(client.bodies) == 3  # 180 KB in pieces of at most 64 KiB
    assert max(len(body) for body in client.bodies) <= COALESCED_BYTES
    assert (writer.frames, writer.bytes_sent) == (300, 180_000)
