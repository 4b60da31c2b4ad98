"""A load client worker process: N streams (`bench.client`) on one uvloop loop, run by its parent.

The parent speaks over a `multiprocessing` pipe (see `Worker.main`). A worker may
connect from its own loopback address (`source`, 127.0.0.x): one address has
about 28,000 ephemeral ports towards one server port. It also exits by itself
when the pipe closes or after `max_life_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import random
import resource
import signal
import time
from array import array
from multiprocessing.connection import Connection as Pipe
from typing import Any

from bench.client import Stream, WorkerConfig, WorkerState, count_in


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
                    count_in(failures, _reason(e))
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

    async def storm(
        self, loop: asyncio.AbstractEventLoop, at: float, keep: int = 0, watch: bool = False
    ) -> dict[str, Any]:
        """Close every stream but the first `keep` at `at` and reopen them all at once;
        seconds until each streams again. `watch`: the kept streams' receipts are kept apart
        (`watched`), for the fan-out of open streams during the storm."""
        st = self.st
        kept, stormed = self.streams[:keep], self.streams[keep:]
        st.watch_sent, st.watch_lat = array("d"), array("d")
        for s in kept:
            s.watched = watch  # from now: the receipts before the storm are the quiet ones
        await asyncio.sleep(max(0.0, at - time.time()))
        t0 = time.time()
        for s in stormed:
            s.close()  # no reason given: a deliberate close is not a drop
        n = len(stormed)
        self.streams = list(kept)
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
                    count_in(failures, _reason(e))
                    await asyncio.sleep(random.uniform(0.05, 0.5))
                    continue
                self.streams.append(stream)
                back_s.append(time.time() - t0)
                return

        await asyncio.gather(*(one() for _ in range(n)))
        self._arm_completion()
        return {
            "closed": n,
            "reconnected": len(self.streams) - len(kept),
            "back_s": back_s,
            "attempts": attempts,
            "failures": failures,
        }

    def watched(self) -> dict[str, Any]:
        """The kept streams' receipts since the last storm; they are no longer watched."""
        for s in self.streams:
            s.watched = False
        return {"sent": self.st.watch_sent, "lat": self.st.watch_lat}

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
        """Ramp, send ("ready", dict), then obey the parent until ("stop", None).

        From the parent: ("storm", (unix_time, keep, watch)): reopen every stream but the
        first `keep` at once, answered by ("storm", dict); ("watched", None): the kept
        streams' receipts, answered by ("watched", dict); ("measure", (run_id, expected)):
        a new measurement on the open streams, answered by ("measuring", None);
        ("report", None): ("report", dict).
        To it, besides: ("complete", None) once every stream has every expected event,
        and ("result", dict) last, before the worker exits.
        """
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
                at, keep, watch = body
                self.send("storm", await self.storm(loop, float(at), int(keep), bool(watch)))
            elif kind == "watched":
                self.send("watched", self.watched())
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
