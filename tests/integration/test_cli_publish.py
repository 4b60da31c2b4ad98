"""`connectome-sse publish EVENT DATA` against a real Redis and a real gateway, error paths
included. (``--lines``: test_cli_publish_lines.py.)"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectome_core.contract import RESERVED_EVENTS
from connectome_core.event_log import LOG_KEY, LOG_LAST_KEY, log_event_id
from connectome_core.payload import example_health_payload, parse_health_payload
from connectome_sse.localrun.gateway import GatewayProcess
from connectome_sse.localrun.ports import free_port
from connectome_sse.localrun.processes import ManagedProcess, console_script
from connectome_sse.localrun.redis_server import RedisServer
from connectome_sse.localrun.wait import wait_for


def cli(*args: str, redis_url: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        console_script("connectome-sse", *args),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={"REDIS_URL": redis_url, "PATH": "/usr/bin:/bin"},
    )


def error_payload(note: str) -> str:
    payload = json.loads(example_health_payload(ts=1.0, state="ERROR").to_json())
    payload["status"]["notes"] = [note]
    del payload["ts"]  # publish fills it in
    return json.dumps(payload)


@pytest.fixture
def gateway(tmp_path: Path, redis_server: RedisServer) -> Iterator[GatewayProcess]:
    gateway = GatewayProcess(redis_server.url, tmp_path / "gateway.log")
    gateway.start()
    gateway.wait_ready()
    yield gateway
    gateway.stop()


def health_events(listener: ManagedProcess) -> list[dict[str, str]]:
    """The listener's connectome_health records (pings come whatever the filter)."""
    records = [json.loads(line) for line in listener.log().split("\n") if line.startswith("{")]
    return [r for r in records if r["event"] == "connectome_health"]


def test_published_health_event_reaches_a_listener_and_the_snapshot(
    tmp_path: Path, redis_server: RedisServer, gateway: GatewayProcess
) -> None:
    listener = ManagedProcess(
        console_script(
            "connectome-sse", "listen", gateway.url, "--json", "--events", "connectome_health"
        ),
        tmp_path / "listen.log",
    ).start()
    try:
        wait_for(lambda: "connected to" in listener.log(), timeout=30, what="listen to connect")
        done = cli(
            "publish", "connectome_health", error_payload("hand-made"), redis_url=redis_server.url
        )
        assert done.returncode == 0, done.stderr
        assert "1 subscriber on sse:connectome_health" in done.stdout

        events = wait_for(lambda: health_events(listener), timeout=30, what="the event in listen")
        payload = parse_health_payload(events[0]["data"])
        assert events[0]["event"] == "connectome_health"
        assert (payload.status.state, payload.status.notes) == ("ERROR", ["hand-made"])
        assert payload.ts > 1e9
        with redis_server.client() as client:
            assert client.get("sse:last:connectome_health") == events[0]["data"].encode()
    finally:
        listener.stop()


def test_data_from_stdin(redis_server: RedisServer) -> None:
    done = cli("publish", "notes.v1", "-", redis_url=redis_server.url, stdin="line one\nline two\n")
    assert done.returncode == 0, done.stderr
    with redis_server.client() as client:
        assert client.get("sse:last:notes.v1") == b"line one\nline two"


def test_raw_publishes_a_partial_payload_verbatim(redis_server: RedisServer) -> None:
    data = '{"status":{"state":"WARN"}}'
    assert cli("publish", "connectome_health", data, redis_url=redis_server.url).returncode == 2
    done = cli("publish", "connectome_health", data, "--raw", redis_url=redis_server.url)
    assert done.returncode == 0, done.stderr
    with redis_server.client() as client:
        assert client.get("sse:last:connectome_health") == data.encode()


def test_invalid_payload_is_one_line_exit_2_and_writes_nothing(redis_server: RedisServer) -> None:
    bad = json.loads(error_payload("x"))
    bad["status"]["score"] = 7
    done = cli("publish", "connectome_health", json.dumps(bad), redis_url=redis_server.url)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "status.score" in done.stderr
    with redis_server.client() as client:
        assert client.exists("sse:last:connectome_health") == 0


def test_bad_event_name_is_exit_2() -> None:
    done = cli("publish", "no spaces", "x", redis_url="redis://127.0.0.1:1/0")
    assert done.returncode == 2
    assert done.stderr.startswith("connectome-sse publish: invalid event name 'no spaces'")


def test_unreachable_redis_is_one_line_exit_1_without_the_password() -> None:
    url = f"redis://app:hunter2@127.0.0.1:{free_port()}/0"
    done = cli("publish", "x", "y", redis_url=url)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("connectome-sse publish: cannot reach Redis at redis://app:***@")
    assert "hunter2" not in done.stderr + done.stdout


@pytest.mark.parametrize("event", sorted(RESERVED_EVENTS))
def test_regression_reserved_names_are_refused_exit_2_and_nothing_written(
    redis_server: RedisServer, event: str
) -> None:
    done = cli("publish", event, "x", redis_url=redis_server.url)
    assert done.returncode == 2, done.stdout
    assert done.stderr.count("\n") == 1 and "reserved" in done.stderr
    with redis_server.client() as client:
        assert client.keys("*") == []  # no snapshot, no log entry, no snapshot id


@pytest.mark.parametrize(("data", "stdin"), [("-", ""), ("-", "\n"), ("", None)])
def test_regression_empty_data_is_refused_exit_2_and_nothing_written(
    redis_server: RedisServer, data: str, stdin: str | None
) -> None:
    done = cli("publish", "notice", data, redis_url=redis_server.url, stdin=stdin)
    assert done.returncode == 2, done.stdout
    assert done.stderr.count("\n") == 1 and "empty" in done.stderr
    with redis_server.client() as client:
        assert client.keys("*") == []


def test_publish_goes_through_the_log_and_prints_the_event_id(redis_server: RedisServer) -> None:
    with redis_server.client() as client:
        pubsub = client.pubsub()
        pubsub.psubscribe("sse:*")
        assert pubsub.get_message(timeout=5) is not None  # the subscribe confirmation
        done = cli("publish", "deploy", "v1.2 rolled out", redis_url=redis_server.url)
        assert done.returncode == 0, done.stderr
        ((sid, fields),) = client.xrange(LOG_KEY)
        assert fields == {b"event": b"deploy", b"data": b"v1.2 rolled out"}
        assert client.hget(LOG_LAST_KEY, "deploy") == sid
        assert log_event_id(sid, "deploy", "v1.2 rolled out") in done.stdout
        # One subscriber: this test's connection (a gateway process holds one each).
        assert "1 subscriber on sse:deploy" in done.stdout and "gateway process" in done.stdout
        marker = pubsub.get_message(timeout=5)
        event = pubsub.get_message(timeout=5)
        pubsub.close()
    assert marker is not None and marker["data"] == sid + b" deploy"
    assert event is not None and event["channel"] == b"sse:deploy"
