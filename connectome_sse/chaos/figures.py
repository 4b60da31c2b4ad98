"""From what the clients received to the figures of one scenario (pure; no I/O).

The columns (recovery, lost, duplicates, reordered, stale, cut) are defined in
docs/cli.md, "chaos"; each function below computes one of them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from connectome_sse.chaos.feed import Published
from connectome_sse.localrun.browser import BrowserClient

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


def lost(client: BrowserClient, owed: Sequence[Published], window: Window) -> int:
    received = {seq for connection in client.connections for seq in connection.seqs}
    firsts = [c.seqs[0] for c in client.connections if c.seqs]
    if not firsts:
        return sum(1 for r in owed if window.first_seq <= r.seq <= window.last_seq)
    start = max(firsts[0], window.first_seq)
    return sum(
        1
        for r in owed
        if start < r.seq <= window.last_seq
        and not any(a <= r.at <= b for a, b in window.excused)
        and r.seq not in received
    )


def duplicates_and_reordered(
    client: BrowserClient, examples: list[str] | None = None
) -> tuple[int, int]:
    """Counts; the first few cases are described into ``examples`` (for the report)."""
    seen: set[int] = set()
    newest = -1
    duplicates = reordered = 0
    for n, connection in enumerate(client.connections):
        for i, seq in enumerate(connection.seqs):
            what = ""
            if seq in seen:
                if seq != newest:
                    duplicates += 1
                    what = "again"
            elif seq < newest:
                reordered += 1
                what = "first time"
            if what and examples is not None and len(examples) < MAX_EXAMPLES:
                around = connection.seqs[max(0, i - 3) : i + 3]
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


def measure(
    clients: Sequence[BrowserClient],
    records: Sequence[Published],
    window: Window,
    channel_stale: int = 0,
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
    figures.stale += channel_stale
    # A client that never came back leaves no finite figure to report.
    figures.recovery_s = round(max(waits), 2) if waits and not figures.never_back else None
    return figures
