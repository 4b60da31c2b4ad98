"""From what the clients received to the figures of one scenario (pure; no I/O).

The columns (recovery, lost, duplicates, reordered, stale, cut; the logged and the
raw sequence's loss) are defined in docs/cli.md, "chaos", and docs/chaos.md; each
function below computes one of them. ``lost`` and ``duplicates_and_reordered``
count any numbered type: the feed's own (``event`` None) or another one a client
recorded (the raw copy), with the pub/sub excuses or strictly (the log's promise).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from connectome_sse.chaos.feed import RAW_EVENT, Published
from connectome_sse.localrun.browser import BrowserClient, Connection

MAX_EXAMPLES = 3


@dataclass
class Figures:
    clients: int = 0
    recovery_s: float | None = None
    lost: int = 0
    duplicates: int = 0
    reordered: int = 0
    never_back: int = 0
    stale: int = 0
    cut: int = 0
    peak_rss_mib: float = 0.0
    # The logged sequence, held to the log's promise: every event the log accepted, once,
    # in order, on every stream (``silent``: lost with no ``resync`` on that stream after it).
    log_lost: int = 0
    log_silent: int = 0
    log_duplicates: int = 0
    log_reordered: int = 0
    # The same numbers by a raw PUBLISH, for comparison: what pub/sub alone loses.
    raw_lost: int = 0
    resyncs: int = 0  # ``resync`` events the streams got from the fault on
    # A few duplicated or reordered deliveries, described, so a FAIL can be looked into.
    examples: list[str] = field(default_factory=list)
    extra: dict[str, float | int | str] = field(default_factory=dict)


@dataclass(frozen=True)
class Window:
    """The moments a scenario's figures are measured against (monotonic, and the wall clock)."""

    started: float  # scenario start: clients ready, before the fault
    clock_mono: float  # the recovery clock starts here
    clock_wall: float
    observed_until: float
    first_seq: int  # numbered events from here on are checked
    last_seq: int  # the marker published at the end
    excused: tuple[tuple[float, float], ...] = ()  # publish times (monotonic) not owed


def recovery(client: BrowserClient, window: Window) -> float | None:
    """The client's longest wait for fresh health after the clock start; None: never came back."""
    arrivals = sorted(
        (at, ts)
        for connection in client.connections
        for at, ts in connection.health
        if window.clock_mono <= at <= window.observed_until
    )
    fresh = [at for at, ts in arrivals if not math.isnan(ts) and ts >= window.clock_wall]
    if not fresh:
        return None
    # After the first fresh one, any health counts: a later silence is a gap either way.
    later = [at for at, _ in arrivals if at >= fresh[0]]
    marks = [window.clock_mono, *later, window.observed_until]
    return max(b - a for a, b in itertools.pairwise(marks))


def numbers(connection: Connection, event: str | None = None) -> list[int]:
    """The numbers ``connection`` received of ``event`` (None: the client's own seq event)."""
    return connection.seqs if event is None else connection.more_seqs.get(event, [])


def missing(
    client: BrowserClient, owed: Sequence[Published], window: Window, event: str | None = None
) -> list[Published]:
    """The ``owed`` events of the window the client never got, on any of its connections.

    Owed from the first number its first stream got on: what was published before a
    client's stream opened is not its to miss. Publishes in ``window.excused`` are not owed.
    """
    received = {seq for connection in client.connections for seq in numbers(connection, event)}
    firsts = [seqs[0] for c in client.connections if (seqs := numbers(c, event))]
    if not firsts:
        return [r for r in owed if window.first_seq <= r.seq <= window.last_seq]
    start = max(firsts[0], window.first_seq)
    return [
        r
        for r in owed
        if start < r.seq <= window.last_seq
        and not any(a <= r.at <= b for a, b in window.excused)
        and r.seq not in received
    ]


def lost(
    client: BrowserClient, owed: Sequence[Published], window: Window, event: str | None = None
) -> int:
    return len(missing(client, owed, window, event))


