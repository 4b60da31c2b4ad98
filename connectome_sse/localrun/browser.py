"""Browser-like SSE clients on raw asyncio streams: hundreds (thousands) in one process.

``BrowserClient`` reconnects after the last ``retry`` as an EventSource does and
records what arrived when; ``resume``, ``pause()`` and ``drop()`` act like a
browser resuming, a stuck tab and a network blip.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from connectome_core.contract import RESYNC_EVENT
from connectome_sse.sse_client import EventStreamParser, ServerEvent

# A numbered event type the tests (and chaos) publish themselves: data is {"seq": n}.
SEQ_EVENT = "bench_seq"
HEALTH_EVENT = "connectome_health"


@dataclass
class Connection:
    """One stream a client held: when it opened, what arrived, how it ended."""

    opened_at: float
    seqs: list[int] = field(default_factory=list)
    first_seq_at: float | None = None
    # (arrival, monotonic; the payload's "ts", unix seconds) of every health event.
    health: list[tuple[float, float]] = field(default_factory=list)
    ended_at: float | None = None
    end: str = ""
    seq_event: str = SEQ_EVENT
    # Other numbered event types recorded, each into its own list of ``more_seqs``.
    more_seq_events: tuple[str, ...] = ()
    more_seqs: dict[str, list[int]] = field(default_factory=dict)
    # (arrival, monotonic; how many ``seqs`` had arrived before it) of every ``resync``.
    resyncs: list[tuple[float, int]] = field(default_factory=list)

    @property
    def health_events(self) -> int:
        return len(self.health)

    @property
    def first_health_at(self) -> float | None:
        return self.health[0][0] if self.health else None

    def record(self, event: ServerEvent, now: float) -> None:
        if event.event == self.seq_event:
            self.seqs.append(int(json.loads(event.data)["seq"]))
            if self.first_seq_at is None:
                self.first_seq_at = now
        elif event.event == HEALTH_EVENT:
            self.health.append((now, health_ts(event.data)))
        elif event.event in self.more_seq_events:
            self.more_seqs.setdefault(event.event, []).append(int(json.loads(event.data)["seq"]))
        elif event.event == RESYNC_EVENT:
            self.resyncs.append((now, len(self.seqs)))


def health_ts(data: str | bytes) -> float:
    """The ``ts`` of a health payload; NaN when it has none (it then never counts as fresh)."""
    try:
        value = json.loads(data).get("ts")
    except (ValueError, AttributeError):
        return float("nan")
    return float(value) if isinstance(value, int | float) else float("nan")


class BrowserClient:
    """One EventSource on ``host:port`` + ``path``, reconnecting after ``retry`` like a browser."""

    def __init__(
        self,
        host: str,
        port: int,
        path: str,
        *,
        resume: bool = False,
        seq_event: str = SEQ_EVENT,
        more_seq_events: tuple[str, ...] = (),
        source: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.host = host
        # Extra request headers (Authorization, when streams need a token).
        self.headers = dict(headers or {})
        # The local address to connect from (127.0.0.x): per-address limits see distinct browsers.
        self.source = source
        self.port = port
        self.path = path
        self.resume = resume
        self.seq_event = seq_event
        self.more_seq_events = more_seq_events
        self.retry_ms = 3000
        self.last_event_id = ""
        self.connections: list[Connection] = []
        # Answers that were not a stream, and connections that failed before one opened.
        self.failures: list[str] = []
        self._reading = asyncio.Event()
        self._reading.set()
        self._writer: asyncio.StreamWriter | None = None
        self._skip_wait = False

    @property
    def last(self) -> Connection | None:
        return self.connections[-1] if self.connections else None

    def pause(self) -> None:
        """Stop reading: bytes pile up in the socket, as behind a frozen tab."""
        self._reading.clear()

    def drop(self, reconnect_at_once: bool = False) -> None:
        """Cut the current connection; with ``reconnect_at_once`` skip the retry wait once."""
        self._skip_wait = reconnect_at_once
        if self._writer is not None:
            transport = self._writer.transport
            transport.abort()

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
            if self._skip_wait:
                self._skip_wait = False
                continue
            await asyncio.sleep(self.retry_ms / 1000)

    def _request(self) -> bytes:
        resume = (
            f"Last-Event-ID: {self.last_event_id}\r\n" if self.resume and self.last_event_id else ""
        )
        extra = "".join(f"{name}: {value}\r\n" for name, value in self.headers.items())
        return (
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Accept: text/event-stream\r\nCache-Control: no-cache\r\n{resume}{extra}\r\n"
        ).encode()

    async def _one_stream(self) -> None:
        local = None if self.source is None else (self.source, 0)
        reader, writer = await asyncio.open_connection(self.host, self.port, local_addr=local)
        self._writer = writer
        try:
            writer.write(self._request())
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
            connection = Connection(
                opened_at=time.monotonic(),
                seq_event=self.seq_event,
                more_seq_events=self.more_seq_events,
            )
            self.connections.append(connection)
            await self._read_events(reader, headers, connection)
            connection.ended_at = time.monotonic()
            connection.end = "closed"
        finally:
            self._writer = None
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _read_events(
        self, reader: asyncio.StreamReader, headers: Mapping[str, str], connection: Connection
    ) -> None:
        parser = EventStreamParser()
        lines = Lines()
        chunked = headers.get("transfer-encoding", "").lower() == "chunked"
        while True:
            await self._reading.wait()
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
                    self.last_event_id = parser.last_event_id
                    connection.record(event, now)


class Lines:
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

    def __init__(
        self,
        host: str,
        port: int,
        path: str,
        count: int,
        *,
        resume: bool = False,
        seq_event: str = SEQ_EVENT,
        more_seq_events: tuple[str, ...] = (),
        per_source: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """``per_source``: that many clients per loopback source address (127.0.1.1, ...)."""
        self.clients = [
            BrowserClient(
                host,
                port,
                path,
                resume=resume,
                seq_event=seq_event,
                more_seq_events=more_seq_events,
                source=None if per_source is None else loopback_source(i // per_source),
                headers=headers,
            )
            for i in range(count)
        ]
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


def loopback_source(n: int) -> str:
    """The ``n``-th client source address: 127.0.1.1, 127.0.1.2, ... (Linux routes all 127/8)."""
    return f"127.0.{1 + n // 250}.{1 + n % 250}"


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
