"""`connectome-sse publish --lines EVENT` as a real process fed through a pipe, real Redis."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connectome_core.event_log import LOG_ID_CHANNEL, LOG_KEY, log_event_id
from connectome_sse.localrun.processes import console_script
from connectome_sse.localrun.redis_server import RedisServer
from connectome_sse.localrun.wait import wait_for


class PatternRecorder:
    """Every message on ``sse:*`` (channel, data), in arrival order, from a thread."""

    def __init__(self, server: RedisServer) -> None:
        self.client = server.client()
        self.pubsub = self.client.pubsub()  # type: ignore[no-untyped-call]
        self.messages: list[tuple[bytes, bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PatternRecorder:
        self.pubsub.psubscribe("sse:*")
        wait_for(lambda: self.pubsub.get_message(timeout=0.1) is not None, what="psubscribe")
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
            if message is not None:
                self.messages.append((message["channel"], message["data"]))


def start_lines(server: RedisServer, *args: str, env: dict[str, str] | None = None) -> Any:
    return subprocess.Popen(
        console_script("connectome-sse", "publish", "--lines", *args),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={"REDIS_URL": server.url, "PATH": "/usr/bin:/bin", **(env or {})},
    )


@pytest.fixture
def recorder(redis_server: RedisServer) -> Iterator[PatternRecorder]:
    with PatternRecorder(redis_server) as recorder:
        yield recorder


def log_entries(server: RedisServer) -> list[tuple[bytes, dict[bytes, bytes]]]:
    with server.client() as client:
        entries: Any = client.xrange(LOG_KEY)
        return list(entries)


def test_300_lines_at_100_per_second_arrive_in_order_once_with_bad_lines_skipped(
    redis_server: RedisServer, recorder: PatternRecorder
) -> None:
    lines = [f"deploy note {n:03d}".encode() for n in range(1, 301)]
    lines[99] = b"x" * 300  # line 100: over SSE_MAX_EVENT_BYTES
    lines[199] = b"caf\xe9 latin-1"  # line 200: not UTF-8
    good = [line for n, line in enumerate(lines, 1) if n not in (100, 200)]
    process = start_lines(redis_server, "deploy", env={"SSE_MAX_EVENT_BYTES": "200"})
    assert process.stdin is not None
    for line in lines:
        process.stdin.write(line + b"\n")
        process.stdin.flush()
        time.sleep(0.01)  # pacing the writer at ~100 lines/s, not waiting for a result
    out, err = process.communicate(timeout=60)  # closes stdin: the end of the input
    assert process.returncode == 2, err  # a line was refused
    assert b"line 100 skipped: 300 bytes" in err and b"line 200 skipped: not valid UTF-8" in err
    assert b"298 lines published as deploy events, 2 refused" in err
    entries = log_entries(redis_server)
    assert [fields for _, fields in entries] == [{b"event": b"deploy", b"data": d} for d in good]
    ids = [log_event_id(sid, "deploy", f[b"data"]) for sid, f in entries]
    assert out.decode().count("published as") == 298 and all(i in out.decode() for i in ids)
    # On the channels: each event right after its marker, in order, once.
    expected = []
    for sid, fields in entries:
        expected += [(LOG_ID_CHANNEL.encode(), sid + b" deploy"), (b"sse:deploy", fields[b"data"])]
    wait_for(lambda: len(recorder.messages) >= len(expected), what="every message")
    assert recorder.messages == expected


def test_lines_are_published_as_they_arrive_not_at_the_end(redis_server: RedisServer) -> None:
    process = start_lines(redis_server, "deploy")
    assert process.stdin is not None
    try:
        for n in (1, 2, 3):
            process.stdin.write(f"rolled out step {n}\n".encode())
            process.stdin.flush()
            # stdin stays open: the line must be in the log while the writer is still there.
            wait_for(lambda: len(log_entries(redis_server)) == n, what=f"line {n} logged")  # noqa: B023
            assert process.poll() is None
        out, err = process.communicate(b"last line, no line break", timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    data = [fields[b"data"] for _, fields in log_entries(redis_server)]
    assert data[-1] == b"last line, no line break" and len(data) == 4
    assert out.decode().count("published as") == 4


def test_health_lines_must_be_payloads_unless_raw(redis_server: RedisServer) -> None:
    process = start_lines(redis_server, "connectome_health")
    _, err = process.communicate(b'{"status":{"state":"WARN"}}\n', timeout=30)
    assert process.returncode == 2 and b"line 1 skipped: connectome_health data is not" in err
    assert log_entries(redis_server) == []
    process = start_lines(redis_server, "connectome_health", "--raw")
    _, err = process.communicate(b'{"status":{"state":"WARN"}}\n', timeout=30)
    assert process.returncode == 0, err
    assert [f[b"data"] for _, f in log_entries(redis_server)] == [b'{"status":{"state":"WARN"}}']


def test_lines_of_a_reserved_event_are_refused_before_reading(redis_server: RedisServer) -> None:
    process = start_lines(redis_server, "resync")
    _, err = process.communicate(b"x\n", timeout=30)
    assert process.returncode == 2 and err.count(b"\n") == 1 and b"reserved" in err
    with redis_server.client() as client:
        assert client.keys("*") == []


def test_a_redis_kill_mid_stream_waits_and_publishes_every_line_once(tmp_path: Path) -> None:
    # `tail -f deploys.log | connectome-sse publish --lines deploy` must outlive a Redis
    # restart: lines wait, then go out; a line whose reply was lost is not sent twice.
    server = RedisServer(
        tmp_path / "redis", extra_args=("--appendonly", "yes", "--appendfsync", "always")
    ).start()
    process = start_lines(server, "deploy")
    try:
        assert process.stdin is not None
        for n in range(1, 11):
            process.stdin.write(b"before %d\n" % n)
        process.stdin.flush()
        wait_for(lambda: len(log_entries(server)) == 10, what="the first 10 lines logged")
        server.kill()
        for n in range(1, 11):  # written while Redis is down: they wait in the command
            process.stdin.write(b"during %d\n" % n)
        process.stdin.flush()
        server.start()
        for n in range(1, 11):
            process.stdin.write(b"after %d\n" % n)
        process.stdin.close()
        assert process.wait(timeout=30) == 0, process.stderr.read() if process.stderr else ""
        err = process.stderr.read().decode() if process.stderr else ""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        server.kill()
    data = [fields[b"data"].decode() for _, fields in log_entries_after_restart(tmp_path)]
    expected = [f"{when} {n}" for when in ("before", "during", "after") for n in range(1, 11)]
    assert data == expected, err
    assert "waiting for Redis" in err and "Redis is back" in err, err
    assert "30 lines published" in err, err


def log_entries_after_restart(tmp_path: Path) -> list[tuple[bytes, dict[bytes, bytes]]]:
    # The log as the AOF kept it: the server of the test above, started once more.
    server = RedisServer(tmp_path / "redis", extra_args=("--appendonly", "yes")).start()
    try:
        return log_entries(server)
    finally:
        server.kill()
