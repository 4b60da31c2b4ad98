"""The chaos figures from synthetic client records: each definition can count, and can miss."""

from __future__ import annotations

import pytest

from connectome_sse.chaos.feed import HealthWatch, Published
from connectome_sse.chaos.figures import Window, measure
from connectome_sse.chaos.runner import verdict
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


def owed(*seqs: int, receivers: int = 2) -> list[Published]:
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
    assert verdict(Limits(recovery_s=5.0, lost=None), figures) == []


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
