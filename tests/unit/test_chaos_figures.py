"""The chaos figures from synthetic client records: each definition can count, and can miss."""

from __future__ import annotations

from dataclasses import replace

import pytest

from connectome_sse.chaos.feed import RAW_EVENT, HealthWatch, Published
from connectome_sse.chaos.figures import Window, measure
from connectome_sse.chaos.report import HEADER, cells, limit_text
from connectome_sse.chaos.runner import Row, verdict
from connectome_sse.chaos.scenario_kit import Limits
from connectome_sse.chaos.scenarios import SCENARIOS
from connectome_sse.chaos.topology import Settings
from connectome_sse.localrun.browser import BrowserClient, Connection

WALL = 1_700_000_000.0  # the clock start, wall time; monotonic clock start is 100.0
WINDOW = Window(
    started=90.0,
    clock_mono=100.0,
    clock_wall=WALL,
    observed_until=110.0,
    first_seq=0,
    last_seq=9,
)


def client(*connections: Connection) -> BrowserClient:
    c = BrowserClient("127.0.0.1", 1, "/api/sse")
    c.connections = list(connections)
    return c


def healthy(seqs: list[int], health: list[tuple[float, float]], **kw: float) -> Connection:
    return Connection(
        opened_at=kw.get("opened_at", 50.0), seqs=seqs, health=health, ended_at=kw.get("ended_at")
    )


def steady_health(start: float, end: float) -> list[tuple[float, float]]:
    """One fresh health event a second (arrival, ts) from ``start`` to ``end``."""
    return [(t, WALL + (t - 100.0)) for t in range(int(start), int(end) + 1)]


def owed(*seqs: int, receivers: int | None = 2) -> list[Published]:
    return [Published(s, 95.0 + s / 10, receivers, 2) for s in seqs]


def test_a_client_that_got_everything_has_clean_figures() -> None:
    c = client(healthy(list(range(10)), steady_health(101, 110)))
    figures = measure([c], owed(*range(10)), WINDOW)
    assert (figures.lost, figures.duplicates, figures.never_back, figures.cut) == (0, 0, 0, 0)
    assert figures.recovery_s == pytest.approx(1.0)


def test_missing_owed_events_are_lost_but_not_those_a_gateway_missed_in_redis() -> None:
    c = client(healthy([0, 1, 2, 5, 6, 9], steady_health(101, 110)))
    records = owed(0, 1, 2, 3, 4, 5, 6, 9) + owed(
        7, 8, receivers=1
    )  # 7, 8: one gateway resubscribing
    assert measure([c], records, WINDOW).lost == 2  # 3 and 4


def test_a_replay_counts_as_duplicate_but_the_snapshot_repeat_of_the_newest_does_not() -> None:
    first = healthy([0, 1, 2, 3], steady_health(101, 104), ended_at=104.5)
    # Reconnect: the snapshot repeats 3 (the newest): fine. Then 1 again: a replay.
    second = healthy([3, 1, 4, 5, 6, 7, 8, 9], steady_health(105, 110), opened_at=105.0)
    figures = measure([client(first, second)], owed(*range(10)), WINDOW)
    assert figures.duplicates == 1
    assert figures.cut == 1
    assert figures.examples == ["1 again after 3 (connection 2: [3, 1, 4, 5])"]


def test_recovery_is_the_longest_wait_for_fresh_health_and_stale_health_is_counted() -> None:
    # Health from before the clock start (ts older) does not count as fresh; first fresh at 106.
    health = [(101.0, WALL - 5), (102.0, WALL - 6), *steady_health(106, 110)]
    figures = measure([client(healthy(list(range(10)), health))], owed(*range(10)), WINDOW)
    assert figures.recovery_s == pytest.approx(6.0)
    assert figures.stale == 1  # WALL - 6 arrived after WALL - 5


def test_a_client_without_fresh_health_never_came_back() -> None:
    back = client(healthy(list(range(10)), steady_health(101, 110)))
    never = client(healthy(list(range(10)), [(101.0, WALL - 1)]))
    figures = measure([back, never], owed(*range(10)), WINDOW)
    assert figures.never_back == 1 and figures.recovery_s is None
    assert any(r.startswith("recovery never") for r in verdict(Limits(recovery_s=5), figures))