def silent(client: BrowserClient, gone: Sequence[Published]) -> int:
    """Of the events ``gone`` from the client, those no ``resync`` told it of: none came
    on any of its streams after the event was published."""
    resynced = [at for connection in client.connections for at, _ in connection.resyncs]
    return sum(1 for r in gone if not any(at >= r.at for at in resynced))


def duplicates_and_reordered(
    client: BrowserClient,
    examples: list[str] | None = None,
    event: str | None = None,
    strict: bool = False,
) -> tuple[int, int]:
    """Counts; the first few cases are described into ``examples`` (for the report).

    A repeat of the newest is the snapshot a gateway re-sends, not counted, unless
    ``strict``; then only the first number after a ``resync`` may be a repeat (the
    snapshots that follow it).
    """
    seen: set[int] = set()
    newest = -1
    duplicates = reordered = 0
    for n, connection in enumerate(client.connections):
        after_resync = {index for _, index in connection.resyncs}
        for i, seq in enumerate(numbers(connection, event)):
            what = ""
            if seq in seen:
                excused = i in after_resync if strict else seq == newest
                if not excused:
                    duplicates += 1
                    what = "again"
            elif seq < newest:
                reordered += 1
                what = "first time"
            if what and examples is not None and len(examples) < MAX_EXAMPLES:
                around = numbers(connection, event)[max(0, i - 3) : i + 3]
                examples.append(f"{seq} {what} after {newest} (connection {n + 1}: {around})")
            seen.add(seq)
            newest = max(newest, seq)
    return duplicates, reordered


def stale_health(client: BrowserClient, after: float) -> int:
    arrivals = sorted((at, ts) for connection in client.connections for at, ts in connection.health)
    newest = -math.inf
    count = 0
    for at, ts in arrivals:
        if at >= after and ts < newest:
            count += 1
        if not math.isnan(ts):
            newest = max(newest, ts)
    return count


def cut(client: BrowserClient, after: float) -> int:
    return sum(
        1
        for connection in client.connections
        if connection.ended_at is not None and connection.ended_at >= after
    )


def log_and_raw(
    figures: Figures,
    client: BrowserClient,
    records: Sequence[Published],
    raw_records: Sequence[Published],
    window: Window,
) -> None:
    """Adds the client's logged-sequence and raw-sequence figures to ``figures``.

    Strict: every publish Redis accepted is owed, none excused (the log has it, whatever
    happened to the subscriptions), and a repeat is a duplicate unless a resync preceded it.
    """
    strict = replace(window, excused=())
    gone = missing(client, [r for r in records if r.accepted], strict)
    figures.log_lost += len(gone)
    figures.log_silent += silent(client, gone)
    duplicates, reordered = duplicates_and_reordered(client, strict=True)
    figures.log_duplicates += duplicates
    figures.log_reordered += reordered
    figures.raw_lost += lost(client, [r for r in raw_records if r.accepted], strict, RAW_EVENT)
    figures.resyncs += sum(
        1 for c in client.connections for at, _ in c.resyncs if at >= window.started
    )


def measure(
    clients: Sequence[BrowserClient],
    records: Sequence[Published],
    window: Window,
    channel_stale: int = 0,
    *,
    raw_records: Sequence[Published] = (),
) -> Figures:
    owed = [r for r in records if r.owed]
    figures = Figures(clients=len(clients))
    waits: list[float] = []
    for client in clients:
        wait = recovery(client, window)
        if wait is None:
            figures.never_back += 1
        else:
            waits.append(wait)
        figures.lost += lost(client, owed, window)
        duplicates, reordered = duplicates_and_reordered(client, figures.examples)
        figures.duplicates += duplicates
        figures.reordered += reordered
        figures.stale += stale_health(client, window.started)
        figures.cut += cut(client, window.started)
        log_and_raw(figures, client, records, raw_records, window)
    figures.stale += channel_stale
    # A client that never came back leaves no finite figure to report.
    figures.recovery_s = round(max(waits), 2) if waits and not figures.never_back else None
    return figures
