"""A dashboard that stops reading: latest-only health, bounded memory, SSE_SEND_TIMEOUT.

The client is a raw socket with a small receive buffer that simply stops
calling ``recv``, which is what a stuck browser tab looks like to the gateway.
Health events are large (64 KB) so the socket buffers fill within a second
and the rest of the run exercises the gateway's own queue.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
from pathlib import Path

from connectome_sse.localrun.redis_server import RedisServer
from connectome_sse.localrun.wait import until
from tests.conftest import StartGateway

PAD = "x" * 65536
SEQ = re.compile(rb'"seq": (\d+)')


def stalled_client(port: int, path: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    return sock


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def health(seq: int) -> str:
    return json.dumps({"seq": seq, "pad": PAD})


async def publish_at_50_per_second(redis: object, start: int, count: int) -> None:
    for seq in range(start, start + count):
        redis.publish("sse:connectome_health", health(seq))  # type: ignore[attr-defined]
        await asyncio.sleep(0.02)  # the publish cadence itself, not a wait for a condition


async def test_a_stalled_dashboard_is_never_cut_stays_bounded_and_then_gets_the_newest_health(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    # A stall as long as the default SSE_SEND_TIMEOUT (30 s) would end in that cut,
    # which the next test covers: here the timeout is out of the way.
    gateway = start_gateway(redis_server.url, env={"SSE_SEND_TIMEOUT": "60"}).wait_ready()
    redis = redis_server.client()
    sock = stalled_client(gateway.port, "/api/sse?events=connectome_health")
    try:
        await until(lambda: gateway.metric("sse_open_streams") == 1, what="subscribed")
        before = rss_kb(gateway.pid)
        count = 1500  # 30 s at 50/s: 96 MB of health for a client that reads nothing
        await publish_at_50_per_second(redis, 0, count)
        grown_mb = (rss_kb(gateway.pid) - before) / 1024
        print(f"gateway RSS grew {grown_mb:.1f} MB for one stalled client")
        assert gateway.metric("sse_slow_clients_cut_total") == 0
        assert gateway.metric("sse_open_streams") == 1
        assert gateway.metric("sse_events_conflated_total") > count / 2
        assert grown_mb < 12, f"gateway grew {grown_mb:.1f} MB for one stalled client"
        # It reads again: what the socket buffers held, then the newest health, no backlog.
        sock.settimeout(5)
        received = b""
        while not received.endswith(b"0\r\n\r\n") and b'"seq": %d' % (count - 1) not in received:
            received += sock.recv(1 << 20)
        seqs = [int(n) for n in SEQ.findall(received)]
        prefix = 0
        while prefix < len(seqs) and seqs[prefix] == prefix:
            prefix += 1
        assert seqs[prefix:] == [count - 1], f"after the buffered {prefix}: {seqs[prefix:]}"
        redis.publish("sse:connectome_health", health(count))  # still open, live again
        while b'"seq": %d' % count not in received:
            received += sock.recv(1 << 20)
    finally:
        sock.close()


async def test_a_client_that_takes_no_bytes_is_cut_after_the_send_timeout(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(redis_server.url, env={"SSE_SEND_TIMEOUT": "2"}).wait_ready()
    redis = redis_server.client()
    sock = stalled_client(gateway.port, "/api/sse?events=connectome_health")
    try:
        await until(lambda: gateway.metric("sse_open_streams") == 1, what="subscribed")
        seq = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while gateway.metric("sse_slow_clients_cut_total") == 0:
            assert loop.time() < deadline, "the stalled client was never cut"
            await publish_at_50_per_second(redis, seq, 10)
            seq += 10
        await until(lambda: gateway.metric("sse_open_streams") == 0, what="its stream closed")
        # Cut by time, not by count: at 50/s a buffer of 256 would have cut it in ~5 s
        # only without conflation; the queue never held more than one health.
        assert gateway.metric("sse_events_conflated_total") > 0
    finally:
        sock.close()


async def test_regression_a_stalled_client_of_large_events_is_cut_by_bytes_not_frames(
    redis_server: RedisServer, start_gateway: StartGateway
) -> None:
    # Through a real process: with the default SSE_CLIENT_BUFFER_BYTES
    # (1 MiB), 1 MB events cut a client that reads nothing after a few of them. Bounded
    # by frames alone (SSE_CLIENT_BUFFER, 256), it would hold all 60 MB and stay open.
    gateway = start_gateway(redis_server.url).wait_ready()
    redis = redis_server.client()
    sock = stalled_client(gateway.port, "/api/sse?events=bulk")
    try:
        await until(lambda: gateway.metric("sse_open_streams") == 1, what="subscribed")
        before = rss_kb(gateway.pid)
        body = "y" * 1_000_000
        # One at a time, each relayed before the next: a burst would pass Redis's own
        # output-buffer limit for the gateway's subscription (32 MB) on a busy machine.
        for n in range(60):
            if gateway.metric("sse_slow_clients_cut_total"):
                break
            redis.publish("sse:bulk", body)
            await until(lambda n=n: gateway.metric("sse_events_relayed_total") > n, what="relayed")
        await until(lambda: gateway.metric("sse_slow_clients_cut_total") == 1, what="the cut")
        await until(lambda: gateway.metric("sse_open_streams") == 0, what="its stream closed")
        grown_mb = (rss_kb(gateway.pid) - before) / 1024
        assert grown_mb < 30, f"gateway grew {grown_mb:.1f} MB for one stalled client"
    finally:
        sock.close()
