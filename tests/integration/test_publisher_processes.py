"""health-publisher as real processes: restart with a backlog, two publishers, kill -9 failover."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from connectome_core.contract import LEADER_KEY
from connectome_sse.localrun.processes import ManagedProcess
from connectome_sse.localrun.redis_server import RedisServer
from connectome_sse.localrun.wait import wait_for
from tests.support.publisher import (
    ChannelRecorder,
    ViolationFeed,
    counters,
    group_info,
    publisher_process,
    snapshot,
    xadd,
)

pytestmark = pytest.mark.integration

# Scheduling noise on a loaded 2-core machine, on top of the contract's lease + one interval.
NOISE_ALLOWANCE_S = 1.5


def test_a_stopped_publisher_processes_what_was_written_meanwhile(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    sync = redis_server.client()
    env = {"HEALTH_INTERVAL": "0.2", "HEALTH_MAX_RATE": "10"}
    first = publisher_process(redis_server, tmp_path / "first.log", env)
    second: ManagedProcess | None = None
    try:
        wait_for(lambda: snapshot(sync) is not None, what="first payload")
        xadd(sync, "tick", tick=1, speed="x1", playthrough_id="p", place_id="q")
        xadd(sync, "counter", name="dmz_violation_attempts", by=2)
        wait_for(lambda: (s := snapshot(sync)) is not None and counters(s) == (0, 2, 0))

        first.stop()
        assert first.proc is not None and first.proc.returncode == 0, first.log()
        assert "leadership released" in first.log()
        assert sync.get(LEADER_KEY) is None

        for _ in range(3):
            xadd(sync, "counter", name="query_write_attempts")
        xadd(sync, "sink_size", value="huge")  # bad: acknowledged and counted, changes nothing
        xadd(sync, "tick", tick=99, speed="x3", playthrough_id="p", place_id="q")
        assert group_info(sync)["lag"] == 5

        second = publisher_process(redis_server, tmp_path / "second.log", env)
        wait_for(
            lambda: (
                (s := snapshot(sync)) is not None
                and s.runner.tick == 99
                and counters(s) == (3, 2, 0)
            ),
            timeout=30,
            what="the backlog applied, counters continued",
        )
        wait_for(lambda: group_info(sync)["pending"] == 0 and group_info(sync)["lag"] == 0)
        assert "bad signal" in second.log() and "(bad_value)" in second.log()
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_two_publishers_publish_at_the_rate_of_one_and_fail_over_after_kill_9(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    interval, lease_ms = 1.0, 3000
    env = {"HEALTH_INTERVAL": str(interval), "PUBLISHER_LEASE_MS": str(lease_ms)}
    sync = redis_server.client()
    procs = two_publishers(redis_server, tmp_path, env)
    # Signals keep coming across the failover; none may be lost or counted twice.
    writer = ViolationFeed(redis_server)
    try:
        with ChannelRecorder(redis_server) as recorder:
            leader, standby = leader_and_standby(procs, redis_server)

            # Rate of one: a leader alone publishes once a second (plus state changes; there
            # are none here), two would publish twice as often.
            start = time.monotonic()
            wait_for(lambda: len(recorder.since(start)) >= 6, timeout=30, what="6 events")
            times = [at for at, _ in recorder.since(start)]
            rate = (len(times) - 1) / (times[-1] - times[0])
            assert rate < 1.5 / interval, f"{rate:.2f} events/s: more than one publisher"
            gained = [p for p in procs.values() if "leadership gained" in p.log()]
            assert gained == [leader]

            writer.start()
            wait_for(lambda: writer.written >= 20, what="signals flowing")
            leader.kill_group(signal.SIGKILL)
            killed_at, killed_wall = time.monotonic(), time.time()
            # The dead leader's last event may still be in flight; it was built before the kill.
            at, _ = recorder.wait(
                lambda p: p.ts > killed_wall, after=killed_at, what="the standby's first event"
            )
            takeover = at - killed_at
            print(f"\nfailover: first event from the standby {takeover:.2f}s after kill -9")
            assert takeover <= lease_ms / 1000 + interval + NOISE_ALLOWANCE_S
            assert "leadership gained" in standby.log()

            wait_for(lambda: writer.written >= 80, timeout=30, what="signals after the failover")
            writer.stop()
            total = writer.written
            recorder.wait(
                lambda p: counters(p) == (0, total, 0),
                after=killed_at,
                what=f"all {total} violations counted exactly once",
            )
            assert group_info(sync)["pending"] == 0

            # Still the rate of one after the failover.
            after = time.monotonic()
            wait_for(lambda: len(recorder.since(after)) >= 4, timeout=30, what="4 more events")
            times = [at for at, _ in recorder.since(after)]
            assert (len(times) - 1) / (times[-1] - times[0]) < 1.5 / interval
            assert recorder.invalid == []
    finally:
        writer.stop()
        for proc in procs.values():
            proc.stop()


def leader_and_standby(
    procs: dict[str, ManagedProcess], server: RedisServer
) -> tuple[ManagedProcess, ManagedProcess]:
    sync = server.client()
    wait_for(lambda: all("starting" in p.log() for p in procs.values()), what="both started")
    holder = wait_for(lambda: sync.get(LEADER_KEY), what="a leader")
    assert isinstance(holder, bytes)
    name = holder.decode().split(":")[0]
    (standby,) = [p for n, p in procs.items() if n != name]
    return procs[name], standby


def two_publishers(
    server: RedisServer, tmp_path: Path, env: dict[str, str]
) -> dict[str, ManagedProcess]:
    return {
        name: publisher_process(
            server, tmp_path / f"{name}.log", {**env, "PUBLISHER_CONSUMER": name}
        )
        for name in ("pub-a", "pub-b")
    }


def test_sigterm_hands_the_lease_over_without_waiting_for_it_to_expire(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    # A lease of a minute: a standby that had to wait for the expiry would take a minute.
    procs = two_publishers(redis_server, tmp_path, {"PUBLISHER_LEASE_MS": "60000"})
    try:
        with ChannelRecorder(redis_server) as recorder:
            leader, standby = leader_and_standby(procs, redis_server)
            recorder.wait(lambda p: True, what="a first event")
            leader_name = "pub-a" if leader is procs["pub-a"] else "pub-b"
            # A standby says that it stands by, and who leads.
            wait_for(
                lambda: f"standing by: {leader_name} leads" in standby.log(),
                what="the standby's announcement",
            )
            leader.signal(signal.SIGTERM)
            stopped_at = time.monotonic()
            assert leader.wait(timeout=10) == 0
            at, _ = recorder.wait(lambda p: True, after=stopped_at, what="the standby's event")
            print(f"\nhandover on SIGTERM: {at - stopped_at:.2f}s")
            assert at - stopped_at < 30
            assert "leadership released" in leader.log()
            assert f"leadership gained (lease acquired: taking over from {leader_name})" in (
                standby.log()
            )
            assert "stood by the whole time" not in leader.log()
    finally:
        for proc in procs.values():
            proc.stop()


def test_a_paused_leader_is_replaced_and_never_publishes_again_as_a_second_leader(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    interval = 0.5
    procs = two_publishers(
        redis_server, tmp_path, {"HEALTH_INTERVAL": str(interval), "PUBLISHER_LEASE_MS": "1500"}
    )
    try:
        with ChannelRecorder(redis_server) as recorder:
            leader, standby = leader_and_standby(procs, redis_server)
            recorder.wait(lambda p: True, what="a first event")
            leader.signal(signal.SIGSTOP)  # a GC pause, a frozen VM...
            try:
                wait_for(lambda: "leadership gained" in standby.log(), what="the standby leads")
            finally:
                leader.signal(signal.SIGCONT)
            resumed = time.monotonic()
            wait_for(lambda: "leadership lost" in leader.log(), what="the old leader steps down")
            wait_for(lambda: len(recorder.since(resumed)) >= 8, timeout=30, what="8 more events")
            times = [at for at, _ in recorder.since(resumed)]
            rate = (len(times) - 1) / (times[-1] - times[0])
            assert rate < 1.5 / interval, f"{rate:.2f} events/s: two leaders after the pause"
            assert leader.alive()
    finally:
        for proc in procs.values():
            proc.stop()


def test_a_publisher_that_only_stood_by_says_so_when_it_stops(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    procs = two_publishers(redis_server, tmp_path, {})
    try:
        _, standby = leader_and_standby(procs, redis_server)
        wait_for(lambda: "standing by:" in standby.log(), what="the standby's announcement")
        standby.signal(signal.SIGTERM)
        assert standby.wait(timeout=10) == 0
        assert "0 events published" in standby.log()
        assert "stood by the whole time" in standby.log()
        assert "leadership" not in standby.log()
    finally:
        for proc in procs.values():
            proc.stop()
