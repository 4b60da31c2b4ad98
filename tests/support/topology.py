"""The scaled-out deployment on loopback, for real, and browser-like clients that ride it.

``Topology`` is what docker-compose.yml runs, as local processes: Redis (a
fixture's), publishers (leader and standby), the demo engine, N gateways and
Debian's nginx with the project's own configuration in front of them.

``BrowserClient`` is one EventSource as a browser runs it: it reads the stream
through nginx and, when the stream ends or breaks, waits the last ``retry``
the server sent and connects again to the same URL. It runs on raw asyncio
streams (HTTP/1.1, chunked) so hundreds of them fit in one test process, and
records per connection what arrived and when.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from connectome_sse.sse_client import EventStreamParser, ServerEvent
from tests.support.nginx import NginxServer
from tests.support.ports import free_port
from tests.support.processes import ManagedProcess, console_script
from tests.support.redis_server import RedisServer
from tests.support.wait import wait_for

# A numbered event type the tests publish themselves: data is {"seq": n}.
SEQ_EVENT = "bench_seq"
HEALTH_EVENT = "connectome_health"


@dataclass
class Gateway:
    process: ManagedProcess
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def _get(url: str, timeout: float = 2.0) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=timeout, trust_env=False)
    except httpx.HTTPError:
        return None


def _ready(url: str) -> bool:
    response = _get(url + "/readyz")
    return response is not None and response.status_code == 200


def open_streams(metrics_text: str) -> int:
    """``sse_open_streams`` from a gateway's Prometheus text."""
    match = re.search(r"^sse_open_streams(?:\{[^}]*\})? ([0-9.e+]+)$", metrics_text, re.M)
    if match is None:
        raise AssertionError("no sse_open_streams in /metrics")
    return int(float(match.group(1)))


