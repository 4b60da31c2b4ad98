"""The load client's worker process: N SSE streams on raw non-blocking sockets, one uvloop loop.

Each socket is driven by `loop.add_reader` + `recvmsg`, so every read carries
the kernel's receive timestamp (SO_TIMESTAMPNS). The fan-out latency is that
timestamp minus the `sent` stamp in the payload: when the server's bytes
reached the client, however busy this loop is with thousands of other sockets.
The loop's own clock gives a second latency (`app_lat`), whose distance from
the first shows the client's queueing.

A worker obeys its parent over a `multiprocessing` pipe:

    worker -> parent   ("ready", dict)   after the ramp
                       ("complete", None) every open stream has every expected event
                       ("storm", dict)   after a reconnect storm
                       ("result", dict)  raw measurements, then the worker exits
    parent -> worker   ("storm", unix_time)  close every stream at that instant, reopen all at once
                       ("measure", (run_id, expected))  start a new measurement on the open
                                             streams (answered by ("measuring", None))
                       ("report", None)      send ("report", dict) of the measurement so far
                       ("stop", None)        report and exit

A worker may connect from its own loopback source address (`source`,
127.0.0.x): one address has about 28,000 ephemeral ports towards one server
port, fewer than scenario f's streams.

It also exits by itself when the pipe closes or after `max_life_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import random
import resource
import signal
import socket
import struct
import time
from array import array
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe
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
TIMESPEC = struct.Struct("@qq")
ANCILLARY_BYTES = socket.CMSG_SPACE(TIMESPEC.size)


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


def _count(table: dict[str, int], key: str) -> None:
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
    )

    def __init__(self, st: WorkerState) -> None:
        self.st = st
        self.sock: socket.socket | None = None
        self.ready: asyncio.Future[float] | None = None
        self.is_open = False
        self.head_buf = b""
        self.sse: SSEStream | None = None
        self.total = 1  # streams of the worker, set by the worker once all are open
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
            _count(st.drop_reasons, reason)
            self.finished = True
            st.stream_finished(self.total)

    def on_readable(self) -> None:
        sock = self.sock
        if sock is None or not self.is_open:
            return
        try:
            data, ancillary, _, _ = sock.recvmsg(self.st.cfg.recv_bytes, ANCILLARY_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self.close(type(e).__name__)
            return
        now = time.time()
        if not data:
            self.close("EOF")
            return
        kernel_ts = now
        for _level, kind, blob in ancillary:
            if kind == SO_TIMESTAMPNS:
                sec, nsec = TIMESPEC.unpack_from(blob)
                kernel_ts = sec + nsec * 1e-9
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
        if not events:
            return
        st = self.st
        for event in events:
            if event.type != st.cfg.event_type:
                _count(st.other_types, event.type)
                continue
            try:
                info = st.payloads[event.data]
            except KeyError:
                info = st.payloads[event.data] = read_payload(event.data, st.run_id)
            if info is None:
                st.foreign += 1
                continue
            seq, sent = info
            if not 0 <= seq < len(self.seen):
                st.foreign += 1
            elif self.seen[seq]:
                self.dups += 1
            else:
                self.seen[seq] = 1
                self.got += 1
                if seq < self.max_seq:
                    self.reorders += 1
                else:
                    self.max_seq = seq
                st.lat_kernel.append(kernel_ts - sent)
                st.lat_app.append(now - sent)
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


class Worker:
    def __init__(self, cfg: WorkerConfig, pipe: Pipe) -> None:
        self.cfg = cfg
        self.pipe = pipe
        self.st = WorkerState(cfg)
        self.streams: list[Stream] = []
        self.commands: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def send(self, kind: str, body: Any) -> None:
        self.pipe.send((kind, body))

    async def ramp(self, loop: asyncio.AbstractEventLoop) -> dict[str, Any]:
        gate = asyncio.Semaphore(self.cfg.ramp_concurrency)
        connect_s = array("d")
        failures: dict[str, int] = {}

        async def one() -> None:
            async with gate:
                stream = Stream(self.st)
                try:
                    took = await asyncio.wait_for(stream.open(loop), self.cfg.connect_timeout_s)
                except Exception as e:  # every failure is counted by kind, none stops the ramp
                    _count(failures, _reason(e))
                    return
                self.streams.append(stream)
                connect_s.append(took)

        t0 = time.time()
        await asyncio.gather(*(one() for _ in range(self.cfg.clients)))
        self._arm_completion()
        return {
            "connected": len(self.streams),
            "ramp_s": time.time() - t0,
            "connect_s": connect_s,
            "failures": failures,
        }

    def _arm_completion(self) -> None:
        st = self.st
        st.finished = 0
        for s in self.streams:
            s.total = len(self.streams)
        st.on_all_finished = lambda: self.send("complete", None)
        for s in self.streams:
            if s.finished:
                st.finished += 1
        if st.finished == len(self.streams):  # also when no stream opened: nothing to wait for
            self.send("complete", None)

    async def storm(self, loop: asyncio.AbstractEventLoop, at: float) -> dict[str, Any]:
        """Close every stream at `at`, reopen them all at once; seconds until each streams again."""
        await asyncio.sleep(max(0.0, at - time.time()))
        st = self.st
        t0 = time.time()
        for s in self.streams:
            s.close()  # no reason given: a deliberate close is not a drop
        n = len(self.streams)
        self.streams = []
        deadline = t0 + self.cfg.storm_timeout_s
        back_s = array("d")
        failures: dict[str, int] = {}
        attempts = 0

        async def one() -> None:
            nonlocal attempts
            while time.time() < deadline:
                attempts += 1
                stream = Stream(st)
                limit = min(self.cfg.connect_timeout_s, deadline - time.time())
                try:
                    await asyncio.wait_for(stream.open(loop), max(0.01, limit))
                except Exception as e:  # a refused or timed-out attempt is retried, like a browser
                    _count(failures, _reason(e))
                    await asyncio.sleep(random.uniform(0.05, 0.5))
                    continue
                self.streams.append(stream)
                back_s.append(time.time() - t0)
                return

        await asyncio.gather(*(one() for _ in range(n)))
        self._arm_completion()
        return {
            "closed": n,
            "reconnected": len(self.streams),
            "back_s": back_s,
            "attempts": attempts,
            "failures": failures,
        }

    def restart(self, run_id: str, expected: int) -> None:
        """A new measurement on the streams already open (scenario g's steps)."""
        st = self.st
        st.run_id, st.expected = run_id, expected
        st.payloads.clear()
        st.lat_kernel = array("d")
        st.lat_app = array("d")
        st.first_rx = st.last_rx = 0.0
        st.foreign = st.dropped = 0
        st.other_types.clear()
        st.drop_reasons.clear()
        for s in self.streams:
            s.restart()
        self._arm_completion()

    def result(self) -> dict[str, Any]:
        st = self.st
        protocol_errors: dict[str, int] = {}
        comments = 0
        for s in self.streams:
            if s.sse is not None:
                comments += s.sse.parser.comments
                for k, v in s.sse.parser.errors.items():
                    protocol_errors[k] = protocol_errors.get(k, 0) + v
        return {
            "lat_kernel": st.lat_kernel,
            "lat_app": st.lat_app,
            "got": array("I", (s.got for s in self.streams)),
            "dups": sum(s.dups for s in self.streams),
            "reorders": sum(s.reorders for s in self.streams),
            "dropped": st.dropped,
            "drop_reasons": st.drop_reasons,
            "other_types": st.other_types,
            "foreign": st.foreign,
            "comments": comments,
            "protocol_errors": protocol_errors,
            "first_rx": st.first_rx,
            "last_rx": st.last_rx,
            "cache_hits": st.feed_cache.hits,
            "cache_misses": st.feed_cache.misses,
        }

    async def main(self) -> None:
        loop = asyncio.get_running_loop()
        fd = self.pipe.fileno()

        def on_command() -> None:
            try:
                msg = self.pipe.recv()
            except (EOFError, OSError):
                msg = ("stop", "parent gone")
            self.commands.put_nowait(msg)

        self.send("ready", await self.ramp(loop))
        loop.add_reader(fd, on_command)
        os.set_blocking(fd, True)  # sends must not fail half-way on a large result
        deadline = time.time() + self.cfg.max_life_s
        while True:
            try:
                kind, body = await asyncio.wait_for(
                    self.commands.get(), max(0.0, deadline - time.time())
                )
            except TimeoutError:
                kind, body = "stop", "max life"
            if kind == "storm":
                self.send("storm", await self.storm(loop, float(body)))
            elif kind == "measure":
                self.restart(*body)
                self.send("measuring", None)
            elif kind == "report":
                self.send("report", self.result())
            elif kind == "stop":
                break
        loop.remove_reader(fd)
        self.st.measuring = False
        result = self.result()
        for s in self.streams:
            s.close()
        if body != "parent gone":
            with contextlib.suppress(OSError):  # the parent may have given up on us
                self.send("result", result)


def _reason(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return "timeout"
    return f"{type(e).__name__}: {e}"[:80]


def worker_main(cfg: WorkerConfig, pipe: Pipe) -> None:
    """Entry point of a worker process."""
    import uvloop

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    gc.disable()  # a bounded run; collections would add pauses to the latencies
    uvloop.run(Worker(cfg, pipe).main())
