"""Two publishers through a Sentinel failover: the lease, the group, the counts.

Signals are written (XADD, then ``WAIT 1 0.5`` for the replica) at 50/s before,
during and after a ``kill -9`` of the master. Asynchronous replication means the
new master may lack the last writes the old one acknowledged: entries whose
XADD never replicated are gone for everyone (the writer saw ``WAIT`` answer 0,
or no reply at all), and the consumer group's last deliveries and
acknowledgements may be older there than the old leader saw. What the
publishers must still guarantee, and what is asserted:

- every signal confirmed on the replica before the kill, and every one written
  after the failover, is in the new master's stream, and the published total is
  exactly the number of entries in that stream: none lost by the publishers,
  none counted twice (entries delivered again, or claimed again because their
  acknowledgement was lost, are not double-counted: the checkpoint that says
  what the totals cover travels in the same replication stream as the group's
  state, so it is never ahead of it);
- the group ends with nothing pending;
- one publisher leads.
"""

from __future__ import annotations

import threading
from pathlib import Path

from redis.exceptions import RedisError

from connectome_core.contract import SIGNALS_STREAM
from connectome_core.redis_connect import sync_client
from connectome_core.redis_target import parse_redis_url
from connectome_sse.localrun.metrics import publisher_leaders
from connectome_sse.localrun.redis_sentinel import SentinelCluster
from connectome_sse.localrun.wait import wait_for
from tests.support.publisher import counters, group_info, publishers_with_metrics, snapshot


class SignalWriter:
    """XADD a ``query_write_attempts`` counter signal every 20 ms through the sentinels."""

    def __init__(self, url: str) -> None:
        self.client = sync_client(parse_redis_url(url), socket_timeout=2.0)
        # Until the failover a signal counts as confirmed once the replica has it too
        # (WAIT); after it the new master has no replica left (the old one is dead).
        self.require_replica = True
        self.confirmed = 0  # acknowledged by the master (and the replica while required)
        self.unconfirmed = 0  # an error, or WAIT saw no replica: may or may not exist
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.02):
            try:
                self.client.xadd(
                    SIGNALS_STREAM, {"kind": "counter", "name": "query_write_attempts"}
                )
                replicas = (
                    self.client.execute_command("WAIT", 1, 500)  # type: ignore[no-untyped-call]
                    if self.require_replica
                    else 1
                )
            except (RedisError, OSError):
                self.unconfirmed += 1
                continue
            if int(replicas) >= 1:
                self.confirmed += 1
            else:
                self.unconfirmed += 1

    def __enter__(self) -> SignalWriter:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)
        self.client.close()


def test_a_failover_loses_no_replicated_signal_and_counts_none_twice(
    cluster: SentinelCluster, tmp_path: Path
) -> None:
    publishers, ports = publishers_with_metrics(
        cluster.url,
        tmp_path,
        {"HEALTH_INTERVAL": "0.3", "HEALTH_MAX_RATE": "10", "PUBLISHER_LEASE_MS": "2000"},
    )
    try:
        with SignalWriter(cluster.url) as writer:
            wait_for(lambda: writer.confirmed >= 50, timeout=20, what="signals flowing")
            confirmed_before = writer.confirmed
            cluster.kill_master()
            new = cluster.wait_failover()
            writer.require_replica = False
            with new.client() as node:
                after_failover = node.xlen(SIGNALS_STREAM)
            wait_for(
                lambda: writer.confirmed >= confirmed_before + 50,
                timeout=20,
                what="signals confirmed on the new master",
            )
        with new.client() as node:
            assert after_failover >= confirmed_before  # replicated signals survived

            def settled() -> bool:
                payload = snapshot(node)
                return (
                    payload is not None
                    and counters(payload)[0] == node.xlen(SIGNALS_STREAM)
                    and int(group_info(node)["pending"]) == 0
                )

            wait_for(settled, timeout=30, what="every entry counted once, nothing pending")
            in_stream = node.xlen(SIGNALS_STREAM)
        assert in_stream >= writer.confirmed
        assert in_stream <= writer.confirmed + writer.unconfirmed
        wait_for(lambda: publisher_leaders(ports) == 1, timeout=10, what="exactly one leader")
        assert all(p.alive() for p in publishers)
        print(
            f"\npublishers through a failover: {writer.confirmed} signals confirmed "
            f"(by the replica before the kill, the new master after), "
            f"{writer.unconfirmed} unconfirmed, {in_stream} in the new master's stream, "
            f"all counted exactly once"
        )
    finally:
        for process in publishers:
            process.stop()
        for process in publishers:
            print(process.log()[-3000:])
