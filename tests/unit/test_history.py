"""Event ids and the resume history: ids from content, replay order, ambiguity, gaps, memory."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable

from hypothesis import example, given, settings
from hypothesis import strategies as st

from sse_gateway.framing import Frame, encode_event
from sse_gateway.history import ENTRY_COST, History, event_id, frame_cost

LATEST = frozenset({"h"})


def frame(event: str, data: str) -> Frame:
    ident = event_id(event, data.encode())
    return Frame(encode_event(event, data, ident), ident)


def replay_after(
    history: History, last: Frame, events: frozenset[str] | None
) -> list[Frame] | None:
    after = history.lookup(last.event_id or "")
    return None if after is None else history.replay(after, events)


def test_the_id_depends_on_event_and_data_only() -> None:
    assert event_id("a", b"x") == event_id("a", b"x")
    assert event_id("a", b"x") != event_id("b", b"x")
    assert event_id("a", b"x") != event_id("a", b"y")
    assert event_id("ab", b"c") != event_id("a", b"bc")  # the separator keeps them apart
    assert len(event_id("a", b"x")) == 16


def test_replay_merges_types_in_relay_order_after_the_id() -> None:
    history = History(10)
    frames = [frame("a", "1"), frame("b", "2"), frame("a", "3"), frame("b", "4")]
    for f, event in zip(frames, "abab", strict=True):
        history.add(event, f)
    after = history.lookup(frames[0].event_id or "")
    assert after is not None
    assert history.replay(after, None) == frames[1:]
    assert history.replay(after, frozenset({"a"})) == [frames[2]]


def test_latest_only_types_replay_only_their_newest() -> None:
    history = History(10, latest_only=LATEST)
    frames = [frame("h", "1"), frame("e", "x"), frame("h", "2"), frame("h", "3")]
    for f, event in zip(frames, "hehh", strict=True):
        history.add(event, f)
    after = history.lookup(frames[0].event_id or "")
    assert after is not None
    assert history.replay(after, None) == [frames[1], frames[3]]
    newest = history.lookup(frames[3].event_id or "")
    assert newest is not None
    assert history.replay(newest, None) == []


def test_an_id_relayed_twice_is_ambiguous_until_one_copy_leaves() -> None:
    history = History(2)
    same = frame("a", "dup")
    history.add("a", same)
    assert history.lookup(same.event_id or "") is not None
    history.add("a", frame("a", "dup"))
    assert history.lookup(same.event_id or "") is None  # which copy did the client have?
    history.add("a", frame("a", "other"))  # the older copy is evicted
    assert history.lookup(same.event_id or "") is not None


def test_an_evicted_event_after_the_id_forces_a_resync_but_not_for_latest_only() -> None:
    for latest in (frozenset(), frozenset({"a"})):
        history = History(2, latest_only=latest)
        first = frame("b", "0")
        history.add("b", first)
        for n in range(3):
            history.add("a", frame("a", str(n + 1)))  # "1" is evicted: after `first`
        after = history.lookup(first.event_id or "")
        assert after is not None
        assert history.replay(after, frozenset({"b"})) == []
        if latest:
            assert history.replay(after, None) is not None
        else:
            assert history.replay(after, None) is None


def test_memory_is_bounded_by_count_types_and_bytes() -> None:
    history = History(3, max_types=2, max_bytes=10_000)
    for n in range(100):
        history.add(f"t{n % 5}", frame(f"t{n % 5}", str(n)))
    assert len(history) <= 3 * 2
    big = History(100, max_bytes=5000)
    for n in range(50):
        big.add("a", frame("a", "x" * 100 + str(n)))
    assert big.bytes <= 5000
    assert 1 < len(big) < 50


def test_a_latest_only_type_keeps_one_frame_but_every_id() -> None:
    history = History(100, latest_only=frozenset({"h"}))
    frames = [frame("h", str(n)) for n in range(50)]
    for f in frames:
        history.add("h", f)
    assert history.bytes == 50 * ENTRY_COST + frame_cost(frames[-1])
    after = history.lookup(frames[3].event_id or "")
    assert after is not None
    assert history.replay(after, None) == [frames[-1]]


def fill(history: History, count: int, types: tuple[str, ...], prefix: str = "") -> None:
    """``count`` small events spread over ``types``; nothing but the history keeps them."""
    for n in range(count):
        event = types[n % len(types)]
        history.add(event, frame(event, f'{{"n": {n}, "p": "{prefix}"}}'))


def traced_size(build: Callable[[], object]) -> tuple[int, object]:
    """Bytes still allocated by ``build()`` once it returned (what its result holds)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        built = build()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before, built
    finally:
        tracemalloc.stop()


def test_regression_the_byte_cap_counts_what_the_history_really_holds() -> None:
    # Many small events, a per-type count far above what fits: the byte cap decides.
    cap = 1 << 20

    def build() -> History:
        history = History(100_000, max_bytes=cap, latest_only=frozenset({"h"}))
        fill(history, 60_000, ("a", "b", "h"))
        return history

    held, history = traced_size(build)
    assert isinstance(history, History) and len(history) > 1000
    assert held <= 1.5 * cap, f"{held / cap:.2f} x the cap"
    # And not far below it either: the estimate is not so pessimistic that it keeps little.
    assert held >= 0.5 * cap, f"{held / cap:.2f} x the cap"


def test_regression_a_latest_only_type_s_older_ids_are_held_within_the_cap() -> None:
    cap = 256 * 1024

    def build() -> History:
        history = History(100_000, max_bytes=cap, latest_only=frozenset({"h"}))
        fill(history, 30_000, ("h",))
        return history

    held, _ = traced_size(build)
    assert held <= 1.5 * cap, f"{held / cap:.2f} x the cap"


def test_regression_types_dropped_by_the_byte_cap_leave_bounded_bookkeeping() -> None:
    # Each event of a new type: the byte cap drops whole types long before the type cap.
    cap = 64 * 1024

    def build() -> History:
        history = History(10, max_bytes=cap)
        for n in range(20_000):
            history.add(f"type{n}", frame(f"type{n}", "x" * 2000))
        return history

    held, _ = traced_size(build)
    assert held <= 1.5 * cap, f"{held / cap:.2f} x the cap"


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from("abhx"), st.integers(0, 400)), min_size=1, max_size=80),
    st.integers(1, 6),
    st.integers(1, 4),
    st.integers(500, 6000),
)
# A type's only frame pushed out by the byte cap while an older health id stays known.
@example([("h", 0), ("x", 300), ("h", 0), ("a", 300), ("a", 300), ("a", 300)], 6, 3, 1200)
def test_a_replay_is_exactly_what_came_after_the_id_or_a_resync(
    adds: list[tuple[str, int]], size: int, max_types: int, max_bytes: int
) -> None:
    """Whatever the caps evicted: never a silent gap, never a duplicate (``h`` latest-only)."""
    history = History(size, max_types=max_types, max_bytes=max_bytes, latest_only=LATEST)
    log: list[tuple[str, Frame]] = []
    for n, (event, length) in enumerate(adds):
        f = frame(event, f"{n}:" + "x" * length)
        history.add(event, f)
        log.append((event, f))
    for point, (_, resumed) in enumerate(log):
        for events in (None, frozenset("a"), frozenset("ah"), frozenset("bx")):
            got = replay_after(history, resumed, events)
            if got is None:
                continue  # unknown, or a resync: loud either way
            later = [(e, f) for e, f in log[point + 1 :] if events is None or e in events]
            newest_latest = {e: f for e, f in later if e in LATEST}
            wanted = [f for e, f in later if e not in LATEST or newest_latest[e] is f]
            assert got == wanted
