"""The one-command recipe of docs/event-log.md, run as written with ``redis-cli`` against the
function library a real health-publisher loads, also after Redis restarted without its data."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest
import redis

from connectome_core.contract import LEADER_KEY
from connectome_core.event_log import FUNCTION_LIBRARY, LOG_ID_CHANNEL, LOG_KEY
from connectome_sse.localrun.redis_server import RedisServer
from connectome_sse.localrun.wait import wait_for
from tests.support.publisher import publisher_process
from tests.support.redis_acl import RULES, make_user

DOC = Path(__file__).resolve().parents[2] / "docs" / "event-log.md"
LOADED = "function library connectome_sse loaded"
FAST = {"HEALTH_INTERVAL": "0.2", "PUBLISHER_LEASE_MS": "1000"}


def documented_recipe() -> list[str]:
    (line,) = [line for line in DOC.read_text().splitlines() if line.startswith("redis-cli FCALL ")]
    return shlex.split(line)


def run_recipe(server: RedisServer) -> subprocess.CompletedProcess[str]:
    program, *args = documented_recipe()
    return subprocess.run(
        [program, "-p", str(server.port), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def library_loaded(server: RedisServer) -> bool:
    with server.client() as client:
        return bool(client.function_list(library=FUNCTION_LIBRARY))


def check_recipe_publishes(server: RedisServer) -> None:
    with server.client() as client:
        pubsub = client.pubsub()
        pubsub.subscribe(LOG_ID_CHANNEL, "sse:deploy")
        wait_for(lambda: pubsub.get_message(timeout=0.1) is not None, what="subscribed")
        wait_for(lambda: pubsub.get_message(timeout=0.1) is not None, what="subscribed")
        done = run_recipe(server)
        assert done.returncode == 0 and "ERR" not in done.stdout, done.stdout + done.stderr
        entries = [(sid, f) for sid, f in client.xrange(LOG_KEY) if f[b"event"] == b"deploy"]
        ((sid, fields),) = entries
        assert fields == {b"event": b"deploy", b"data": b"v1.2 rolled out"}
        assert sid.decode() in done.stdout  # redis-cli prints the stream id it answered
        messages = [pubsub.get_message(timeout=5) for _ in range(2)]
        pubsub.close()
    assert [(m["channel"], m["data"]) for m in messages if m] == [
        (LOG_ID_CHANNEL.encode(), sid + b" deploy"),
        (b"sse:deploy", b"v1.2 rolled out"),
    ]


def test_the_documented_fcall_recipe_works_and_survives_a_redis_restart(
    tmp_path: Path, own_redis: RedisServer
) -> None:
    recipe = ["redis-cli", "FCALL", "sse_publish", "0", "deploy", "v1.2 rolled out"]
    assert documented_recipe() == recipe
    publisher = publisher_process(own_redis, tmp_path / "publisher.log", env=FAST)
    try:
        wait_for(lambda: library_loaded(own_redis), timeout=30, what="the library loaded")
        check_recipe_publishes(own_redis)
        loads = publisher.log().count(LOADED)
        own_redis.restart()  # empty: no data, no functions
        wait_for(lambda: publisher.log().count(LOADED) > loads, timeout=30, what="a reload")
        assert library_loaded(own_redis)
        check_recipe_publishes(own_redis)
        assert publisher.alive(), publisher.log()
    finally:
        publisher.stop()


def test_a_publisher_that_may_not_load_functions_warns_once_and_publishes(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    rule = tuple(r for r in RULES["publisher"] if r != "+function|load")
    with redis_server.client() as admin:
        admin.function_flush()  # FLUSHALL between tests leaves functions in the shared server
        make_user(admin, "nofunc", "pw-nofunc", rule)
    url = f"redis://nofunc:pw-nofunc@127.0.0.1:{redis_server.port}/0"
    publisher = publisher_process(
        redis_server, tmp_path / "publisher.log", env={**FAST, "REDIS_URL": url}
    )
    admin = redis_server.client()
    try:
        wait_for(lambda: "leadership gained" in publisher.log(), timeout=30, what="leading")
        admin.delete(LEADER_KEY)  # a lost lease: the next acquisition tries to load again
        again = "function library connectome_sse still not loaded"
        wait_for(lambda: again in publisher.log(), timeout=30, what="a second attempt")
        published = admin.xlen(LOG_KEY)
        wait_for(lambda: admin.xlen(LOG_KEY) > published, timeout=30, what="health goes on")
        assert publisher.log().count("could not load the function library") == 1
        assert publisher.alive(), publisher.log()
    finally:
        publisher.stop()
        admin.close()
    with pytest.raises(redis.exceptions.ResponseError, match="Function not found"):
        redis_server.client().fcall("sse_publish", 0, "deploy", "x")
