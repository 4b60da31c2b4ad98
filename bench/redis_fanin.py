"""How many gateway subscriptions one Redis feeds, and at what cost.

``python3 -m bench.redis_fanin [--subscribers 200,1000,5000] [--rates 10,100]``

On its own redis-server: N ``PSUBSCRIBE sse:*`` connections, R events a second;
prints the PUBLISH round trip, delivery latency on the last-subscribed
connections, and Redis's and this client's CPU. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import resource
import statistics
import time
from dataclasses import dataclass

import redis
import redis.asyncio as aioredis

from bench.bootstrap import raise_open_files
from bench.systems import bench_redis
from connectome_sse.localrun.redis_server import RedisServer

SAMPLED = 10  # subscribers, subscribed last, that parse and time every message


class Drain(asyncio.Protocol):
    """A subscriber that reads and discards: PSUBSCRIBE, then drop every byte."""

    def __init__(self, ready: asyncio.Event) -> None:
        self.ready = ready
        self.received = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(b"*2\r\n$10\r\nPSUBSCRIBE\r\n$5\r\nsse:*\r\n")

    def data_received(self, data: bytes) -> None:
        if not self.ready.is_set():
            self.ready.set()
        self.received += len(data)


@dataclass
class Result:
    subscribers: int
    rate: float
    published: int
    publish_p50_ms: float
    publish_p99_ms: float
    deliver_p50_ms: float
    deliver_max_ms: float
    redis_cpu: float
    client_cpu: float


async def sampled_reader(url: str, latencies: list[float], ready: asyncio.Event) -> None:
    client = aioredis.Redis.from_url(url)
    pubsub = client.pubsub()
    await pubsub.psubscribe("sse:*")
    ready.set()
    try:
        while True:
            message = await pubsub.get_message(timeout=1.0)
            if message and message["type"] == "pmessage":
                latencies.append(time.time() - float(message["data"]))
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await client.aclose()


def client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_case(server: RedisServer, subscribers: int, rate: float, seconds: float) -> Result:
    port, url = server.port, server.url
    loop = asyncio.get_running_loop()
    transports: list[asyncio.BaseTransport] = []
    readies = []
    for _ in range(subscribers - SAMPLED):
        ready = asyncio.Event()
        connection = await loop.create_connection(
            functools.partial(Drain, ready), "127.0.0.1", port
        )
        transports.append(connection[0])
        readies.append(ready)
    await asyncio.gather(*(r.wait() for r in readies))
    latencies: list[float] = []
    sample_ready = [asyncio.Event() for _ in range(SAMPLED)]
    readers = [asyncio.create_task(sampled_reader(url, latencies, ready)) for ready in sample_ready]
    await asyncio.gather(*(r.wait() for r in sample_ready))
    publisher = redis.Redis(port=port)
    round_trips: list[float] = []
    cpu0, client0, wall0 = server.cpu_seconds(), client_cpu(), time.monotonic()
    interval = 1.0 / rate
    next_at = time.monotonic()
    published = 0
    while time.monotonic() - wall0 < seconds:
        started = time.monotonic()
        await asyncio.to_thread(publisher.publish, "sse:bench", repr(time.time()))
        round_trips.append(time.monotonic() - started)
        published += 1
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    await asyncio.sleep(0.5)  # the last deliveries
    wall = time.monotonic() - wall0
    cpu = (server.cpu_seconds() - cpu0) / wall
    own = (client_cpu() - client0) / wall
    for task in readers:
        task.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    for each in transports:
        each.close()
    publisher.close()
    ms = sorted(x * 1000 for x in round_trips)
    delivered = sorted(x * 1000 for x in latencies) or [float("nan")]
    return Result(
        subscribers,
        rate,
        published,
        statistics.median(ms),
        ms[min(len(ms) - 1, int(len(ms) * 0.99))],
        statistics.median(delivered),
        delivered[-1],
        cpu,
        own,
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python3 -m bench.redis_fanin", description=__doc__)
    parser.add_argument("--subscribers", default="200,1000,5000")
    parser.add_argument("--rates", default="10,100")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    raise_open_files()  # 5,000 subscriber sockets in this one process
    server = bench_redis().start()
    try:
        print(
            "| subscribers | events/s | PUBLISH p50 ms | PUBLISH p99 ms | delivery p50 ms "
            "(last subscribers) | delivery max ms | Redis CPU | bench client CPU |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for n in (int(x) for x in args.subscribers.split(",")):
            for rate in (float(x) for x in args.rates.split(",")):
                r = asyncio.run(run_case(server, n, rate, args.seconds))
                print(
                    f"| {r.subscribers} | {r.rate:g} | {r.publish_p50_ms:.2f} | "
                    f"{r.publish_p99_ms:.2f} | {r.deliver_p50_ms:.2f} | {r.deliver_max_ms:.2f} | "
                    f"{r.redis_cpu:.0%} | {r.client_cpu:.0%} |",
                    flush=True,
                )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
