"""Helpers for publisher tests: writing signals, recording the health channel, running publishers.

``ChannelRecorder`` subscribes (in a thread, with a real client) before
anything is published and keeps every ``connectome_health`` message with its
arrival time, so tests can count rates and measure gaps after the fact.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis

from connectome_core.contract import SIGNALS_STREAM, channel_for, snapshot_key
from connectome_core.payload import HealthPayload, parse_health_payload
from connectome_core.settings import load_settings
from connectome_sse.localrun.ports import free_port
from connectome_sse.localrun.processes import ManagedProcess, console_script
from connectome_sse.localrun.redis_server import RedisServer
from connectome_sse.localrun.wait import wait_for
from health_publisher.service import HealthPublisher
from health_publisher.settings import PublisherSettings

HEALTH_CHANNEL = channel_for("connectome_health")
T0 = 1_000_000.0
HEALTH_SNAPSHOT = snapshot_key("connectome_health")


class FakeClock:
    """An injectable clock (unix or monotonic seconds) that moves only when told to."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def xadd(client: redis.Redis, kind: str, **fields: object) -> bytes:
    data: dict[Any, Any] = {"kind": kind, **{k: str(v) for k, v in fields.items()}}
    return client.xadd(SIGNALS_STREAM, data)  # type: ignore[return-value]


def snapshot(client: redis.Redis) -> HealthPayload | None:
    raw: Any = client.get(HEALTH_SNAPSHOT)
    return None if raw is None else parse_health_payload(raw)


def group_info(client: redis.Redis) -> dict[str, Any]:
    groups: Any = client.xinfo_groups(SIGNALS_STREAM)
    (info,) = [g for g in groups if g["name"] in (b"health-publisher", "health-publisher")]
    return dict(info)


class ChannelRecorder:
    def __init__(self, server: RedisServer) -> None:
        self.client = server.client()
        self.pubsub = self.client.pubsub()  # type: ignore[no-untyped-call]
        self.messages: list[tuple[float, HealthPayload]] = []
        self.invalid: list[bytes] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ChannelRecorder:
        self.pubsub.subscribe(HEALTH_CHANNEL)
        wait_for(
            lambda: self.pubsub.get_message(timeout=0.1) is not None, what="subscribe confirmed"
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.pubsub.close()
        self.client.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self.pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if message is None:
                continue
            arrived = time.monotonic()
            try:
                payload = parse_health_payload(message["data"])
            except ValueError:
                with self._lock:
                    self.invalid.append(message["data"])
                continue
            with self._lock:
                self.messages.append((arrived, payload))

    def snapshot(self) -> list[tuple[float, HealthPayload]]:
        with self._lock:
            return list(self.messages)

    def since(self, t: float) -> list[tuple[float, HealthPayload]]:
        return [(at, p) for at, p in self.snapshot() if at >= t]

    def wait(
        self, predicate: Any, after: float = 0.0, timeout: float = 30.0, what: str = ""
    ) -> Any:
        """The first payload after ``after`` (monotonic) for which ``predicate`` holds."""

        def found() -> tuple[float, HealthPayload] | None:
            for at, payload in self.since(after):
                if predicate(payload):
                    return at, payload
            return None

        return wait_for(found, timeout=timeout, what=what or "a matching health payload")


class ViolationFeed:
    """A thread XADDing one ``dmz_violation_attempts`` counter signal every ``every`` s."""

    def __init__(self, server: RedisServer, every: float = 0.05) -> None:
        self.server = server
        self.every = every
        self.written = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        client = self.server.client()
        while not self._stop.is_set():
            xadd(client, "counter", name="dmz_violation_attempts")
            self.written += 1
            self._stop.wait(self.every)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=5)


def publisher_process(
    server: RedisServer, log_path: Path, env: Mapping[str, str] | None = None
) -> ManagedProcess:
    """``health-publisher`` as a real process against ``server``."""
    environ = {"REDIS_URL": server.url, "PUBLISHER_LOG_LEVEL": "DEBUG", **(env or {})}
    return ManagedProcess(console_script("health-publisher"), log_path, env=environ).start()


def publishers_with_metrics(
    url: str, workdir: Path, env: Mapping[str, str], count: int = 2
) -> tuple[list[ManagedProcess], list[int]]:
    """``count`` started ``health-publisher`` processes on ``url``, and their metrics ports."""
    ports = [free_port() for _ in range(count)]
    processes = [
        ManagedProcess(
            console_script("health-publisher"),
            workdir / f"publisher-{i}.log",
            env={"REDIS_URL": url, **env, "PUBLISHER_METRICS_PORT": str(port)},
        ).start()
        for i, port in enumerate(ports)
    ]
    return processes, ports


@contextlib.asynccontextmanager
async def running_publisher(
    url: str, env: Mapping[str, str] | None = None
) -> AsyncIterator[HealthPublisher]:
    """A HealthPublisher running in this event loop until the block ends."""
    settings = load_settings(PublisherSettings, {"REDIS_URL": url, **(env or {})})
    publisher = HealthPublisher(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(publisher.run(stop))
    try:
        yield publisher
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)


async def next_payload(
    pubsub: aioredis.client.PubSub, predicate: Any = None, timeout: float = 30.0
) -> HealthPayload:
    """The next payload on the subscribed channel for which ``predicate`` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
        if message is None:
            continue
        payload = parse_health_payload(message["data"])
        if predicate is None or predicate(payload):
            return payload
    raise AssertionError(f"no matching payload within {timeout}s")


def counters(payload: HealthPayload) -> tuple[int, int, int]:
    c = payload.counters
    return c.query_write_attempts, c.dmz_violation_attempts, c.async_epoch_mismatch


def dumps(payload: HealthPayload) -> str:
    return json.dumps(json.loads(payload.to_json()), indent=1)