class Topology:
    def __init__(
        self,
        workdir: Path,
        redis: RedisServer,
        gateways: int = 3,
        publishers: int = 2,
        engine: bool = True,
        gateway_env: Mapping[str, str] | None = None,
        publisher_env: Mapping[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.redis = redis
        self.gateway_env = {"REDIS_URL": redis.url, **(gateway_env or {})}
        self.publisher_env = {"REDIS_URL": redis.url, **(publisher_env or {})}
        self.gateways = [
            Gateway(
                ManagedProcess(
                    console_script("sse-gateway", "--host", "127.0.0.1", "--port", str(port)),
                    workdir / f"gateway-{i}.log",
                    env=self.gateway_env,
                ),
                port,
            )
            for i, port in enumerate(free_port() for _ in range(gateways))
        ]
        self.publishers = [
            ManagedProcess(
                console_script("health-publisher"),
                workdir / f"publisher-{i}.log",
                env={**self.publisher_env, "PUBLISHER_CONSUMER": f"publisher-{i}"},
            )
            for i in range(publishers)
        ]
        self.engine = (
            ManagedProcess(
                console_script("connectome-sse", "demo-engine"),
                workdir / "demo-engine.log",
                env={"REDIS_URL": redis.url},
            )
            if engine
            else None
        )
        self.nginx = NginxServer([g.address for g in self.gateways])

    @property
    def url(self) -> str:
        return self.nginx.url

    def processes(self) -> Iterator[tuple[str, ManagedProcess]]:
        for i, publisher in enumerate(self.publishers):
            yield f"publisher-{i}", publisher
        if self.engine is not None:
            yield "demo-engine", self.engine
        for i, gateway in enumerate(self.gateways):
            yield f"gateway-{i}", gateway.process

    def start(self) -> Topology:
        # Everything starts at once, as compose does once Redis is healthy.
        for _, process in self.processes():
            process.start()
        for i, gateway in enumerate(self.gateways):
            self._wait_ready(f"gateway-{i}", gateway)
        self.nginx.start()
        wait_for(lambda: _ready(self.url), timeout=15, what="/readyz through nginx")
        return self

    def _wait_ready(self, name: str, gateway: Gateway) -> None:
        def ready() -> bool:
            return self._alive_and(name, gateway.process) and _ready(gateway.url)

        wait_for(ready, timeout=30, what=f"{name} /readyz")

    def _alive_and(self, name: str, process: ManagedProcess) -> bool:
        if not process.alive():
            raise AssertionError(f"{name} exited:\n{process.log()[-3000:]}")
        return True

    def check_running(self) -> None:
        """Every process still up (a test calls it before blaming the clients)."""
        for name, process in self.processes():
            self._alive_and(name, process)

    def open_streams(self, gateway: Gateway) -> int:
        response = _get(gateway.url + "/metrics")
        assert response is not None and response.status_code == 200, "no /metrics"
        return open_streams(response.text)

    def logs(self, tail: int = 2000) -> str:
        parts = [f"--- {name}\n{process.log()[-tail:]}" for name, process in self.processes()]
        parts.append(f"--- nginx\n{self.nginx.log()[-tail:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        # nginx first (as clients leave), then gateways, engine, publishers.
        self.nginx.stop()
        for _, process in reversed(list(self.processes())):
            process.stop(timeout=10)


@dataclass
class Connection:
    """One stream a client held: when it opened, what arrived, how it ended."""

    opened_at: float
    seqs: list[int] = field(default_factory=list)
    first_seq_at: float | None = None
    health_events: int = 0
    first_health_at: float | None = None
    ended_at: float | None = None
    end: str = ""

    def record(self, event: ServerEvent, now: float) -> None:
        if event.event == SEQ_EVENT:
            self.seqs.append(int(json.loads(event.data)["seq"]))
            if self.first_seq_at is None:
                self.first_seq_at = now
        elif event.event == HEALTH_EVENT:
            self.health_events += 1
            if self.first_health_at is None:
                self.first_health_at = now


class BrowserClient:
    """One EventSource on ``host:port`` + ``path``, reconnecting after ``retry`` like a browser."""

    def __init__(self, host: str, port: int, path: str) -> None:
        self.host = host
        self.port = port
        self.path = path
        self.retry_ms = 3000
        self.connections: list[Connection] = []
        # Answers that were not a stream, and connections that failed before one opened.
        self.failures: list[str] = []

    @property
    def last(self) -> Connection | None:
        return self.connections[-1] if self.connections else None

    async def run(self) -> None:
        while True:
            try:
                await self._one_stream()
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                if self.last is not None and self.last.ended_at is None:
                    self.last.ended_at = time.monotonic()
                    self.last.end = type(exc).__name__
                else:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(self.retry_ms / 1000)

    async def _one_stream(self) -> None:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            writer.write(
                (
                    f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                    "Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
                ).encode()
            )
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            status_line, *header_lines = head.split("\r\n")
            status = int(status_line.split(" ", 2)[1])
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(":") for line in header_lines if line)
            }
            if status != 200 or not headers.get("content-type", "").startswith("text/event-stream"):
                self.failures.append(f"{status} {headers.get('content-type', '')}")
                return
            connection = Connection(opened_at=time.monotonic())
            self.connections.append(connection)
            await self._read_events(reader, headers, connection)
            connection.ended_at = time.monotonic()
            connection.end = "closed"
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _read_events(
        self, reader: asyncio.StreamReader, headers: Mapping[str, str], connection: Connection
    ) -> None:
        parser = EventStreamParser()
        lines = _Lines()
        chunked = headers.get("transfer-encoding", "").lower() == "chunked"
        while True:
            if chunked:
                size = int((await reader.readline()).split(b";")[0], 16)
                if size == 0:
                    return
                data = (await reader.readexactly(size + 2))[:-2]
            else:
                data = await reader.read(65536)
                if not data:
                    return
            now = time.monotonic()
            for line in lines.feed(data):
                event = parser.feed(line)
                if parser.retry_ms is not None:
                    self.retry_ms = parser.retry_ms
                if event is not None:
                    connection.record(event, now)


class _Lines:
    """Bytes of an event stream -> its lines, split on CRLF, LF or CR as the SSE spec says."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""

    def feed(self, data: bytes) -> list[str]:
        text = self._buffer + self._decoder.decode(data)
        # A trailing CR may be the first half of a CRLF still in flight: keep it back.
        hold = text.endswith("\r")
        if hold:
            text = text[:-1]
        lines = re.split(r"\r\n|\r|\n", text)
        self._buffer = lines.pop() + ("\r" if hold else "")
        return lines


class ClientFleet:
    """Many BrowserClients on one URL, each its own task."""

    def __init__(self, host: str, port: int, path: str, count: int) -> None:
        self.clients = [BrowserClient(host, port, path) for _ in range(count)]
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(client.run()) for client in self.clients]

    def crashed(self) -> list[BaseException]:
        """Exceptions that ended a client task (a bug in the client, not in the gateways)."""
        return [
            exc
            for task in self._tasks
            if task.done() and not task.cancelled() and (exc := task.exception()) is not None
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def failures(self) -> list[str]:
        return [failure for client in self.clients for failure in client.failures]


def seq_range(first: int, last: int) -> list[int]:
    return list(range(first, last + 1))


def describe(clients: Sequence[BrowserClient], limit: int = 5) -> str:
    """A few clients' connections, for assertion messages."""
    out = []
    for client in clients[:limit]:
        conns = [
            f"[{c.seqs[:3]}..{c.seqs[-3:]} n={len(c.seqs)} health={c.health_events} end={c.end}]"
            for c in client.connections
        ]
        out.append(f"retry={client.retry_ms} failures={client.failures[:3]} conns={conns}")
    return "\n".join(out)