def test_verdict_names_each_figure_over_its_limit() -> None:
    c = client(healthy([0, 9], steady_health(104, 110)))
    figures = measure([c], owed(*range(10)), WINDOW)
    reasons = verdict(Limits(recovery_s=3.0), figures)
    assert any(r.startswith("recovery 4") for r in reasons)
    assert any(r.startswith("lost 8") for r in reasons)
    assert verdict(Limits(recovery_s=5.0, lost=None, log_silent=None), figures) == []


def test_limits_follow_the_settings() -> None:
    settings = Settings.from_environ({"SSE_RETRY_MS": "1000", "PUBLISHER_LEASE_MS": "4000"})
    assert SCENARIOS["gateway-kill"].limits(settings, 10).recovery_s == pytest.approx(1 + 1 + 2)
    assert SCENARIOS["publisher-kill"].limits(settings, 10).recovery_s == pytest.approx(4 + 1 + 2)
    # A retry beyond the ceiling is not absorbed into the limit: that scenario must fail.
    slow = Settings.from_environ({"SSE_RETRY_MS": "60000"})
    assert SCENARIOS["gateway-kill"].limits(slow, 10).recovery_s == pytest.approx(15 + 1 + 2)


def test_the_sentinel_limit_is_down_after_failover_timeout_5_s_of_the_switch_and_margin() -> None:
    failover = SCENARIOS["sentinel-failover"]
    assert failover.sentinel and not SCENARIOS["redis-kill"].sentinel
    limits = failover.limits(Settings.from_environ({}), 10)
    assert limits.recovery_s == pytest.approx(2 + 3 + 5 + 2)
    assert limits.lost == limits.duplicates == limits.stale == limits.cut == 0
    # Health every 8 s cannot be fresh within the documented 5 s of the switch: one interval then.
    sparse = Settings.from_environ({"HEALTH_INTERVAL": "8"})
    assert failover.limits(sparse, 10).recovery_s == pytest.approx(2 + 3 + 8 + 2)


def test_the_channel_watch_counts_health_older_than_what_was_already_published() -> None:
    watch = HealthWatch("redis://127.0.0.1:1/0")  # never run: only its records are read
    watch.seen = [(1.0, 10.0), (2.0, 11.0), (3.0, 12.0), (4.0, 9.5), (5.0, 13.0), (6.0, 12.5)]
    assert watch.backwards(after=0.0) == 2
    assert watch.backwards(after=5.0) == 1  # earlier ones still set what "newest" was


# --- the logged sequence (strict) and its raw copy -------------------------------------


def numbered(
    seqs: list[int],
    raw: list[int],
    resyncs: list[tuple[float, int]] | None = None,
    **kw: float,
) -> Connection:
    """A connection that got logged ``seqs``, raw ``raw`` and ``resyncs`` (arrival, index)."""
    connection = healthy(seqs, steady_health(101, 110), **kw)
    connection.more_seqs = {RAW_EVENT: raw}
    connection.resyncs = list(resyncs or [])
    return connection


def test_every_publish_the_log_accepted_is_owed_even_one_no_gateway_received() -> None:
    # 3 and 4 reached no gateway (receivers 0), 5 one of two, 6 was refused (None): the log
    # has all but 6, so 3, 4 and 5 are lost to the logged figure; the pub/sub one owes 5 only
    # when both gateways got it, so it counts nothing here.
    c = client(numbered([0, 1, 2, 7, 8, 9], list(range(10))))
    records = (
        owed(0, 1, 2, 7, 8, 9)
        + owed(3, 4, receivers=0)
        + owed(5, receivers=1)
        + owed(6, receivers=None)
    )
    figures = measure([c], records, WINDOW, raw_records=owed(*range(10)))
    assert (figures.lost, figures.log_lost, figures.raw_lost) == (0, 3, 0)
    assert figures.log_silent == 3  # no resync told the client


def test_raw_loss_is_counted_from_the_raw_numbers_and_no_window_is_excused() -> None:
    # The burst window excuses 4-5 for the pub/sub figure; neither the log nor the raw one.
    window = replace(WINDOW, excused=((95.35, 95.55),))
    c = client(numbered([0, 1, 2, 3, 6, 7, 8, 9], [0, 1, 2, 3, 6, 7, 8, 9]))
    figures = measure([c], owed(*range(10)), window, raw_records=owed(*range(10), receivers=1))
    assert (figures.lost, figures.log_lost, figures.raw_lost) == (0, 2, 2)


