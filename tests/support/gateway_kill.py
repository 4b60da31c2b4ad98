"""A gateway killed under live events: its clients move, every other client sees nothing.

Shared by the local nginx topology and the compose deployment; the caller says
how to kill the gateway and counts streams per gateway its own way. Clients are
browser-like (``connectome_sse.localrun.browser``) and receive numbered events.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from types import TracebackType

from connectome_sse.localrun.browser import (
    HEALTH_EVENT,
    SEQ_EVENT,
    BrowserClient,
    ClientFleet,
    describe,
    seq_range,
)
from connectome_sse.localrun.seq_publisher import SeqPublisher
from connectome_sse.localrun.wait import async_wait_for

STREAM_PATH = f"/api/sse?events={HEALTH_EVENT},{SEQ_EVENT}"
PUBLISH_INTERVAL_S = 0.05


async def every_client(fleet: ClientFleet, predicate: Callable[[BrowserClient], bool]) -> bool:
    """``predicate`` holds for every client of ``fleet`` (which must not have crashed)."""
    assert not fleet.crashed(), fleet.crashed()
    return all(predicate(c) for c in fleet.clients)


async def connect_fleet(port: int, publisher: SeqPublisher, n: int, timeout: float) -> ClientFleet:
    """n browser-like clients on ``port``, each subscribed (it has seq 0 as snapshot)."""
    await publisher.publish(0)
    fleet = ClientFleet("127.0.0.1", port, STREAM_PATH, n)
    fleet.start()
    try:
        await async_wait_for(
            lambda: every_client(fleet, lambda c: c.last is not None and c.last.seqs[:1] == [0]),
            timeout=timeout,
            what=f"{n} streams open",
        )
    except AssertionError:
        await fleet.stop()
        raise AssertionError(
            f"{describe(fleet.clients)}\nfailures: {fleet.failures()[:5]}"
        ) from None
    return fleet


def was_cut(client: BrowserClient) -> bool:
    return client.connections[0].ended_at is not None


def back_with_snapshot(client: BrowserClient) -> bool:
    return (
        len(client.connections) > 1
        and client.connections[-1].first_seq_at is not None
        and client.connections[-1].first_health_at is not None
    )


class LiveEvents:
    """Numbered events published all along; a gateway killed in the middle.

    Entering waits for live events at every client; leaving stops publishing and
    the clients. ``kill`` then ``settle`` record what the assertions need.
    """

    def __init__(self, fleet: ClientFleet, publisher: SeqPublisher, timeout: float) -> None:
        self.fleet = fleet
        self.publisher = publisher
        self.timeout = timeout
        self.stop_publishing = asyncio.Event()
        self.publishing: asyncio.Task[None] | None = None
        self.killed_at = 0.0
        self.published_before_kill = 0
        self.last = 0

    async def __aenter__(self) -> LiveEvents:
        self.publishing = asyncio.create_task(
            self.publisher.run(PUBLISH_INTERVAL_S, self.stop_publishing)
        )
        await async_wait_for(
            lambda: every_client(self.fleet, lambda c: (c.last.seqs[-1] if c.last else 0) >= 5),
            timeout=self.timeout,
            what="live events flowing to every client",
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_publishing.set()
        await asyncio.gather(*[t for t in [self.publishing] if t], return_exceptions=True)
        await self.fleet.stop()

    async def kill(self, kill_gateway: Callable[[], Awaitable[object]]) -> None:
        await kill_gateway()
        self.killed_at = time.monotonic()
        self.published_before_kill = self.publisher.last

    async def settle(self) -> None:
        """Cut clients back with their snapshot, then the last event everywhere."""
        # Waiting is generous; the bound is asserted on the recorded times.
        await async_wait_for(
            lambda: every_client(self.fleet, lambda c: not was_cut(c) or back_with_snapshot(c)),
            timeout=self.timeout,
            what="cut clients back with their snapshot",
        )
        # Live events after the reconnects, for the gap check: a few more than were
        # published by the time the last client came back must reach everyone.
        back_by = self.publisher.last + 5
        await async_wait_for(
            lambda: every_client(self.fleet, lambda c: c.connections[-1].seqs[-1:] >= [back_by]),
            timeout=self.timeout,
            what=f"live events up to seq {back_by} after the reconnects",
        )
        self.stop_publishing.set()
        assert self.publishing is not None
        await self.publishing
        last = self.last = self.publisher.last
        await async_wait_for(
            lambda: every_client(self.fleet, lambda c: c.connections[-1].seqs[-1:] == [last]),
            timeout=self.timeout,
            what=f"seq {last} everywhere",
        )

    @property
    def cut(self) -> list[BrowserClient]:
        return [c for c in self.fleet.clients if was_cut(c)]

    @property
    def kept(self) -> list[BrowserClient]:
        return [c for c in self.fleet.clients if not was_cut(c)]


def assert_kept_clients_whole(events: LiveEvents) -> None:
    """No gap, no duplicate, no reconnect: every event published around the kill arrived."""
    expected = seq_range(0, events.last)
    for client in events.kept:
        assert len(client.connections) == 1, describe([client])
        seqs = client.connections[0].seqs
        assert seqs == expected, (
            f"missing {sorted(set(expected) - set(seqs))[:10]},"
            f" repeated {sorted({s for s in seqs if seqs.count(s) > 1})[:10]},"
            f" out of order {[b for a, b in itertools.pairwise(seqs) if b < a][:10]}\n"
            + describe([client])
        )


def snapshot_delays(events: LiveEvents) -> list[float]:
    """Seconds from the kill to each cut client's snapshot, its streams checked on the way."""
    took = []
    for client in events.cut:
        before, after = client.connections[0], client.connections[-1]
        assert before.seqs == seq_range(0, before.seqs[-1]), describe([client])
        assert after.first_seq_at is not None and after.first_health_at is not None
        took.append(max(after.first_seq_at, after.first_health_at) - events.killed_at)
        # The snapshot is current: it has everything published before the kill.
        snapshot = after.seqs[0]
        assert snapshot >= events.published_before_kill, (snapshot, events.published_before_kill)
        # And from there on nothing is missing. (Events published while the snapshot was
        # being read may come once more after it: at-least-once across a reconnect.)
        assert set(seq_range(snapshot, events.last)) <= set(after.seqs), describe([client])
    return took
