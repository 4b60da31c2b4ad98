"""The load client's SSE streams: raw non-blocking sockets read with the kernel's timestamps.

Each socket is read by `loop.add_reader` + `recvmsg`, so every read carries its
receive time (SO_TIMESTAMPNS): the fan-out latency is that minus the payload's
`sent` stamp, however busy the loop is; `app_lat` (the loop's clock) shows the
client's own queueing.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from array import array
from dataclasses import dataclass
from typing import Any

from bench.payload import read_payload
from bench.sse_wire import (
    MAX_HEAD_BYTES,
    FeedCache,
    SSEStream,
    WireError,
    parse_response_head,
)

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
# The port is picked at connect(), by the 4-tuple, not at bind(): ports are not used up
# by the binding itself (Linux).
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
KERNEL_TIME = struct.Struct("@qq")  # a struct timespec: seconds, nanoseconds
ANCILLARY_BYTES = socket.CMSG_SPACE(KERNEL_TIME.size)


@dataclass(frozen=True)
class WorkerConfig:
    host: str
    port: int
    path: str
    clients: int
    expected: int  # events the parent will publish (measured per stream)
    run_id: str
    event_type: str
    ramp_concurrency: int
    connect_timeout_s: float
    storm_timeout_s: float
    max_life_s: float
    recv_bytes: int = 65536
    source: str | None = None  # loopback address to connect from; None: the kernel's choice
    headers: tuple[tuple[str, str], ...] = ()  # extra request headers (a bearer token)


class WorkerState:
    """What all streams of one worker share: the caches and the measurements."""

    def __init__(self, cfg: WorkerConfig) -> None:
        self.cfg = cfg
        self.request = (
            f"GET {cfg.path} HTTP/1.1\r\nHost: {cfg.host}:{cfg.port}\r\n"
            "Accept: text/event-stream\r\nCache-Control: no-cache\r\n"
            + "".join(f"{name}: {value}\r\n" for name, value in cfg.headers)
            + "\r\n"
        ).encode()
        self.feed_cache = FeedCache()
        self.run_id = cfg.run_id  # both change with each ("measure", ...) command
        self.expected = cfg.expected
        self.payloads: dict[str, tuple[int, float] | None] = {}
        self.lat_kernel = array("d")
        self.lat_app = array("d")
        # A storm's bystanders (streams kept open through it): send time and fan-out of each
        # receipt, for the fan-out of open streams while others reconnect.
        self.watch_sent = array("d")
        self.watch_lat = array("d")
        self.first_rx = 0.0
        self.last_rx = 0.0
        self.other_types: dict[str, int] = {}
        self.foreign = 0  # events of the measured type that are not this run's payloads
        self.dropped = 0  # streams the server ended during the measurement
        self.drop_reasons: dict[str, int] = {}
        self.finished = 0  # streams complete or dropped
        self.measuring = True
        self.on_all_finished: Any = None

    def stream_finished(self, n_streams: int) -> None:
        self.finished += 1
        if self.finished == n_streams and self.on_all_finished is not None:
            self.on_all_finished()


def count_in(table: dict[str, int], key: str) -> None:
    """One more of `key` in `table`."""
    table[key] = table.get(key, 0) + 1


class Stream:
    """One SSE connection."""

    __slots__ = (
        "dups",
        "finished",
        "got",
        "head_buf",
        "is_open",
        "max_seq",
        "ready",
        "reorders",
        "seen",
        "sock",
        "sse",
        "st",
        "total",
        "watched",
    )

    def __init__(self, st: WorkerState) -> None:
        self.st = st
        self.sock: socket.socket | None = None
        self.ready: asyncio.Future[float] | None = None
        self.is_open = False
        self.head_buf = b""
        self.sse: SSEStream | None = None
        self.total = 1  # streams of the worker, set by the worker once all are open
        self.watched = False  # a bystander of a storm: its receipts are also kept apart
        self.restart()

    def restart(self) -> None:
        """Forget what was received: a new measurement on the same connection."""
        self.seen = bytearray(self.st.expected)
        self.got = self.dups = self.reorders = 0
        self.max_seq = -1
        self.finished = False

    async def open(self, loop: asyncio.AbstractEventLoop) -> float:
        """Connect and read the response head; seconds it took. Raises on any failure."""
        t0 = time.time()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock = sock
        self.is_open = True
        self.ready = loop.create_future()
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            if self.st.cfg.source is not None:
                sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                sock.bind((self.st.cfg.source, 0))
            await loop.sock_connect(sock, (self.st.cfg.host, self.st.cfg.port))
            await loop.sock_sendall(sock, self.st.request)
            loop.add_reader(sock.fileno(), self.on_readable)
            await self.ready
        except BaseException:
            if not self.ready.done():
                self.ready.cancel()  # nobody will await it any more
            self.close()
            raise
        return time.time() - t0

    def close(self, reason: str | None = None) -> None:
        if self.is_open and self.sock is not None:
            self.is_open = False
            with contextlib.suppress(RuntimeError, ValueError):
                asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.sock.close()
        if self.ready is not None and not self.ready.done():
            self.ready.set_exception(ConnectionError(reason or "closed before the response head"))
        elif reason is not None and self.st.measuring and not self.finished:
            st = self.st
            st.dropped += 1
            count_in(st.drop_reasons, reason)
            self.finished = True
            st.stream_finished(self.total)

    def on_readable(self) -> None:
        sock = self.sock
        if sock is None or not self.is_open:
            return
        try:
            data, ancillary, _, _ = sock.recvmsg(self.st.cfg.recv_bytes, ANCILLARY_BYTES)
        except OSError as e:
            if not isinstance(e, (BlockingIOError, InterruptedError)):  # those: read again later
                self.close(type(e).__name__)
            return
        now = time.time()
        if not data:
            self.close("EOF")
            return
        kernel_ts = kernel_time(ancillary, now)
        if self.sse is None:
            data = self._read_head(data)
            if self.sse is None or not data:
                return
        try:
            events = self.sse.feed(data)
        except WireError as e:
            self.close(f"wire: {e}"[:60])
            return
        if self.sse.ended:
            self.close("end of body")
        st = self.st
        for event in events:
            if event.type != st.cfg.event_type:
                count_in(st.other_types, event.type)
                continue
            try:
                info = st.payloads[event.data]
            except KeyError:
                info = st.payloads[event.data] = read_payload(event.data, st.run_id)
            if info is None or not 0 <= info[0] < len(self.seen):
                st.foreign += 1
                continue
            seq, sent = info
            if self.seen[seq]:
                self.dups += 1
                continue
            self.seen[seq] = 1
            self.got += 1
            if seq < self.max_seq:
                self.reorders += 1
            else:
                self.max_seq = seq
            st.lat_kernel.append(kernel_ts - sent)
            st.lat_app.append(now - sent)
            if self.watched:
                st.watch_sent.append(sent)
                st.watch_lat.append(kernel_ts - sent)
            if not st.first_rx:
                st.first_rx = now
            st.last_rx = now
            if self.got == len(self.seen) and not self.finished:
                self.finished = True
                st.stream_finished(self.total)

    def _read_head(self, data: bytes) -> bytes:
        """Collect the response head; once complete, start the body and return its first bytes."""
        buf = self.head_buf + data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD_BYTES:
                self.close("response head too large")
            else:
                self.head_buf = buf
            return b""
        self.head_buf = b""
        try:
            head = parse_response_head(buf[:end])
        except WireError as e:
            self.close(f"wire: {e}"[:60])
            return b""
        if head.status != 200:
            self.close(f"HTTP {head.status}")
            return b""
        if head.content_type != "text/event-stream":
            self.close(f"content-type {head.content_type[:30]}")
            return b""
        self.sse = SSEStream(head.chunked, self.st.feed_cache)
        if self.ready is not None and not self.ready.done():
            self.ready.set_result(time.time())
        return buf[end + 4 :]


def kernel_time(ancillary: list[tuple[int, int, bytes]], default: float) -> float:
    """When the kernel received a read's bytes (SO_TIMESTAMPNS), else ``default``."""
    for _level, kind, blob in ancillary:
        if kind == SO_TIMESTAMPNS:
            sec, nsec = KERNEL_TIME.unpack_from(blob)
            return float(sec + nsec * 1e-9)
    return default