def test_nothing_published_before_a_stream_opened_is_owed_to_it() -> None:
    # The stream's first logged number was 4 (its snapshot), its first raw one 5: earlier
    # numbers were published before it opened. After that, 7 is missing from both.
    c = client(numbered([4, 5, 6, 8, 9], [5, 6, 8, 9]))
    figures = measure([c], owed(*range(10)), WINDOW, raw_records=owed(*range(10)))
    assert (figures.log_lost, figures.raw_lost) == (1, 1)
    # A client that never got a raw number missed every one of the window.
    none = client(numbered(list(range(10)), []))
    assert measure([none], owed(*range(10)), WINDOW, raw_records=owed(*range(10))).raw_lost == 10


def test_a_stream_that_reconnected_is_owed_what_was_published_while_it_was_away() -> None:
    first = numbered([0, 1, 2, 3], [0, 1, 2, 3], ended_at=104.0)
    # Resumed: 4 and 5 came from the log on the new connection, 6 never came; the raw copy
    # has nothing from while it was away. The repeat of 3 (the newest, as a snapshot) is
    # forgiven by the pub/sub figure, not by the log's.
    second = numbered([3, 4, 5, 7, 8, 9], [7, 8, 9], opened_at=105.0)
    figures = measure(
        [client(first, second)], owed(*range(10)), WINDOW, raw_records=owed(*range(10))
    )
    assert (figures.log_lost, figures.raw_lost) == (1, 3)
    assert (figures.duplicates, figures.log_duplicates) == (0, 1)
    assert figures.cut == 1


def test_after_a_resync_the_snapshot_may_repeat_and_the_gap_is_not_silent() -> None:
    # 4-6 gone (published at 95.4-95.6); a resync (at 95.65, before the 4th number) told
    # of it, then the snapshot repeated 3. A later loss (9, published at 95.9) came with no
    # resync after it: silent.
    c = client(numbered([0, 1, 2, 3, 3, 7, 8], list(range(10)), resyncs=[(95.65, 4)]))
    records = owed(*range(10))
    figures = measure([c], records, WINDOW, raw_records=records)
    assert (figures.log_lost, figures.log_silent, figures.log_duplicates) == (4, 1, 0)
    assert figures.resyncs == 1
    # Without the resync, the repeat is a duplicate and every loss is silent.
    c.connections[0].resyncs = []
    figures = measure([c], records, WINDOW, raw_records=records)
    assert (figures.log_lost, figures.log_silent, figures.log_duplicates) == (4, 4, 1)


def test_the_log_counts_a_late_first_delivery_as_reordered() -> None:
    c = client(numbered([0, 1, 3, 2, 4, 5, 6, 7, 8, 9], list(range(10))))
    figures = measure([c], owed(*range(10)), WINDOW, raw_records=owed(*range(10)))
    assert (figures.log_reordered, figures.log_duplicates, figures.log_lost) == (1, 0, 0)


def test_the_logged_figures_fail_a_row_only_where_a_limit_holds_them() -> None:
    c = client(numbered([0, 1, 2, 9], list(range(10))))
    figures = measure([c], owed(*range(10), receivers=0), WINDOW, raw_records=owed(*range(10)))
    assert figures.log_lost == 6 and figures.lost == 0
    assert verdict(Limits(recovery_s=5.0, log_silent=None), figures) == []
    # By default a silent loss fails the row; a loss only where the limit names it.
    assert verdict(Limits(recovery_s=5.0), figures) == ["log_silent 6 > 0"]
    held = Limits(recovery_s=5.0, log_lost=0)
    assert verdict(held, figures) == ["log_lost 6 > 0", "log_silent 6 > 0"]
    row = Row("client-kill", "CLIENT KILL TYPE pubsub", held, figures)
    assert limit_text(row) == "recovery <= 5 s; log lost <= 0"
    loose = Row("sentinel-failover", "failover", Limits(recovery_s=5.0, log_silent=None), figures)
    assert limit_text(loose) == "recovery <= 5 s; log silent any"
    shown = dict(zip(HEADER, cells(row), strict=True))
    assert shown["log lost / silent / dups / reord"] == "6 / 6 / 0 / 0"
    assert (shown["raw lost"], shown["resync"], shown["lost"]) == ("0", "0", "0")
