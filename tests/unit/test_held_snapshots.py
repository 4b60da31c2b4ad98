"""The snapshots held between reads: kept current by logged events, dropped by anything else."""

from __future__ import annotations

from sse_gateway.framing import Frame
from sse_gateway.held_snapshots import HeldSnapshots


def frame(text: str) -> Frame:
    return Frame(text.encode(), text, None, "x")


def texts(snapshots: dict[str, Frame] | None) -> dict[str, bytes] | None:
    return None if snapshots is None else {k: f.data for k, f in snapshots.items()}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_read_is_held_and_logged_events_keep_it_current() -> None:
    held = HeldSnapshots(max_age=1.0, clock=Clock())
    assert held.current() is None
    held.hold(held.read_starts(), {"x": frame("a")})
    assert texts(held.current()) == {"x": b"a"}
    held.relayed("x", frame("b"))
    held.relayed("y", frame("c"))
    assert texts(held.current()) == {"x": b"b", "y": b"c"}


def test_a_logged_event_relayed_during_the_read_wins_over_the_read() -> None:
    held = HeldSnapshots(clock=Clock())
    started = held.read_starts()
    held.relayed("x", frame("new"))
    held.hold(started, {"x": frame("old")})
    assert texts(held.current()) == {"x": b"new"}


def test_a_drop_during_the_read_keeps_it_from_being_held() -> None:
    held = HeldSnapshots(clock=Clock())
    started = held.read_starts()
    held.forget()  # a cut, a raw publish, a gap...
    held.hold(started, {"x": frame("a")})
    assert held.current() is None


def test_forget_and_age_make_the_next_stream_read_again() -> None:
    clock = Clock()
    held = HeldSnapshots(max_age=1.0, clock=clock)
    held.hold(held.read_starts(), {"x": frame("a")})
    held.forget()
    assert held.current() is None
    held.hold(held.read_starts(), {"x": frame("a")})
    clock.now += 0.9
    assert held.current() is not None
    clock.now += 0.2
    assert held.current() is None


def test_a_failed_or_untrusted_read_is_not_held() -> None:
    held = HeldSnapshots(clock=Clock())
    held.hold(held.read_starts(), None)
    assert held.current() is None


def test_a_refresh_is_due_only_while_streams_keep_asking() -> None:
    clock = Clock()
    held = HeldSnapshots(max_age=1.0, clock=clock)
    assert not held.refresh_due(every=0.5, keep_warm=30.0)  # no stream ever asked: idle
    assert held.current() is None  # a stream asks: nothing held
    assert held.refresh_due(every=0.5, keep_warm=30.0)
    started = held.read_starts()
    assert not held.refresh_due(every=0.5, keep_warm=30.0)  # one read at a time
    held.hold(started, {"x": frame("a")})
    assert not held.refresh_due(every=0.5, keep_warm=30.0)  # fresh
    clock.now += 0.6
    assert held.refresh_due(every=0.5, keep_warm=30.0)  # half its life gone
    held.hold(held.read_starts(), {"x": frame("b")})
    clock.now += 0.6
    assert texts(held.current()) == {"x": b"b"}, "a refreshed read did not replace the held one"
    clock.now += 31.0
    assert not held.refresh_due(every=0.5, keep_warm=30.0)  # nobody asked for 30 s: idle


def test_after_a_drop_the_refresh_reads_again_and_that_read_is_held() -> None:
    clock = Clock()
    held = HeldSnapshots(max_age=1.0, clock=clock)
    assert held.current() is None
    held.hold(held.read_starts(), {"x": frame("a")})
    held.forget()
    # Still due: nothing held and a stream asked recently. The read that follows starts
    # after the drop, so it is held.
    assert held.refresh_due(every=0.5, keep_warm=30.0)
    held.hold(held.read_starts(), {"x": frame("b")})
    assert texts(held.current()) == {"x": b"b"}
