"""A new stream's opening (its snapshots) inside the client's byte bound, on a real gateway.

Sixteen snapshots of almost 1 MB each make an opening of 16 MB. Clients that
connect and never read must not each cost the gateway that much: the opening
goes through the same bounded queue as live events, so such a client is cut
as soon as what waits for it passes ``SSE_CLIENT_BUFFER_BYTES``. A client that
reads gets the whole opening when the bound allows it, and a single snapshot
larger than the bound is still delivered (one event is always taken).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectome_sse.localrun.redis_server import RedisServer
from connectome_sse.localrun.wait import wait_for
from tests.conftest import StartGateway
from tests.support.raw_stream import RawStream

SNAPSHOTS = 16
SNAPSHOT_BYTES = 1_000_000  # under SSE_MAX_EVENT_BYTES (1 MiB)
STALLED = 10
QUIET = {"SSE_PING_INTERVAL": "600", "SSE_SEND_TIMEOUT": "300"}  # only the byte bound can cut


def snapshot(n: int) -> str:
    head = json.dumps({"n": n, "pad": ""})
    return json.dumps({"n": n, "pad": "x" * (SNAPSHOT_BYTES - len(head))})


@pytest.fixture
def big_snapshots(redis_server: RedisServer) -> Iterator[RedisServer]:
    with redis_server.client() as redis:
        for n in range(SNAPSHOTS):
            redis.set(f"sse:last:big{n}", snapshot(n))
    yield redis_server


def memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def stalled_client(port: int) -> socket.socket:
    """A client that sends its request and never reads (a small receive buffer)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /api/sse HTTP/1.1\r\nHost: test\r\n\r\n")
    return sock


def test_regression_clients_that_never_read_their_opening_are_cut_within_the_byte_bound(
    big_snapshots: RedisServer, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(big_snapshots.url, env=QUIET).wait_ready()
    # One snapshot read first (16 MB read, decoded and framed: tens of MB for a moment,
    # whoever asks), so what is measured next is what each stalled client costs.
    reader = RawStream(gateway.port, "/api/sse?events=big0")
    try:
        read_events(reader, 1)
    finally:
        reader.close()
    wait_for(lambda: gateway.metric("sse_open_streams") == 0, what="the first reader gone")
    rss_before = memory_kib(gateway.pid, "VmRSS")
    hwm_before = memory_kib(gateway.pid, "VmHWM")
    sockets = [stalled_client(gateway.port) for _ in range(STALLED)]
    try:
        wait_for(
            lambda: gateway.metric("sse_streams_opened_total") == STALLED + 1, what="streams opened"
        )
        try:
            wait_for(
                lambda: gateway.metric("sse_slow_clients_cut_total") == STALLED,
                timeout=20,
                what="every stalled client cut",
            )
            cut = True
        except AssertionError:
            cut = False
        rss_after = memory_kib(gateway.pid, "VmRSS")
        hwm_after = memory_kib(gateway.pid, "VmHWM")
    finally:
        for sock in sockets:
            sock.close()
    grown_mib = (rss_after - rss_before) / 1024
    peak_mib = (hwm_after - hwm_before) / 1024
    print(
        f"gateway RSS {rss_before / 1024:.0f} -> {rss_after / 1024:.0f} MiB "
        f"(+{grown_mib:.0f}), peak +{peak_mib:.0f} MiB, for {STALLED} stalled clients "
        f"and {SNAPSHOTS} snapshots of {SNAPSHOT_BYTES} bytes"
    )
    assert peak_mib < 40, f"the gateway grew {peak_mib:.0f} MiB at its peak"
    assert grown_mib < 40, f"the gateway grew {grown_mib:.0f} MiB"
    assert cut, "the stalled clients were not cut by the byte bound"
    wait_for(lambda: gateway.metric("sse_open_streams") == 0, what="their streams closed")


def read_events(stream: RawStream, count: int, timeout: float = 20.0) -> None:
    stream.read_until(
        # The retry: frame, then the events (counted once most of their bytes are in).
        lambda s: len(s.data) > count * SNAPSHOT_BYTES and s.body.count(b"\n\n") >= count + 1,
        timeout=timeout,
        what=f"{count} events",
    )


def test_a_reading_client_gets_an_opening_as_large_as_the_bound_allows(
    big_snapshots: RedisServer, start_gateway: StartGateway
) -> None:
    bound = (SNAPSHOTS + 1) * SNAPSHOT_BYTES * 2  # room for the whole opening
    gateway = start_gateway(
        big_snapshots.url, env={**QUIET, "SSE_CLIENT_BUFFER_BYTES": str(bound)}
    ).wait_ready()
    stream = RawStream(gateway.port)
    try:
        started = time.monotonic()
        read_events(stream, SNAPSHOTS)
        print(f"{SNAPSHOTS} MB of snapshots read in {time.monotonic() - started:.2f}s")
        body = stream.body
        for n in range(SNAPSHOTS):
            assert f"event: big{n}\ndata: {snapshot(n)}\n\n".encode() in body, n
    finally:
        stream.close()
    assert gateway.metric("sse_slow_clients_cut_total") == 0


def test_a_single_snapshot_larger_than_the_bound_is_still_delivered(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    with redis_server.client() as redis:
        redis.set("sse:last:big0", snapshot(0))
    gateway = start_gateway(
        redis_server.url, env={**QUIET, "SSE_CLIENT_BUFFER_BYTES": "65536"}
    ).wait_ready()
    stream = RawStream(gateway.port)
    try:
        read_events(stream, 1)
        assert f"event: big0\ndata: {snapshot(0)}\n\n".encode() in stream.body
    finally:
        stream.close()
    assert gateway.metric("sse_slow_clients_cut_total") == 0
