"""The hub: fan-out to the right subscribers, slow ones cut without touching the others."""

from __future__ import annotations

import contextlib

from sse_gateway.framing import Frame
from sse_gateway.hub import Hub, HubClosed
from tests.support.subscribers import Recorder


def test_publish_reaches_every_subscriber_once_in_order() -> None:
    hub = Hub()
    subs = [Recorder() for _ in range(50)]
    with contextlib.ExitStack() as stack:
        for sub in subs:
            stack.enter_context(hub.subscription(sub))
        for i in range(10):
            assert hub.publish("e", Frame(b"%d" % i)) == 50
    assert all(s.frames == [b"%d" % i for i in range(10)] for s in subs)
    assert len(hub) == 0


def test_filters_select_event_types() -> None:
    hub = Hub()
    everything, only_a, a_and_b = Recorder(), Recorder(), Recorder()
    with (
        hub.subscription(everything),
        hub.subscription(only_a, frozenset({"a"})),
        hub.subscription(a_and_b, frozenset({"a", "b"})),
    ):
        hub.publish("a", Frame(b"A"))
        hub.publish("b", Frame(b"B"))
        hub.publish("c", Frame(b"C"))
        hub.broadcast(Frame(b"P"))
    assert everything.frames == [b"A", b"B", b"C", b"P"]
    assert only_a.frames == [b"A", b"P"]
    assert a_and_b.frames == [b"A", b"B", b"P"]


def test_slow_subscriber_is_cut_and_others_keep_receiving() -> None:
    cut: list[object] = []
    hub = Hub(on_cut=cut.append)
    slow, fast = Recorder(capacity=2), Recorder()
    with hub.subscription(slow), hub.subscription(fast):
        for i in range(5):
            hub.publish("e", Frame(b"%d" % i))
        assert len(hub) == 1
    assert slow.frames == [b"0", b"1"]
    assert fast.frames == [b"0", b"1", b"2", b"3", b"4"]
    assert cut == [slow]


def test_close_ends_every_stream_and_refuses_new_ones() -> None:
    hub = Hub()
    a, b = Recorder(), Recorder()
    finals = iter([b"retry: 1\n\n", b"retry: 2\n\n"])
    with hub.subscription(a), hub.subscription(b, frozenset({"x"})):
        hub.close(lambda: next(finals))
        assert len(hub) == 0
        hub.publish("x", Frame(b"late"))
    assert {a.final, b.final} == {b"retry: 1\n\n", b"retry: 2\n\n"}
    assert a.frames == b.frames == []
    try:
        with hub.subscription(Recorder()):
            raise AssertionError("subscribed to a closed hub")
    except HubClosed:
        pass


def test_regression_a_subscriber_that_raises_never_stops_the_fan_out() -> None:
    """One client's write error once ended the relay task for everyone."""

    class Broken:
        closed = False

        def offer(self, frame: Frame) -> bool:
            raise RuntimeError("unable to perform operation on <TCPTransport closed=True>")

        def close(self, final_frame: bytes, reason: str | None = None) -> None:
            self.closed = True

    hub = Hub()
    before, broken, after = Recorder(), Broken(), Recorder()
    with hub.subscription(before), hub.subscription(broken), hub.subscription(after):
        assert hub.publish("x", Frame(b"1")) == 2
        assert hub.publish("x", Frame(b"2")) == 2
        assert len(hub) == 2  # the broken one was dropped, and told to close
        assert broken.closed
    assert before.frames == after.frames == [b"1", b"2"]
