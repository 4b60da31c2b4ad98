"""`connectome-sse listen` shows ids and resync, and resumes with Last-Event-ID."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from connectome_sse.localrun.processes import ManagedProcess
from connectome_sse.localrun.redis_server import RedisServer
from connectome_sse.localrun.wait import wait_for
from sse_gateway.history import event_id
from tests.conftest import StartGateway
from tests.support.listen import listen as listen_to
from tests.support.listen import stopped_at_exit


@pytest.fixture
def listeners() -> Iterator[list[ManagedProcess]]:
    with stopped_at_exit() as started:
        yield started


def listen(tmp_path: Path, started: list[ManagedProcess], *args: str) -> ManagedProcess:
    return listen_to(tmp_path, started, "--color", "never", *args)


def test_listen_shows_ids_resumes_after_a_given_id_and_shows_resync(
    tmp_path: Path,
    redis_server: RedisServer,
    start_gateway: StartGateway,
    listeners: list[ManagedProcess],
) -> None:
    gateway = start_gateway(redis_server.url).wait_ready()
    with redis_server.client() as redis:
        # Relayed while nobody listened: only a resume can bring them.
        wait_for(lambda: gateway.metric("sse_open_streams") == 0, what="no streams")
        for n in range(3):
            redis.publish("sse:seq", f"missed {n}")
        wait_for(lambda: gateway.metric("sse_events_relayed_total") >= 3, what="relayed")
        first = event_id("seq", b"missed 0")
        url = gateway.url + "/api/sse?events=seq"
        resumed = listen(tmp_path, listeners, url, "--last-event-id", first)
        wait_for(lambda: "missed 2" in resumed.log(), what="the replay")
        log = resumed.log()
        assert f"resuming after id {first}" in log
        assert "missed 0" not in log and "resync" not in log
        assert f"id={event_id('seq', b'missed 1')}" in log
        unknown = listen(tmp_path, listeners, url, "--last-event-id", "0000000000000000")
        wait_for(lambda: "resync (unknown_id)" in unknown.log(), what="resync shown")
