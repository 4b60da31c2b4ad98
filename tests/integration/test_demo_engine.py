"""`connectome-sse demo-engine` against a real redis-server, alone and with a real publisher."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from connectome_core.contract import SIGNALS_STREAM
from connectome_sse.localrun.ports import free_port
from connectome_sse.localrun.processes import ManagedProcess, console_script
from connectome_sse.localrun.redis_server import RedisServer
from connectome_sse.localrun.wait import wait_for
from health_publisher.signals import parse_signal
from tests.support.publisher import ChannelRecorder, publisher_process

pytestmark = pytest.mark.integration


def demo_engine(server: RedisServer, log: Path, *args: str) -> ManagedProcess:
    argv = console_script("connectome-sse", "demo-engine", "--redis-url", server.url, *args)
    return ManagedProcess(argv, log).start()


def test_writes_valid_signals_trims_the_stream_and_stops_on_sigterm(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    sync = redis_server.client()
    engine = demo_engine(
        redis_server, tmp_path / "demo.log", "--seed", "4", "--tick-rate", "50", "--maxlen", "100"
    )
    try:
        # Enough entries that MAXLEN must have trimmed (approximate: whole nodes of 100).
        wait_for(
            lambda: (
                sync.exists(SIGNALS_STREAM)
                and int(sync.xinfo_stream(SIGNALS_STREAM)["entries-added"]) > 1500
            ),
            timeout=60,
            what="1500 entries written",
        )
        assert sync.xlen(SIGNALS_STREAM) < 400
        entries: Any = sync.xrange(SIGNALS_STREAM, count=400)
        kinds = {parse_signal(fields).kind for _, fields in entries}
        assert {"tick", "sink_size", "focus_change", "pressure"} <= kinds
        engine.signal(signal.SIGTERM)
        assert engine.wait(timeout=10) == 0
        assert "demo engine stopped after" in engine.log()
    finally:
        engine.stop()


def test_refuses_a_bad_redis_url(tmp_path: Path) -> None:
    argv = console_script("connectome-sse", "demo-engine", "--redis-url", "http://nope")
    engine = ManagedProcess(argv, tmp_path / "bad.log").start()
    assert engine.wait(timeout=30) == 2
    assert "REDIS_URL" in engine.log()


def test_with_a_publisher_the_status_moves_through_ok_warn_and_error(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    env = {"HEALTH_WINDOW": "1", "HEALTH_STALE_AFTER": "2", "HEALTH_INTERVAL": "0.25"}
    publisher = publisher_process(redis_server, tmp_path / "publisher.log", env)
    engine = demo_engine(
        redis_server,
        tmp_path / "demo.log",
        *("--seed", "2", "--violation-every", "2", "--stall-seconds", "3"),
    )
    try:
        with ChannelRecorder(redis_server) as recorder:

            def seen() -> set[str]:
                return {p.status.state for _, p in recorder.snapshot()}

            def notes() -> str:
                return " ".join(n for _, p in recorder.snapshot() for n in p.status.notes)

            wait_for(lambda: seen() == {"OK", "WARN", "ERROR"}, timeout=60, what="all 3 states")
            reasons = ("async epoch mismatch", "query write attempt", "stale", "DMZ violation")
            wait_for(
                lambda: all(reason in notes() for reason in reasons),
                timeout=60,
                what="every kind of misbehaviour noted",
            )
            assert recorder.invalid == []
    finally:
        engine.stop()
        publisher.stop()


def test_an_engine_that_never_reached_redis_exits_non_zero_with_one_line(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    argv = console_script(
        "connectome-sse",
        "demo-engine",
        "--redis-url",
        f"redis://127.0.0.1:{port}/0",
        "--duration",
        "1.5",
    )
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1, result.stderr
    final = [line for line in result.stderr.splitlines() if line.startswith("demo-engine:")]
    url = f"redis://127.0.0.1:{port}/0"
    assert final == [f"demo-engine: wrote nothing: Redis at {url} never took a signal"]
