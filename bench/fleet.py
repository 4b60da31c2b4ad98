"""The load client's worker processes as the parent sees them: their pipes and their ramp."""

from __future__ import annotations

import math
import multiprocessing as mp
import secrets
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe
from multiprocessing.connection import wait as wait_pipes
from typing import Any

from bench.client import WorkerConfig
from bench.scenarios import Scenario
from bench.systems import RunningSystem
from bench.worker import worker_main


@dataclass(frozen=True)
class LoadOptions:
    warmup_s: float = 2.0
    drain_s: float = 20.0
    streams_per_process: int = 8000  # below the 20,000 open-file limit of one process
    ramp_concurrency: int = 200  # connects in flight per worker process
    connect_timeout_s: float = 15.0
    storm_timeout_s: float = 60.0
    event_type: str = "connectome_health"


class WorkerHub:
    """The parent's side of the worker pipes: messages kept by kind until asked for."""

    def __init__(self, pipes: list[Pipe]) -> None:
        self.pipes = pipes
        self.inbox: dict[str, dict[int, Any]] = {}
        self.gone: set[int] = set()

    def send_all(self, message: tuple[str, Any]) -> None:
        for i, pipe in enumerate(self.pipes):
            if i not in self.gone:
                try:
                    pipe.send(message)
                except OSError:
                    self.gone.add(i)

    def wait_all(self, kind: str, timeout_s: float, among: set[int] | None = None) -> list[Any]:
        """Each worker's latest `kind` message (None for a worker that died or was late)."""
        box = self.inbox.setdefault(kind, {})
        wanted = set(range(len(self.pipes))) if among is None else among
        deadline = time.monotonic() + timeout_s
        while True:
            pending = [i for i in wanted if i not in box and i not in self.gone]
            left = deadline - time.monotonic()
            if not pending or left <= 0:
                break
            for pipe in wait_pipes([self.pipes[i] for i in pending], left):
                i = self.pipes.index(pipe)  # type: ignore[arg-type]
                try:
                    got_kind, body = self.pipes[i].recv()
                except (EOFError, OSError):
                    self.gone.add(i)
                    continue
                self.inbox.setdefault(got_kind, {})[i] = body
        return [box.get(i) for i in range(len(self.pipes))]


def split_evenly(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if k < total % parts else 0) for k in range(parts)]


def merge_counts(tables: list[dict[str, int]]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for table in tables:
        for key, value in table.items():
            merged[key] = merged.get(key, 0) + value
    return merged


class ClientFleet:
    """The load client's worker processes, their pipes and their ramp."""

    def __init__(self, scenario: Scenario, system: RunningSystem, opts: LoadOptions) -> None:
        self.run_id = secrets.token_hex(4)
        per_process = scenario.streams_per_process or opts.streams_per_process
        self.shares = split_evenly(
            scenario.clients, max(1, math.ceil(scenario.clients / per_process))
        )
        self.opts = opts
        self.workers: list[Any] = []
        self.pipes: list[Pipe] = []
        ctx = mp.get_context("fork")
        for k, n in enumerate(self.shares):
            cfg = WorkerConfig(
                host="127.0.0.1",
                port=system.port,
                path=system.sse_path,
                clients=n,
                expected=scenario.events,
                run_id=self.run_id,
                event_type=opts.event_type,
                ramp_concurrency=opts.ramp_concurrency,
                connect_timeout_s=opts.connect_timeout_s,
                storm_timeout_s=opts.storm_timeout_s,
                max_life_s=900.0,
                source=f"127.0.0.{1 + k}",
                headers=system.headers,
            )
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(cfg, theirs), daemon=True)
            proc.start()
            theirs.close()  # so a dead worker reads as EOF here
            self.workers.append(proc)
            self.pipes.append(ours)
        self.hub = WorkerHub(self.pipes)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.workers]

    def ramp(self) -> tuple[list[dict[str, Any]], float]:
        """Each worker's "ready" message ({} for one that failed) and the ramp's seconds."""
        t_ramp = time.time()
        opts = self.opts
        limit = 30 + max(self.shares) / opts.ramp_concurrency * opts.connect_timeout_s
        ready = [r or {} for r in self.hub.wait_all("ready", min(600.0, limit))]
        return ready, time.time() - t_ramp

    def results(self) -> list[dict[str, Any]]:
        self.hub.send_all(("stop", None))
        return [r for r in self.hub.wait_all("result", 120) if r]

    def close(self, completed: bool) -> None:
        for proc in self.workers:
            proc.join(5 if completed else 0.1)  # interrupted: do not wait for them
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        for pipe in self.pipes:
            pipe.close()
