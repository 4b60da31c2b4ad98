"""Event ids and the resume history (issue 11): ids from content, replay order, ambiguity, gaps."""

from __future__ import annotations

from sse_gateway.framing import Frame, encode_event
from sse_gateway.history import History, event_id


def frame(event: str, data: str) -> Frame:
    ident = event_id(event, data.encode())
    return Frame(encode_event(event, data, ident), ident)


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
    assert history.replay(after, None, frozenset()) == frames[1:]
    assert history.replay(after, frozenset({"a"}), frozenset()) == [frames[2]]


def test_latest_only_types_replay_only_their_newest() -> None:
    history = History(10)
    frames = [frame("h", "1"), frame("e", "x"), frame("h", "2"), frame("h", "3")]
    for f, event in zip(frames, "hehh", strict=True):
        history.add(event, f)
    after = history.lookup(frames[0].event_id or "")
    assert after is not None
    assert history.replay(after, None, frozenset({"h"})) == [frames[1], frames[3]]
    newest = history.lookup(frames[3].event_id or "")
    assert newest is not None
    assert history.replay(newest, None, frozenset({"h"})) == []


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
    history = History(2)
    first = frame("a", "0")
    history.add("b", first)
    for n in range(3):
        history.add("a", frame("a", str(n + 1)))  # "1" is evicted: after `first`
    after = history.lookup(first.event_id or "")
    assert after is not None
    assert history.replay(after, None, frozenset()) is None
    assert history.replay(after, frozenset({"b"}), frozenset()) == []
    assert history.replay(after, None, frozenset({"a"})) is not None


def test_memory_is_bounded_by_count_types_and_bytes() -> None:
    history = History(3, max_types=2, max_bytes=10_000)
    for n in range(100):
        history.add(f"t{n % 5}", frame(f"t{n % 5}", str(n)))
    assert len(history) <= 3 * 2
    big = History(100, max_bytes=1000)
    for n in range(50):
        big.add("a", frame("a", "x" * 100 + str(n)))
    assert big.bytes <= 1000
    assert len(big) < 50


def test_a_latest_only_type_keeps_one_frame_but_every_id() -> None:
    history = History(100, latest_only=frozenset({"h"}))
    frames = [frame("h", str(n)) for n in range(50)]
    for f in frames:
        history.add("h", f)
    assert history.bytes == len(frames[-1].data)
    after = history.lookup(frames[3].event_id or "")
    assert after is not None
    assert history.replay(after, None, frozenset({"h"})) == [frames[-1]]
